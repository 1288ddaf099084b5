import { SlotState } from '../../machine/device-ring.js';
import { deviceOpName } from '../driver.js';
import { WorkloadThreads, queueDepthOf, type WorkloadEnv, type WorkloadRun } from './common.js';

interface InFlight {
  iova: number;
  slot: number;
}

/**
 * fio-like block I/O with iodepth_batch semantics: each thread keeps up to `queueDepth` requests of
 * `granulePages` pages in flight. It maps a whole batch (one 'map' per request: its scatter list
 * mapped as one IOVA range, as dma_map_sg does behind an IOMMU), posts the requests in its slots of
 * the device's ring, lets the device do the I/O (dwellUs), reaps the batch and unmaps it (one
 * 'unmap' per request), then thinks gapUs. `ops` requests in all, a fixed share per thread.
 * rate > 0 is fio's rate_iops: requests arrive on their own at `rate` per second over all threads
 * (spaced as workload.arrivals says) and a batch gathers them as they arrive.
 */
export async function blockIo(env: WorkloadEnv): Promise<WorkloadRun> {
  const { dma, w } = env;
  const pages = Math.max(1, w.granulePages);
  const depth = queueDepthOf(w);
  const threads = new WorkloadThreads(env, ['map', 'unmap']);
  const counters = { requests: 0, batches: 0, failed: 0 };
  await threads.begin();

  const thread = async (t: number): Promise<void> => {
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
        const pa = WorkloadThreads.bufferPa(t * depth + k, pages);
        const iova = await threads.op(deviceOpName('map', device), t, (ctx) => dma.map(ctx, t, device, pa, pages), at);
        if (iova < 0) {
          counters.failed += 1;
          continue;
        }
        const slot = threads.slot(t, k, depth);
        ring.post(slot, iova, pages);
        batch.push({ iova, slot });
      }
      if (batch.length === 0) continue;
      counters.batches += 1;
      // The device serves the batch.
      await threads.pause(t, w.dwellUs);
      // Completion: the driver reaps every request before unmapping any of them.
      await ring.retire(...batch.map((r) => r.slot));
      for (const r of batch) {
        const status = await threads.op(deviceOpName('unmap', device), t, (ctx) => dma.unmap(ctx, t, device, r.iova, pages));
        ring.setState(r.slot, SlotState.UNMAPPED);
        if (status !== 0) counters.failed += 1;
      }
      if (!arrivals) await threads.pause(t, w.gapUs);
    }
  };

  return threads.run(thread, () => counters);
}
