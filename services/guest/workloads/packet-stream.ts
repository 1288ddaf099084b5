import { SlotState } from '../../machine/device-ring.js';
import { deviceOpName } from '../driver.js';
import { WorkloadThreads, ioModelOf, queueDepthOf, type WorkloadEnv, type WorkloadRun } from './common.js';

/** A packet's direction: TX first, then RX, in turn. */
const TX = 0;
const RX = 1;

/**
 * netperf-like traffic through a NIC driver that maps every packet buffer (no page-pool recycling):
 * each thread is a queue pair (TX ring and RX ring) of the device it drives, and its packets
 * alternate TX and RX. Each packet is its CPU work, one 'map' and one 'unmap' of granulePages pages,
 * and its I/O on the NIC and the link:
 *  - TX: the stack and driver build and send it ('tx', net.tx_packet), the driver maps its buffer
 *    (to the device) and posts it, the NIC takes it out (device.nic.mpps) onto the wire (the link's
 *    TX direction at device.nic.lineGbps), and at TX completion the driver reaps and unmaps it;
 *  - RX: the driver refills its RX ring with one freshly mapped buffer (from the device), a packet
 *    arrives on the wire (the link's RX direction) and through the NIC into it, the driver unmaps it
 *    and the stack takes it up ('rx', net.rx_packet).
 * The CPU work and the map and unmap run on the thread's vCPU; the NIC and the link are resources of
 * their own ('io' operations), so a vCPU keeps queueDepth packets in flight (lanes) and the queueing
 * replay yields the packets per second and what bounds them (docs/results.md, application).
 * dma=static: a poll-mode driver (guest.pmd_io per packet) over buffers premapped at setup.
 * `ops` packets in all, a fixed share per thread. rate > 0: packets arrive on their own at `rate` per
 * second over all threads (open loop, spaced as workload.arrivals says; a packet's first operation is
 * its arrival); rate 0: closed loop, gapUs of think time between packets.
 */
export async function packetStream(env: WorkloadEnv): Promise<WorkloadRun> {
  const { dma, w } = env;
  const pages = Math.max(1, w.granulePages);
  const depth = queueDepthOf(w);
  const io = ioModelOf(env);
  const threads = new WorkloadThreads(env, ['map', 'unmap', 'tx', 'rx', 'io'], { lanes: depth });
  const counters = { packets: 0, tx: 0, rx: 0, failed: 0 };
  await threads.begin();
  const buffer = (t: number, lane: number): number => WorkloadThreads.bufferPa(t * depth + lane, pages);

  const thread = async (t: number): Promise<void> => {
    await threads.premap(t, Array.from({ length: depth }, (_, lane) => ({ device: threads.device(t, lane), pa: buffer(t, lane), pages })));
    const arrivals = threads.arrivals(t);
    for (let i = 0; i < threads.share(t) && threads.running(); i++) {
      const lane = i % depth;
      const device = threads.device(t, i);
      const ring = threads.ring(t, i);
      const dir = i % 2 === 0 ? TX : RX;
      const slot = threads.slot(t, lane, depth);
      const pa = buffer(t, lane);
      let at = arrivals?.next();
      if (at !== undefined) await threads.due(at);
      counters.packets += 1;
      if (dir === TX) {
        await threads.op(deviceOpName('tx', device), t, async (ctx) => (ctx.charge(io.txStep), 0), at, lane);
        at = undefined;
      }
      const iova = await threads.op(deviceOpName('map', device), t, (ctx) => dma.map(ctx, t, device, pa, pages), at, lane);
      if (iova < 0) {
        counters.failed += 1;
        continue;
      }
      ring.post(slot, iova, pages);
      // The NIC and the wire: out through the NIC onto the link (TX), or in from the link (RX).
      const nic = `nic-${device.index}`;
      const link = `link-${device.index}.${dir === TX ? 'tx' : 'rx'}`;
      const wire = (ctx: Parameters<Parameters<typeof threads.io>[3]>[0]) => ctx.hold(link, () => ctx.charge('hw.link_ns', io.wireNs));
      const pipeline = (ctx: Parameters<Parameters<typeof threads.io>[3]>[0]) => ctx.hold(nic, () => ctx.charge('hw.device_ns', io.nicNs));
      await threads.io(deviceOpName('io', device), t, lane, async (ctx) => {
        if (dir === TX) {
          await pipeline(ctx);
          await wire(ctx);
        } else {
          await wire(ctx);
          await pipeline(ctx);
        }
        // workload.dwellUs: longer on the device, holding nothing.
        if (w.dwellUs > 0) ctx.charge('hw.device_ns', Math.round(w.dwellUs * 1000));
      });
      await WorkloadThreads.dwell(w.dwellUs);
      // TX completion or RX receive: the driver takes the buffer back (waiting for the device to let
      // go of it: DeviceRing.retire), then unmaps it.
      await ring.retire(slot);
      const status = await threads.op(deviceOpName('unmap', device), t, (ctx) => dma.unmap(ctx, t, device, iova, pages), undefined, lane);
      ring.setState(slot, SlotState.UNMAPPED);
      if (dir === RX) await threads.op(deviceOpName('rx', device), t, async (ctx) => (ctx.charge(io.rxStep), 0), undefined, lane);
      if (status !== 0) counters.failed += 1;
      else if (dir === TX) counters.tx += 1;
      else counters.rx += 1;
      if (!arrivals) await threads.pause(t, w.gapUs, lane);
    }
  };

  return threads.run(thread, () => counters);
}
