import { GUEST_BUFFER_BASE } from '../common/board.js';
import { nowNs } from '../common/clock.js';
import { DeviceRing, RING_SLOTS, SlotState } from '../common/device-ring.js';
import type { Workload__Output } from '../common/generated/vmmsim/v1/Workload.js';
import { PAGE_SIZE } from '../common/memory.js';
import type { DmaApi, GuestKernel } from './driver.js';
import type { OpStats } from './op-stats.js';

/** Slots at the end of each device ring hold its receive buffers; the benchmark uses the rest. */
const MAX_RECEIVE_BUFFERS = 64;
const RECEIVE_BUFFER_BASE = 0x3_0000_0000;

/**
 * Each device's receive ring: buffers its driver maps at probe and keeps mapped, where most of the
 * device's DMA lands. They are set up before the measured operations and not counted among them,
 * and mapped as coherent memory is, whatever the streaming DMA mode (no bouncing, no reuse).
 */
async function mapReceiveRings(kernel: GuestKernel, dma: DmaApi, rings: Map<number, DeviceRing>): Promise<void> {
  const n = Math.min(kernel.env.topology.device?.ringBuffers ?? 0, MAX_RECEIVE_BUFFERS);
  for (const d of kernel.devices) {
    for (let i = 0; i < n; i++) {
      const ctx = kernel.env.newContext(0, 0);
      const pa = RECEIVE_BUFFER_BASE + (d.index * MAX_RECEIVE_BUFFERS + i) * PAGE_SIZE;
      const iova = await dma.map(ctx, 0, d, pa, 1);
      if (iova < 0) throw new Error(`mapping the receive ring of device ${d.index} failed (${iova})`);
      rings.get(d.index)?.post(RING_SLOTS - 1 - i, iova, 1);
    }
  }
}

export interface WorkloadResult {
  elapsedNs: number;
  /** Per thread (vCPU) the sum of its operations' modeled time; the run's modeled length is the max. */
  modeledPerThreadNs: number[];
  operations: number;
}

/**
 * Linux's dma_map_benchmark shape: `threads` kernel threads, each mapping a buffer of
 * `granulePages` pages for its device and unmapping it again, until `ops` iterations ran in all or
 * `durationSec` passed. Each map and each unmap is one operation in the results. The buffer is
 * posted in the device's ring between the two, so the device has something to DMA to.
 */
export async function dmaMapBenchmark(kernel: GuestKernel, dma: DmaApi, coherent: DmaApi, stats: OpStats, w: Workload__Output): Promise<WorkloadResult> {
  const threads = Math.max(1, w.threads);
  const pages = Math.max(1, w.granulePages);
  // A fixed share of the iterations per thread (not first come, first served), so which vCPU runs
  // which operation, and so every modeled number, does not depend on measured timing.
  const share = (t: number): number => (w.ops > 0 ? Math.floor(w.ops / threads) + (t < w.ops % threads ? 1 : 0) : Number.POSITIVE_INFINITY);
  const deadline = w.durationSec > 0 ? nowNs() + w.durationSec * 1e9 : Number.POSITIVE_INFINITY;
  const rings = new Map(kernel.devices.map((d) => [d.index, new DeviceRing(kernel.ram, d.index)]));
  stats.declare('map');
  stats.declare('unmap');
  let opId = 1;
  const modeledPerThreadNs = kernel.vcpuNs;
  modeledPerThreadNs.length = 0;
  for (let t = 0; t < threads; t++) modeledPerThreadNs.push(0);
  await mapReceiveRings(kernel, coherent, rings);
  const t0 = nowNs();

  const thread = async (t: number): Promise<void> => {
    const device = kernel.devices[t % kernel.devices.length];
    if (!device) throw new Error('the guest has no assigned device');
    const ring = rings.get(device.index) as DeviceRing;
    const slot = Math.floor(t / kernel.devices.length) % (RING_SLOTS - MAX_RECEIVE_BUFFERS);
    const pa = GUEST_BUFFER_BASE + t * pages * PAGE_SIZE;
    for (let i = 0; i < share(t) && nowNs() < deadline; i++) {
      const mapCtx = kernel.env.newContext(opId++, 0);
      const m0 = nowNs();
      const mapStart = modeledPerThreadNs[t] ?? 0;
      const iova = await dma.map(mapCtx, t, device, pa, pages);
      const m1 = nowNs();
      modeledPerThreadNs[t] = mapStart + mapCtx.modeledNs;
      if (iova < 0) {
        stats.fail('map');
        continue;
      }
      stats.record('map', m1 - m0, mapCtx, t, mapStart);
      ring.post(slot, iova, pages);
      if (w.dwellUs > 0) {
        // The I/O: the device owns the buffer for a while (real time, and the vCPU's modeled time;
        // modeled time follows the setting, not how long the timer really took).
        await new Promise((resolve) => setTimeout(resolve, w.dwellUs / 1000));
        modeledPerThreadNs[t] = (modeledPerThreadNs[t] ?? 0) + w.dwellUs * 1000;
      }

      // The driver takes the buffer back from the device before it unmaps it.
      ring.setState(slot, SlotState.RETIRED);
      const unmapCtx = kernel.env.newContext(opId++, 0);
      const u0 = nowNs();
      const unmapStart = modeledPerThreadNs[t] ?? 0;
      const status = await dma.unmap(unmapCtx, t, device, iova, pages);
      const u1 = nowNs();
      ring.setState(slot, SlotState.UNMAPPED);
      modeledPerThreadNs[t] = unmapStart + unmapCtx.modeledNs;
      if (status !== 0) {
        stats.fail('unmap');
        kernel.env.log.warn({ status, iova }, 'unmap failed');
        continue;
      }
      stats.record('unmap', u1 - u0, unmapCtx, t, unmapStart);
      if (w.gapUs > 0) {
        await new Promise((resolve) => setTimeout(resolve, w.gapUs / 1000));
        modeledPerThreadNs[t] = (modeledPerThreadNs[t] ?? 0) + w.gapUs * 1000;
      }
    }
  };

  await Promise.all(Array.from({ length: threads }, (_, t) => thread(t)));
  await dma.drain();
  return { elapsedNs: nowNs() - t0, modeledPerThreadNs, operations: opId - 1 };
}
