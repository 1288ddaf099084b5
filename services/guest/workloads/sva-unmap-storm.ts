import { VmmsimError } from '../../runtime/errors.js';
import { PAGE_SIZE } from '../../machine/memory.js';
import { deviceOpName } from '../driver.js';
import { WorkloadThreads, type WorkloadEnv, type WorkloadRun } from './common.js';

/** Top of the mmap area of the process (47-bit user VA, mmap grows down from below the stack). */
const MMAP_TOP = 0x7f00_0000_0000;
/** Each thread munmaps in its own 1 GiB of that area, top-down, and starts over when it is used. */
const THREAD_SLICE = 0x4000_0000;

/**
 * Stage-1 invalidations by ASID and VA, as SVA causes them: a process bound to the device (one per
 * device; the threads on a device are its threads) munmaps `granulePages` pages at a time, and the
 * MMU notifier has the IOMMU invalidate that VA range in the process's ASID and wait for it
 * (arm_smmu_mm_arch_invalidate: TLBI_NH_VA over the range + CMD_SYNC). Each munmap is one
 * 'invalidate' operation; the CPU side of munmap is not the IOMMU's and is not modeled. `ops`
 * munmaps in all, a fixed share per thread, gapUs of think time between them. The architecture's own
 * DMA API runs them: SVA does not go through the streaming DMA API, whatever its mode.
 */
export async function svaUnmapStorm(env: WorkloadEnv): Promise<WorkloadRun> {
  const { coherent, w } = env;
  if (!coherent.invalidateVa) {
    throw new VmmsimError(
      'E_NOT_SUPPORTED',
      `workload.kind sva-unmap-storm is not supported with model ${env.kernel.env.topology.model}: its guest IOMMU driver has no SVA (no stage-1 invalidation of a process's VA range by ASID)`,
      'pick a model whose guest driver supports SVA, or another workload.kind',
    );
  }
  const invalidateVa = coherent.invalidateVa.bind(coherent);
  const pages = Math.max(1, w.granulePages);
  const bytes = pages * PAGE_SIZE;
  const perSlice = Math.floor(THREAD_SLICE / bytes);
  const threads = new WorkloadThreads(env, ['invalidate']);
  const counters = { munmaps: 0, pages: 0, failed: 0 };
  await threads.begin();

  const thread = async (t: number): Promise<void> => {
    const top = MMAP_TOP - t * THREAD_SLICE;
    for (let i = 0; i < threads.share(t) && threads.running(); i++) {
      const device = threads.device(t, i);
      const va = top - ((i % perSlice) + 1) * bytes;
      counters.munmaps += 1;
      const status = await threads.op(deviceOpName('invalidate', device), t, (ctx) => invalidateVa(ctx, t, device, va, pages));
      if (status !== 0) counters.failed += 1;
      else counters.pages += pages;
      await threads.pause(t, w.gapUs);
    }
  };

  return threads.run(thread, () => counters);
}
