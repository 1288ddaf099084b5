import { GUEST_BUFFER_BASE } from '../machine/board.js';
import { nowNs } from '../runtime/clock.js';
import { DeviceRing, RING_SLOTS, SlotState } from '../machine/device-ring.js';
import type { Workload__Output } from '../runtime/generated/vmmsim/v1/Workload.js';
import { PAGE_SIZE } from '../machine/memory.js';
import { deviceOpName, type DmaApi, type GuestDevice, type GuestKernel } from './driver.js';
import type { OpStats } from './op-stats.js';
import { parseTrace } from './trace.js';
import type { WorkloadResult } from './workloads/common.js';
import { readRunFile } from '../machine/run-folder.js';

/** Buffers are placed in a 256 MiB window of guest RAM, page by page as the trace's paddr says. */
const REPLAY_WINDOW_PAGES = 0x1_0000;

interface Live {
  iova: number;
  pages: number;
  device: GuestDevice;
  slot: number;
}

/**
 * Replays a Linux ftrace of iommu map/unmap events through the architecture's DMA API: each map
 * event maps as many pages at the time the trace gives (times scaled by workload.timeScale, or as
 * fast as possible at 0), each unmap unmaps the mapping its IOVA named. The trace's CPU becomes the
 * vCPU (modulo workload.threads), its dev=NAME picks a device (the VM's in turn, emulated ones
 * included: those report map@emulated and unmap@emulated). Lines that are not map/unmap events are
 * skipped and counted; an unmap with no earlier map is counted, not replayed.
 */
export async function traceReplay(kernel: GuestKernel, dma: DmaApi, stats: OpStats, w: Workload__Output): Promise<WorkloadResult & { counters: Record<string, number> }> {
  const parsed = parseTrace(readRunFile(w.trace));
  const threads = Math.max(1, w.threads);
  const scale = w.timeScale;
  const rings = new Map(kernel.devices.map((d) => [d.index, new DeviceRing(kernel.ram, d.index)]));
  const freeSlots = Array.from({ length: RING_SLOTS / 2 }, (_, i) => RING_SLOTS / 2 - 1 - i);
  const live = new Map<number, Live>();
  const deviceByName = new Map<string, GuestDevice>();
  const vcpu = kernel.vcpuNs;
  vcpu.length = 0;
  for (let t = 0; t < threads; t++) vcpu.push(0);
  stats.declare('map');
  stats.declare('unmap');
  const emulated = kernel.devices.find((d) => d.emulated);
  if (emulated) for (const op of ['map', 'unmap']) stats.declare(deviceOpName(op, emulated));
  const counters = { events: parsed.events.length, replayed: 0, unmatchedUnmaps: 0, failed: 0 };
  let opId = 1;
  const t0 = nowNs();

  const deviceOf = (name: string | undefined): GuestDevice => {
    const first = kernel.devices[0];
    if (!first) throw new Error('the guest has no assigned device');
    if (name === undefined) return first;
    let d = deviceByName.get(name);
    if (!d) {
      d = kernel.devices[deviceByName.size % kernel.devices.length] as GuestDevice;
      deviceByName.set(name, d);
    }
    return d;
  };

  for (const ev of parsed.events) {
    if (scale > 0) {
      // Honour the trace's inter-arrival times (scaled); never wait when already late.
      const ahead = ev.t * scale * 1e9 - (nowNs() - t0);
      if (ahead > 1e6) await new Promise((resolve) => setTimeout(resolve, ahead / 1e6));
    }
    const cpu = (ev.cpu ?? 0) % threads;
    // The vCPU is idle until the event arrives, in modeled time too.
    vcpu[cpu] = Math.max(vcpu[cpu] ?? 0, ev.t * scale * 1e9);
    const pages = Math.max(1, Math.ceil(ev.size / PAGE_SIZE));
    const ctx = kernel.env.newContext(opId++, 0);
    // With its timestamp honoured an event arrives on its own: it is due at its trace time even
    // when its vCPU is still busy, and its latency counts from then (no coordinated omission).
    const start = scale > 0 ? ev.t * scale * 1e9 : (vcpu[cpu] ?? 0);
    const arrival = scale > 0;
    if (ev.op === 'map') {
      const device = deviceOf(ev.device);
      const pa = GUEST_BUFFER_BASE + (Math.floor((ev.paddr ?? 0) / PAGE_SIZE) % REPLAY_WINDOW_PAGES) * PAGE_SIZE;
      const m0 = nowNs();
      const iova = await dma.map(ctx, cpu, device, pa, pages);
      const m1 = nowNs();
      vcpu[cpu] = (vcpu[cpu] ?? 0) + ctx.modeledNs;
      if (iova < 0) {
        counters.failed += 1;
        stats.fail(deviceOpName('map', device));
        continue;
      }
      stats.record(deviceOpName('map', device), m1 - m0, ctx, cpu, start, arrival);
      counters.replayed += 1;
      const slot = freeSlots.pop() ?? -1;
      if (slot >= 0) rings.get(device.index)?.post(slot, iova, pages);
      live.set(ev.iova, { iova, pages, device, slot });
    } else {
      const m = live.get(ev.iova);
      if (!m) {
        counters.unmatchedUnmaps += 1;
        continue;
      }
      live.delete(ev.iova);
      const ring = rings.get(m.device.index);
      if (m.slot >= 0) await ring?.retire(m.slot);
      const u0 = nowNs();
      const status = await dma.unmap(ctx, cpu, m.device, m.iova, m.pages);
      const u1 = nowNs();
      vcpu[cpu] = (vcpu[cpu] ?? 0) + ctx.modeledNs;
      if (m.slot >= 0) {
        ring?.setState(m.slot, SlotState.UNMAPPED);
        freeSlots.push(m.slot);
      }
      if (status !== 0) {
        counters.failed += 1;
        stats.fail(deviceOpName('unmap', m.device));
        continue;
      }
      stats.record(deviceOpName('unmap', m.device), u1 - u0, ctx, cpu, start, arrival);
      counters.replayed += 1;
    }
  }
  await dma.drain();
  return {
    elapsedNs: nowNs() - t0,
    modeledPerThreadNs: [...vcpu],
    operations: opId - 1,
    counters: {
      ...counters,
      leftMapped: live.size,
      'skipped.header': parsed.skipped.header,
      'skipped.blank': parsed.skipped.blank,
      'skipped.otherIommuEvent': parsed.skipped.otherIommuEvent,
      'skipped.otherEvent': parsed.skipped.otherEvent,
      'skipped.unparsable': parsed.skipped.unparsable,
    },
  };
}
