import { SlotState, type DeviceRing } from '../../machine/device-ring.js';
import { deviceOpName, type GuestDevice } from '../driver.js';
import { WorkloadThreads, queueDepthOf, type WorkloadEnv, type WorkloadRun } from './common.js';

interface Mapped {
  iova: number;
  slot: number;
  device: GuestDevice;
}

/**
 * The DPDK case: each thread maps its `queueDepth` buffers of `granulePages` pages once when it
 * starts ('map' operations), runs its share of `ops` I/Os in batches of queueDepth that only post
 * buffers in the device's ring, let the device work (dwellUs) and reap them, with no map or unmap
 * (counted as 'ios', not operations: they cost the IOMMU nothing), thinks gapUs after each batch,
 * and unmaps its buffers when it is done ('unmap' operations).
 */
export async function staticBuffers(env: WorkloadEnv): Promise<WorkloadRun> {
  const { dma, w } = env;
  const pages = Math.max(1, w.granulePages);
  const depth = queueDepthOf(w);
  const threads = new WorkloadThreads(env, ['map', 'unmap']);
  const counters = { ios: 0, batches: 0, buffers: 0, failed: 0 };
  await threads.begin();

  const thread = async (t: number): Promise<void> => {
    const buffers: Mapped[] = [];
    for (let k = 0; k < depth; k++) {
      // Buffer k is for the device of the thread's item k (its only one, unless it takes several in turn).
      const device = threads.device(t, k);
      const pa = WorkloadThreads.bufferPa(t * depth + k, pages);
      const iova = await threads.op(deviceOpName('map', device), t, (ctx) => dma.map(ctx, t, device, pa, pages));
      if (iova < 0) counters.failed += 1;
      else buffers.push({ iova, slot: threads.slot(t, k, depth), device });
    }
    const ring = (b: Mapped) => threads.rings.get(b.device.index) as DeviceRing;
    counters.buffers += buffers.length;
    const share = threads.share(t);
    let i = 0;
    while (buffers.length > 0 && i < share && threads.running()) {
      const n = Math.min(buffers.length, share - i);
      for (const b of buffers.slice(0, n)) ring(b).post(b.slot, b.iova, pages);
      if (w.dwellUs > 0) await threads.pause(t, w.dwellUs);
      // Nothing else here waits: let timers and other threads run.
      else await WorkloadThreads.yieldToLoop();
      // Reaped: back with the driver, still mapped, ready for the next I/O.
      for (const b of buffers.slice(0, n)) ring(b).setState(b.slot, SlotState.FREE);
      i += n;
      counters.ios += n;
      counters.batches += 1;
      await threads.pause(t, w.gapUs);
    }
    for (const b of buffers) {
      await ring(b).retire(b.slot);
      const status = await threads.op(deviceOpName('unmap', b.device), t, (ctx) => dma.unmap(ctx, t, b.device, b.iova, pages));
      ring(b).setState(b.slot, SlotState.UNMAPPED);
      if (status !== 0) counters.failed += 1;
    }
  };

  return threads.run(thread, () => counters);
}
