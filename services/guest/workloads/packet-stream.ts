import { SlotState } from '../../machine/device-ring.js';
import { deviceOpName } from '../driver.js';
import { WorkloadThreads, type WorkloadEnv, type WorkloadRun } from './common.js';

/** A queue pair's two rings, as slots of its device's ring: TX first, then RX. */
const TX = 0;
const RX = 1;

/**
 * netperf-like traffic through a NIC driver that maps every packet buffer (no page-pool recycling):
 * each thread is a queue pair (TX ring and RX ring) of the device it drives, and its packets
 * alternate TX and RX.
 *  - TX: the driver maps the packet buffer (to the device), posts it in the TX ring, the device
 *    reads it (dwellUs), and at TX completion the driver reaps and unmaps it;
 *  - RX: the driver refills its RX ring with one freshly mapped buffer per packet (from the
 *    device), the device writes the packet into it (dwellUs), and on receive the driver unmaps it.
 * Each packet is one 'map' and one 'unmap' of granulePages pages. `ops` packets in all, a fixed
 * share per thread. rate > 0: packets arrive on their own at `rate` per second over all threads
 * (open loop, spaced as workload.arrivals says; a packet's map is its arrival, its unmap follows);
 * rate 0: closed loop, gapUs of think time between packets.
 */
export async function packetStream(env: WorkloadEnv): Promise<WorkloadRun> {
  const { dma, w } = env;
  const pages = Math.max(1, w.granulePages);
  const threads = new WorkloadThreads(env, ['map', 'unmap']);
  const counters = { packets: 0, tx: 0, rx: 0, failed: 0 };
  await threads.begin();

  const thread = async (t: number): Promise<void> => {
    const arrivals = threads.arrivals(t);
    for (let i = 0; i < threads.share(t) && threads.running(); i++) {
      const device = threads.device(t, i);
      const ring = threads.ring(t, i);
      const dir = i % 2 === 0 ? TX : RX;
      const slot = threads.slot(t, dir, 2);
      const pa = WorkloadThreads.bufferPa(2 * t + dir, pages);
      const at = arrivals?.next();
      if (at !== undefined) await threads.due(at);
      counters.packets += 1;
      const iova = await threads.op(deviceOpName('map', device), t, (ctx) => dma.map(ctx, t, device, pa, pages), at);
      if (iova < 0) {
        counters.failed += 1;
        continue;
      }
      ring.post(slot, iova, pages);
      // The device reads the frame out (TX) or writes one in (RX).
      await threads.pause(t, w.dwellUs);
      // TX completion or RX receive: the driver takes the buffer back, then unmaps it.
      await ring.retire(slot);
      const status = await threads.op(deviceOpName('unmap', device), t, (ctx) => dma.unmap(ctx, t, device, iova, pages));
      ring.setState(slot, SlotState.UNMAPPED);
      if (status !== 0) counters.failed += 1;
      else if (dir === TX) counters.tx += 1;
      else counters.rx += 1;
      if (!arrivals) await threads.pause(t, w.gapUs);
    }
  };

  return threads.run(thread, () => counters);
}
