import { SlotState } from '../../machine/device-ring.js';
import { deviceOpName } from '../driver.js';
import { WorkloadThreads, type WorkloadEnv, type WorkloadRun } from './common.js';

/**
 * Linux's dma_map_benchmark shape: `threads` kernel threads, each mapping a buffer of
 * `granulePages` pages for its device and unmapping it again, until `ops` iterations ran in all or
 * `durationSec` passed. Each map and each unmap is one operation in the results. The buffer is
 * posted in the device's ring between the two, so the device has something to DMA to.
 * rate > 0 (open loop, a load test): iterations arrive on their own at `rate` per second over all
 * threads, spaced as workload.arrivals says; an iteration's map is its arrival and its unmap
 * follows (after dwellUs). A thread still busy with its previous iteration takes the next one late,
 * and that wait counts in the map's latency.
 */
export async function dmaMapBenchmark(env: WorkloadEnv): Promise<WorkloadRun> {
  const { kernel, dma, w } = env;
  const pages = Math.max(1, w.granulePages);
  const threads = new WorkloadThreads(env, ['map', 'unmap']);
  await threads.begin();

  const thread = async (t: number): Promise<void> => {
    const slot = threads.slot(t, 0, 1);
    const pa = WorkloadThreads.bufferPa(t, pages);
    const arrivals = threads.arrivals(t);
    for (let i = 0; i < threads.share(t) && threads.running(); i++) {
      const device = threads.device(t, i);
      const ring = threads.ring(t, i);
      const at = arrivals?.next();
      if (at !== undefined) await threads.due(at);
      const iova = await threads.op(deviceOpName('map', device), t, (ctx) => dma.map(ctx, t, device, pa, pages), at);
      if (iova < 0) continue;
      ring.post(slot, iova, pages);
      // The I/O: the device owns the buffer for a while.
      await threads.pause(t, w.dwellUs);
      // The driver takes the buffer back from the device before it unmaps it.
      await ring.retire(slot);
      const status = await threads.op(deviceOpName('unmap', device), t, (ctx) => dma.unmap(ctx, t, device, iova, pages));
      ring.setState(slot, SlotState.UNMAPPED);
      if (status !== 0) {
        kernel.env.log.warn({ status, iova }, 'unmap failed');
        continue;
      }
      if (!arrivals) await threads.pause(t, w.gapUs);
    }
  };

  return threads.run(thread, () => ({}));
}
