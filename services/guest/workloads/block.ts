import { SlotState } from '../../machine/device-ring.js';
import type { OpContext } from '../../runtime/op-context.js';
import { deviceOpName } from '../driver.js';
import { WorkloadThreads, ioModelOf, queueDepthOf, type WorkloadEnv, type WorkloadRun } from './common.js';

interface InFlight {
  iova: number;
  slot: number;
  lane: number;
}

/**
 * fio-like block I/O with iodepth_batch semantics: each thread keeps up to `queueDepth` requests of
 * `granulePages` pages in flight. For each request of a batch the block layer and driver do their
 * work ('request', block.request) and map it (one 'map': its scatter list mapped as one IOVA range,
 * as dma_map_sg does behind an IOMMU) and post it in the thread's slots of the device's ring; the
 * NVMe drive serves it ('io': device.nvme.serviceUs on one of its device.nvme.parallelism servers)
 * and moves its data over its link (device.nvme.linkGBps); the driver reaps the batch and unmaps it
 * (one 'unmap' per request), then thinks gapUs. The request's CPU work and its map and unmap run on
 * the thread's vCPU, each request of the batch on its own lane of the queueing replay, so the drive
 * serves the batch's requests together while the vCPU works on the others (docs/results.md).
 * dma=static: a poll-mode driver (SPDK-like, guest.pmd_io per request) over buffers premapped at
 * setup. `ops` requests in all, a fixed share per thread. rate > 0 is fio's rate_iops: requests
 * arrive on their own at `rate` per second over all threads (spaced as workload.arrivals says) and a
 * batch gathers them as they arrive.
 */
export async function blockIo(env: WorkloadEnv): Promise<WorkloadRun> {
  const { dma, w } = env;
  const pages = Math.max(1, w.granulePages);
  const depth = queueDepthOf(w);
  const io = ioModelOf(env);
  const threads = new WorkloadThreads(env, ['map', 'unmap', 'request', 'io'], { lanes: depth });
  const counters = { requests: 0, batches: 0, failed: 0 };
  await threads.begin();
  const buffer = (t: number, k: number): number => WorkloadThreads.bufferPa(t * depth + k, pages);

  const thread = async (t: number): Promise<void> => {
    await threads.premap(t, Array.from({ length: depth }, (_, k) => ({ device: threads.device(t, 0), pa: buffer(t, k), pages })));
    const share = threads.share(t);
    const arrivals = threads.arrivals(t);
    let i = 0;
    for (let b = 0; i < share && threads.running(); b++) {
      // A batch goes to one device.
      const device = threads.device(t, b);
      const ring = threads.ring(t, b);
      const batch: InFlight[] = [];
      for (let k = 0; k < depth && i < share && threads.running(); k++, i++) {
        const at = arrivals?.next();
        if (at !== undefined) await threads.due(at);
        counters.requests += 1;
        await threads.op(deviceOpName('request', device), t, async (ctx) => (ctx.charge(io.blockStep), 0), at, k);
        const iova = await threads.op(deviceOpName('map', device), t, (ctx) => dma.map(ctx, t, device, buffer(t, k), pages), undefined, k);
        if (iova < 0) {
          counters.failed += 1;
          continue;
        }
        const slot = threads.slot(t, k, depth);
        ring.post(slot, iova, pages);
        batch.push({ iova, slot, lane: k });
      }
      if (batch.length === 0) continue;
      counters.batches += 1;
      // The drive serves each request on one of its servers, and its data crosses the link.
      for (const r of batch) {
        await threads.io(deviceOpName('io', device), t, r.lane, async (ctx: OpContext) => {
          await ctx.hold(`nvme-${device.index}[${io.nvmeServers}]`, () => ctx.charge('hw.device_ns', io.nvmeNs + Math.round(w.dwellUs * 1000)));
          await ctx.hold(`link-${device.index}`, () => ctx.charge('hw.link_ns', io.nvmeLinkNs));
        });
      }
      await WorkloadThreads.dwell(w.dwellUs);
      // Completion: the driver reaps every request before unmapping any of them, waiting for the
      // device to let go of their buffers (DeviceRing.retire).
      await ring.retire(...batch.map((r) => r.slot));
      for (const r of batch) {
        const status = await threads.op(deviceOpName('unmap', device), t, (ctx) => dma.unmap(ctx, t, device, r.iova, pages), undefined, r.lane);
        ring.setState(r.slot, SlotState.UNMAPPED);
        if (status !== 0) counters.failed += 1;
      }
      if (!arrivals) await threads.pause(t, w.gapUs, batch[batch.length - 1]?.lane ?? 0);
    }
  };

  return threads.run(thread, () => counters);
}
