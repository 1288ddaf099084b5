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
 * device.nic.pagePool (dma strict or lazy): the RX buffers come from a page_pool that maps each one
 * once at setup (page_pool_dma_map) and recycles it: a received packet has no map and no unmap.
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

  const pool = pagePoolOf(env);
  const thread = async (t: number): Promise<void> => {
    await threads.premap(t, Array.from({ length: depth }, (_, lane) => ({ device: threads.device(t, lane), pa: buffer(t, lane), pages })));
    // The lanes that carry RX packets: packet i goes to lane i % depth and is RX when i is odd.
    const rxLanes = new Set<number>();
    for (let i = 1; i < Math.min(threads.share(t), 2 * depth); i += 2) rxLanes.add(i % depth);
    const poolIova = new Map<number, number>();
    if (pool) {
      const lanes = [...rxLanes].sort((a, b) => a - b);
      const iovas = await threads.poolMap(t, lanes.map((lane) => ({ device: threads.device(t, lane), pa: buffer(t, lane), pages })));
      lanes.forEach((lane, k) => poolIova.set(lane, iovas[k] ?? -1));
    }
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
      const recycled = dir === RX ? poolIova.get(lane) : undefined;
      // A recycled RX buffer is already mapped: its packet's first operation on the vCPU (and so
      // its arrival, open loop) is the stack taking it up.
      const iova = recycled ?? (await threads.op(deviceOpName('map', device), t, (ctx) => dma.map(ctx, t, device, pa, pages), at, lane));
      const rxArrival = recycled !== undefined ? at : undefined;
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
      // A recycled RX buffer goes back to its page_pool still mapped (the driver's again: RETIRED).
      const status = recycled !== undefined ? 0 : await threads.op(deviceOpName('unmap', device), t, (ctx) => dma.unmap(ctx, t, device, iova, pages), undefined, lane);
      if (recycled === undefined) ring.setState(slot, SlotState.UNMAPPED);
      if (dir === RX) await threads.op(deviceOpName('rx', device), t, async (ctx) => (ctx.charge(io.rxStep), 0), rxArrival, lane);
      if (status !== 0) counters.failed += 1;
      else if (dir === TX) counters.tx += 1;
      else counters.rx += 1;
      if (!arrivals) await threads.pause(t, w.gapUs, lane);
    }
  };

  return threads.run(thread, () => counters);
}

/** device.nic.pagePool, where it applies: dma strict or lazy (static premaps every buffer; bounce and swiotlb copy per packet). */
function pagePoolOf(env: WorkloadEnv): boolean {
  const dma = env.kernel.env.topology.dma;
  return (env.kernel.env.topology.device?.nic?.pagePool ?? false) && (dma === 'strict' || dma === 'lazy');
}
