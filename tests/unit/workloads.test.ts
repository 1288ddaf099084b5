import { describe, expect, it } from 'vitest';
import { GUEST_BUFFER_BASE } from '../../services/machine/board.js';
import { loadProfile, profileCosts } from '../../services/cost/profile.js';
import { CostTable } from '../../services/cost/steps.js';
import { DeviceRing, SlotState } from '../../services/machine/device-ring.js';
import { VmmsimError } from '../../services/runtime/errors.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { createLogger } from '../../services/runtime/logger.js';
import { PAGE_SIZE, PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { EndpointTable, type Endpoint } from '../../services/runtime/topology.js';
import type { DmaApi, GuestDevice, GuestKernel } from '../../services/guest/driver.js';
import { OpStats } from '../../services/guest/op-stats.js';
import { runWorkload, type WorkloadRun, type WorkloadSpec } from '../../services/guest/workload.js';
import { withDmaMode } from '../../services/guest/dma-modes.js';
import { STATIC_SETUP_OP } from '../../services/machine/setup-ops.js';
import { arrivalTimes, constantArrivalNs } from '../../services/guest/workloads/arrivals.js';
import { queueDepthOf } from '../../services/guest/workloads/common.js';

const costs = new CostTable(profileCosts(loadProfile('arm64-kunpeng920')));
const log = createLogger({ role: 'test' }, 'silent');
const RECEIVE_BUFFER_BASE = 0x3_0000_0000;

interface Call {
  op: 'map' | 'unmap' | 'invalidate';
  cpu: number;
  device: number;
  addr: number;
  pages: number;
}

/** Real time that varies from call to call, so threads interleave differently on every run. */
function jitter(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.random() < 0.5 ? 0 : 1));
}

/** A DMA API that charges real profile steps and hands out IOVAs per CPU, with no IOMMU behind it. */
class FakeDma implements DmaApi {
  readonly calls: Call[] = [];
  readonly guestCommands = 0;
  private readonly next = new Map<number, number>();

  async map(ctx: OpContext, cpu: number, device: GuestDevice, pa: number, pages: number): Promise<number> {
    await jitter();
    ctx.charge('guest.iova_alloc');
    ctx.charge('guest.pte_write', pages);
    this.calls.push({ op: 'map', cpu, device: device.index, addr: pa, pages });
    const iova = this.next.get(cpu) ?? 0x1_0000_0000 + cpu * 0x1000_0000;
    this.next.set(cpu, iova + pages * PAGE_SIZE);
    return iova;
  }

  async unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number> {
    await jitter();
    ctx.charge('guest.pte_write', pages);
    ctx.charge('guest.cmdq_write', 2);
    ctx.charge('guest.iova_free');
    this.calls.push({ op: 'unmap', cpu, device: device.index, addr: iova, pages });
    return 0;
  }

  async drain(): Promise<void> {}

  close(): void {}
}

class FakeSvaDma extends FakeDma {
  async invalidateVa(ctx: OpContext, cpu: number, device: GuestDevice, va: number, pages: number): Promise<number> {
    await jitter();
    ctx.charge('guest.cmdq_write', 2);
    this.calls.push({ op: 'invalidate', cpu, device: device.index, addr: va, pages });
    return 0;
  }
}

interface Recorded {
  name: string;
  thread: number;
  startNs: number;
  ns: number;
  arrival: boolean;
}

/** What real time measured of an operation: kept apart from Recorded, which must not depend on it. */
interface Measured {
  name: string;
  thread: number;
  measuredNs: number;
}

/** OpStats that also keeps every recorded operation, to look at the timeline the queueing model gets. */
class RecordingStats extends OpStats {
  readonly recorded: Recorded[] = [];
  readonly measured: Measured[] = [];

  override record(name: string, measuredNs: number, ctx: OpContext, thread: number, startNs: number, arrival = false, vcpu = thread): void {
    this.recorded.push({ name, thread, startNs, ns: ctx.modeledNs, arrival });
    this.measured.push({ name, thread, measuredNs });
    super.record(name, measuredNs, ctx, thread, startNs, arrival, vcpu);
  }

  /** Each thread's operations in order: what must not depend on real timing. */
  byThread(): Recorded[][] {
    const out: Recorded[][] = [];
    for (const r of this.recorded) (out[r.thread] ??= []).push(r);
    return out;
  }

  count(name: string): number {
    return Number(this.opReports().find((o) => o.op === name)?.count ?? -1);
  }
}

function spec(w: Partial<WorkloadSpec>): WorkloadSpec {
  return { kind: 'dma-map-benchmark', threads: 1, granulePages: 1, ops: 10, durationSec: 0, rate: 0, arrivals: 'constant', dwellUs: 0, gapUs: 0, trace: '', timeScale: 1, queueDepth: 1, packetBytes: 1500, migration: null, virtioMem: null, ...w };
}

function fakeKernel(devices: number, ringBuffers = 0, setups: string[] = []): GuestKernel {
  const self: Endpoint = { id: 1, role: 'guest', index: 0, name: 'guest-0', address: '', pid: 0, host: '' };
  const topology: Topology__Output = {
    runId: 'unit', model: 'fake', dma: 'strict', seed: 1, endpoints: [self], devices: [], costsNs: {}, workload: null, vmids: [1], deadlineMs: 1000,
    vsmmu: 'single', ramDir: '', device: { dmaRate: 0, lingerMs: 0, lingerShare: 0, iotlbEntries: 8, ringBuffers, ats: false, nic: null, nvme: null }, vcmdqsPerVsmmu: 0, dispatch: 'broadcast', vmidPolicy: 'per-s2-parent',
    guest: { flushQueue: 'per-cpu', tceHcalls: 'indirect', ddw: false }, vmm: { hwptInvalidate: 'per-command' }, emulatedDevices: [], smmu: { ril: true }, explain: null, floorPeer: '', warmupOps: 0,
  };
  const kernel: GuestKernel = {
    env: {
      self, topology, endpoints: new EndpointTable([self]), costs, log, peers: [],
      newContext: (opId, modeledNs) => new OpContext(opId, modeledNs, costs, new Map()),
    },
    ram: new PhysMemory(),
    devices: Array.from({ length: devices }, (_, i) => ({ index: i, vsid: 0x100 + i, vsmmu: 0 })),
    vcpuNs: [],
    background: () => undefined,
    timer: async () => undefined,
    setup: async (op, work) => {
      setups.push(op);
      await work(new OpContext(0, 0, costs, new Map()));
    },
  };
  return kernel;
}

interface Outcome {
  run: WorkloadRun;
  stats: RecordingStats;
  dma: FakeDma;
  coherent: FakeDma;
  kernel: GuestKernel;
  /** The setup operations the workload ran (GuestKernel.setup), in order. */
  setups: string[];
}

async function run(w: Partial<WorkloadSpec>, opts: { devices?: number; ringBuffers?: number; coherent?: FakeDma; dma?: 'strict' | 'static' } = {}): Promise<Outcome> {
  const setups: string[] = [];
  const kernel = fakeKernel(opts.devices ?? 1, opts.ringBuffers ?? 0, setups);
  const stats = new RecordingStats(kernel.env.endpoints);
  const dma = new FakeDma();
  const coherent = opts.coherent ?? dma;
  // dma=static: the guest's static mode over the fake IOMMU layer (dma records what reached it).
  if (opts.dma === 'static') kernel.env.topology.dma = 'static';
  const api = opts.dma === 'static' ? withDmaMode('static', dma, kernel) : dma;
  const r = await runWorkload({ kernel, dma: api, coherent, stats, w: spec(w) });
  return { run: r, stats, dma, coherent, kernel, setups };
}

function names(ops: readonly Recorded[]): string[] {
  return ops.map((o) => o.name);
}

describe('dma-map-benchmark', () => {
  it('shares the iterations among threads in fixed shares, a map then an unmap each', async () => {
    const o = await run({ ops: 10, threads: 3 });
    expect(o.stats.count('map')).toBe(10);
    expect(o.stats.count('unmap')).toBe(10);
    expect(o.stats.byThread().map((ops) => ops.length)).toEqual([8, 6, 6]);
    for (const ops of o.stats.byThread()) expect(names(ops)).toEqual(ops.map((_, i) => (i % 2 === 0 ? 'map' : 'unmap')));
    expect(o.run.operations).toBe(20);
  });

  it('stops after durationSec when ops is 0', async () => {
    const o = await run({ ops: 0, durationSec: 0.15 });
    expect(o.run.elapsedNs).toBeGreaterThanOrEqual(0.15e9);
    expect(o.run.elapsedNs).toBeLessThan(2e9);
    expect(o.stats.count('map')).toBeGreaterThan(0);
    expect(o.stats.count('unmap')).toBe(o.stats.count('map'));
  });

  it('maps the receive rings through the coherent API first, not as measured operations', async () => {
    const coherent = new FakeDma();
    const o = await run({ ops: 4 }, { ringBuffers: 3, devices: 2, coherent });
    expect(coherent.calls.map((c) => [c.device, c.addr])).toEqual([0, 1].flatMap((d) => [0, 1, 2].map((i) => [d, RECEIVE_BUFFER_BASE + (d * 64 + i) * PAGE_SIZE])));
    expect(o.dma.calls.filter((c) => c.op === 'map')).toHaveLength(4);
    expect(o.stats.count('map')).toBe(4);
    const ring = DeviceRing.read(o.kernel.ram, 1);
    expect(ring.slice(125).map((s) => s.state)).toEqual([SlotState.POSTED, SlotState.POSTED, SlotState.POSTED]);
  });

  it('at a rate, each iteration\'s map is an arrival at its scheduled time, the unmap follows it', async () => {
    // 1 ns apart: far faster than the thread can go, in modeled time and in real time.
    const rate = 1e9;
    const o = await run({ ops: 8, threads: 2, rate });
    for (const [t, ops] of o.stats.byThread().entries()) {
      expect(names(ops)).toEqual(ops.map((_, i) => (i % 2 === 0 ? 'map' : 'unmap')));
      const maps = ops.filter((x) => x.name === 'map');
      const unmaps = ops.filter((x) => x.name === 'unmap');
      // The arrival is when the iteration was meant to start, not when the busy thread got to it:
      // the queueing model starts it when the thread is free and counts its latency from here.
      expect(maps.map((x) => x.startNs)).toEqual([0, 1, 2, 3].map((i) => constantArrivalNs(rate, 2, t, i)));
      expect(maps.every((x) => x.arrival)).toBe(true);
      expect(unmaps.every((x) => !x.arrival)).toBe(true);
      unmaps.forEach((u, i) => expect(u.startNs).toBe((maps[i] as Recorded).startNs + (maps[i] as Recorded).ns));
    }
  });

  it('at a rate, times each map from its intended send time in real time too (no coordinated omission)', async () => {
    const o = await run({ ops: 6, rate: 1e6 });
    const maps = o.stats.measured.filter((x) => x.name === 'map');
    const unmaps = o.stats.measured.filter((x) => x.name === 'unmap');
    // Each fake call takes a millisecond or so and the iterations are due 1 us apart, so each map
    // goes out late by all the thread did before it: its latency holds its predecessor's latency,
    // and the unmap after that, less the 1 us between their send times.
    for (let i = 1; i < maps.length; i++) {
      expect((maps[i] as Measured).measuredNs).toBeGreaterThanOrEqual((maps[i - 1] as Measured).measuredNs + (unmaps[i - 1] as Measured).measuredNs - 1000);
    }
    // Closed loop, a map is timed alone.
    const closed = await run({ ops: 6 });
    const closedMaps = closed.stats.measured.filter((x) => x.name === 'map');
    expect(Math.max(...closedMaps.map((x) => x.measuredNs))).toBeLessThan((maps[5] as Measured).measuredNs);
  });

  it('with poisson arrivals, each thread\'s maps follow its own seeded schedule, the same on every run', async () => {
    const w = { ops: 12, threads: 3, rate: 2e6, arrivals: 'poisson' };
    const a = await run(w);
    const b = await run(w);
    const starts = (o: Outcome): number[][] => o.stats.byThread().map((ops) => ops.filter((x) => x.name === 'map').map((x) => x.startNs));
    expect(starts(a)).toEqual(starts(b));
    for (const [t, s] of starts(a).entries()) expect(s).toEqual(arrivalTimes({ rate: 2e6, threads: 3, process: 'poisson', seed: 1, vm: 0 }, t, 4));
    // Not evenly spaced.
    const gaps = (starts(a)[0] as number[]).map((x, i, all) => x - (all[i - 1] ?? 0));
    expect(new Set(gaps.map((g) => Math.round(g))).size).toBe(4);
  });
});

/** A packet's or request's I/O on the device and its link (ioModelOf at the fake topology's defaults: no device.nic, no device.nvme). */
const NIC_NS = Math.round(1000 / 115) + Math.round(((1500 + 38) * 8) / 100);
const NVME_NS = 78_000 + Math.round((8 * PAGE_SIZE) / 7);

/** The names of vCPU t's operations in the order it ran them, over all its lanes (lane thread ids t + lane x threads). */
function onVcpu(o: Outcome, t: number, threads: number): string[] {
  return o.stats.recorded.filter((r) => r.thread % threads === t).map((r) => r.name);
}

describe('packet-stream', () => {
  it('runs each packet as its CPU work, a map, its I/O on the NIC and the link, and an unmap, TX and RX in turn', async () => {
    const o = await run({ kind: 'packet-stream', ops: 12, threads: 2, granulePages: 2 });
    expect(o.stats.count('map')).toBe(12);
    expect(o.stats.count('unmap')).toBe(12);
    expect(o.stats.count('io')).toBe(12);
    expect(o.stats.count('tx')).toBe(6);
    expect(o.stats.count('rx')).toBe(6);
    expect(o.run.counters).toEqual({ packets: 12, tx: 6, rx: 6, failed: 0 });
    // queueDepth 1: one lane per vCPU, its thread id the vCPU's.
    expect(o.stats.byThread()).toHaveLength(2);
    for (const [t, ops] of o.stats.byThread().entries()) {
      // TX: the stack's work, then map, I/O, unmap at completion; RX: a fresh buffer mapped, the packet in, unmap, then the stack.
      expect(names(ops)).toEqual([0, 1, 2].flatMap(() => ['tx', 'map', 'io', 'unmap', 'map', 'io', 'unmap', 'rx']));
      expect(ops.every((x) => !x.arrival)).toBe(true);
      // Through the NIC and over the wire: device.nic.mpps 115 and a 1538-byte frame at 100 Gb/s.
      expect(ops.filter((x) => x.name === 'io').every((x) => x.ns === NIC_NS)).toBe(true);
      // The lane's operations follow one another with no gap.
      for (let i = 1; i < ops.length; i++) expect((ops[i] as Recorded).startNs).toBe((ops[i - 1] as Recorded).startNs + (ops[i - 1] as Recorded).ns);
      // The lane's one buffer, mapped for each packet in turn.
      const maps = o.dma.calls.filter((c) => c.op === 'map' && c.cpu === t).map((c) => (c.addr - GUEST_BUFFER_BASE) / PAGE_SIZE);
      expect(maps).toEqual(Array.from({ length: 6 }, () => t * 2));
      expect(o.dma.calls.filter((c) => c.cpu === t).every((c) => c.pages === 2)).toBe(true);
    }
    // Each thread posted its six packets in its one slot, and every buffer ended unmapped.
    const ring = DeviceRing.read(o.kernel.ram, 0);
    expect(ring.slice(0, 2).map((s) => [s.seq, s.state])).toEqual([0, 1].map(() => [6, SlotState.UNMAPPED]));
  });

  it('keeps queueDepth packets in flight per vCPU, each lane a thread of the replay with its own buffer and slot', async () => {
    const o = await run({ kind: 'packet-stream', ops: 8, threads: 1, queueDepth: 4 });
    // Packet i on lane i mod 4 (thread id lane x 1 + 0): lanes 0 and 2 carry TX, 1 and 3 RX.
    const lanes = o.stats.byThread();
    expect(lanes.map((ops) => names(ops))).toEqual([0, 1, 2, 3].map((lane) => (lane % 2 === 0 ? ['tx', 'map', 'io', 'unmap', 'tx', 'map', 'io', 'unmap'] : ['map', 'io', 'unmap', 'rx', 'map', 'io', 'unmap', 'rx'])));
    // Each lane's own clock starts at 0.
    expect(lanes.map((ops) => ops[0]?.startNs)).toEqual([0, 0, 0, 0]);
    expect(o.dma.calls.filter((c) => c.op === 'map').map((c) => (c.addr - GUEST_BUFFER_BASE) / PAGE_SIZE)).toEqual([0, 1, 2, 3, 0, 1, 2, 3]);
    const ring = DeviceRing.read(o.kernel.ram, 0);
    expect(ring.slice(0, 5).map((s) => s.seq)).toEqual([2, 2, 2, 2, 0]);
  });

  it('at a rate, marks each packet\'s first operation as its arrival, 1/rate apart over all threads, and paces real time', async () => {
    const rate = 400;
    const o = await run({ kind: 'packet-stream', ops: 10, threads: 2, rate });
    const arrivals = o.stats.recorded.filter((x) => x.arrival);
    expect(arrivals.map((x) => x.startNs).sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, j) => (j * 1e9) / rate));
    // Thread t takes packets t, t + 2, ...: a TX packet arrives as its stack work, an RX packet as its buffer's map.
    for (const [t, ops] of o.stats.byThread().entries()) {
      const first = ops.filter((x) => x.arrival);
      expect(names(first)).toEqual(['tx', 'map', 'tx', 'map', 'tx']);
      expect(first.map((x) => x.startNs)).toEqual([0, 1, 2, 3, 4].map((i) => ((2 * i + t) * 1e9) / rate));
      // Nothing else is an arrival: per packet the first of its four operations.
      expect(ops.filter((x, i) => x.arrival !== (i % 4 === 0))).toEqual([]);
    }
    // Real time follows the arrivals: the last packet arrives 22.5 ms in (timers are 1 ms grained).
    expect(o.run.elapsedNs).toBeGreaterThan(20e6);
  });

  it('dma=static: premaps each lane\'s buffer at setup, then a poll-mode driver posts it with a lookup per map and no unmap', async () => {
    const o = await run({ kind: 'packet-stream', ops: 8, threads: 2, queueDepth: 2 }, { dma: 'static' });
    // Two lanes per thread, each buffer mapped through the IOMMU once, as setup, and unmapped at the end.
    expect(o.setups).toEqual([STATIC_SETUP_OP, STATIC_SETUP_OP, STATIC_SETUP_OP, STATIC_SETUP_OP]);
    const maps = o.dma.calls.filter((c) => c.op === 'map');
    expect(maps.map((c) => [c.cpu, (c.addr - GUEST_BUFFER_BASE) / PAGE_SIZE]).sort((a, b) => Number(a[1]) - Number(b[1]))).toEqual([[0, 0], [0, 1], [1, 2], [1, 3]]);
    // The real unmaps come when the workload ends (dma=static's drain), one per premapped buffer.
    expect(o.dma.calls.slice(4).map((c) => c.op)).toEqual(['unmap', 'unmap', 'unmap', 'unmap']);
    const pmd = costs.of('guest.pmd_io');
    const lookup = costs.of('guest.static_lookup');
    for (const ops of o.stats.byThread()) {
      for (const x of ops) {
        if (x.name === 'tx' || x.name === 'rx') expect(x.ns).toBe(pmd);
        if (x.name === 'map' || x.name === 'unmap') expect(x.ns).toBe(lookup);
      }
    }
    expect(o.stats.count('map')).toBe(8);
    expect(o.run.counters).toEqual({ packets: 8, tx: 4, rx: 4, failed: 0 });
  });
});

describe('block', () => {
  it('maps a batch of queueDepth requests, serves them on the drive, then unmaps the batch', async () => {
    const o = await run({ kind: 'block', ops: 10, threads: 2, queueDepth: 4, granulePages: 8 });
    expect(o.stats.count('map')).toBe(10);
    expect(o.stats.count('unmap')).toBe(10);
    expect(o.stats.count('request')).toBe(10);
    expect(o.stats.count('io')).toBe(10);
    expect(o.run.counters).toEqual({ requests: 10, batches: 4, failed: 0 });
    // On each vCPU: every request's block-layer work and map, the drive serves them, then every unmap.
    for (const t of [0, 1]) {
      expect(onVcpu(o, t, 2)).toEqual([
        ...[0, 1, 2, 3].flatMap(() => ['request', 'map']), 'io', 'io', 'io', 'io', 'unmap', 'unmap', 'unmap', 'unmap',
        'request', 'map', 'io', 'unmap',
      ]);
    }
    // Request k of a batch on lane k (thread id t + 2k): lane 0 ran two requests, the others one.
    expect(o.stats.byThread().map((ops) => ops.length)).toEqual([8, 8, 4, 4, 4, 4, 4, 4]);
    for (const ops of o.stats.byThread()) {
      expect(ops.filter((x) => x.name === 'io').every((x) => x.ns === NVME_NS)).toBe(true);
    }
    expect(o.dma.calls.every((c) => c.pages === 8)).toBe(true);
    // Four slots per thread; the fifth request reused the first.
    const ring = DeviceRing.read(o.kernel.ram, 0);
    expect(ring.slice(0, 8).map((s) => s.seq)).toEqual([2, 1, 1, 1, 2, 1, 1, 1]);
  });

  it('holds an NVMe server dwellUs longer per request, and unmaps each request when its I/O ends', async () => {
    const base = await run({ kind: 'block', ops: 8, queueDepth: 4, granulePages: 8 });
    const o = await run({ kind: 'block', ops: 8, queueDepth: 4, granulePages: 8, dwellUs: 1000 });
    const lanes = o.stats.byThread();
    expect(lanes.map((ops) => names(ops))).toEqual([0, 1, 2, 3].map(() => ['request', 'map', 'io', 'unmap', 'request', 'map', 'io', 'unmap']));
    for (const [k, ops] of lanes.entries()) {
      const before = base.stats.byThread()[k] as Recorded[];
      ops.forEach((x, i) => expect(x.ns).toBe((before[i] as Recorded).ns + (x.name === 'io' ? 1e6 : 0)));
      expect(ops.filter((x) => x.name === 'io').every((x) => x.ns === NVME_NS + 1e6)).toBe(true);
      for (let i = 1; i < ops.length; i++) expect((ops[i] as Recorded).startNs).toBe((ops[i - 1] as Recorded).startNs + (ops[i - 1] as Recorded).ns);
    }
  });

  it('at a rate (IOPS), each request\'s block-layer work is an arrival 1/rate apart', async () => {
    const rate = 1000;
    const o = await run({ kind: 'block', ops: 9, threads: 3, queueDepth: 2, rate });
    const arrivals = o.stats.recorded.filter((x) => x.arrival);
    expect(arrivals.every((x) => x.name === 'request')).toBe(true);
    expect(arrivals.map((x) => x.startNs).sort((a, b) => a - b)).toEqual(Array.from({ length: 9 }, (_, j) => (j * 1e9) / rate));
    expect(o.stats.recorded.filter((x) => x.name === 'request').every((x) => x.arrival)).toBe(true);
    // Three requests per thread, batches of 2 and 1: lane 0 (ids 0..2) ran two, lane 1 (ids 3..5) one.
    const one = ['request', 'map', 'io', 'unmap'];
    expect(o.stats.byThread().map((ops) => names(ops))).toEqual([...[0, 1, 2].map(() => [...one, ...one]), ...[0, 1, 2].map(() => one)]);
  });

  it('dma=static: premaps one buffer per lane at setup and maps none per request', async () => {
    const o = await run({ kind: 'block', ops: 20, threads: 2, queueDepth: 3 }, { dma: 'static' });
    expect(o.setups).toHaveLength(6);
    expect(o.dma.calls.filter((c) => c.op === 'map')).toHaveLength(6);
    expect(o.dma.calls.filter((c) => c.op === 'unmap')).toHaveLength(6);
    expect(o.stats.count('map')).toBe(20);
    expect(o.run.counters).toEqual({ requests: 20, batches: 8, failed: 0 });
    const pmd = costs.of('guest.pmd_io');
    expect(o.stats.recorded.filter((x) => x.name === 'request').every((x) => x.ns === pmd)).toBe(true);
    // Ten requests per thread in batches of 3, 3, 3, 1: the buffers were posted 4, 3 and 3 times.
    const ring = DeviceRing.read(o.kernel.ram, 0);
    expect(ring.slice(0, 6).map((s) => [s.seq, s.state])).toEqual([4, 3, 3, 4, 3, 3].map((n) => [n, SlotState.UNMAPPED]));
  });
});

describe('sva-unmap-storm', () => {
  it('invalidates a fresh VA range per munmap through the architecture\'s own DMA API', async () => {
    const coherent = new FakeSvaDma();
    const o = await run({ kind: 'sva-unmap-storm', ops: 7, threads: 2, granulePages: 4 }, { coherent, devices: 2 });
    expect(o.stats.count('invalidate')).toBe(7);
    expect(o.stats.byThread().map((ops) => ops.length)).toEqual([4, 3]);
    expect(o.dma.calls).toHaveLength(0);
    expect(o.run.counters).toEqual({ munmaps: 7, pages: 28, failed: 0 });
    for (const t of [0, 1]) {
      const calls = coherent.calls.filter((c) => c.cpu === t);
      expect(calls.every((c) => c.op === 'invalidate' && c.device === t && c.pages === 4)).toBe(true);
      const vas = calls.map((c) => c.addr);
      expect(new Set(vas).size).toBe(vas.length);
      // Top-down, 16 KiB apart, in the thread's own slice of the process's mmap area.
      vas.forEach((va, i) => expect(va).toBe(0x7f00_0000_0000 - t * 0x4000_0000 - (i + 1) * 4 * PAGE_SIZE));
    }
  });

  it('refuses, naming the model, when the architecture has no SVA, before doing anything', async () => {
    const coherent = new FakeDma();
    const err = await run({ kind: 'sva-unmap-storm', ops: 3 }, { coherent, ringBuffers: 2 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(VmmsimError);
    expect((err as VmmsimError).code).toBe('E_NOT_SUPPORTED');
    expect((err as VmmsimError).message).toContain('model fake');
    expect(coherent.calls).toHaveLength(0);
  });
});

describe('every workload', () => {
  const cases: Partial<WorkloadSpec>[] = [
    { kind: 'dma-map-benchmark', ops: 30, threads: 3, dwellUs: 50, gapUs: 20 },
    { kind: 'packet-stream', ops: 30, threads: 3, dwellUs: 50 },
    { kind: 'packet-stream', ops: 30, threads: 3, rate: 20_000 },
    { kind: 'block', ops: 30, threads: 3, queueDepth: 4, rate: 20_000 },
    { kind: 'packet-stream', ops: 30, threads: 3, queueDepth: 4, gapUs: 10 },
    { kind: 'block', ops: 30, threads: 3, queueDepth: 2, gapUs: 10 },
    { kind: 'sva-unmap-storm', ops: 30, threads: 3, gapUs: 10 },
  ];
  for (const w of cases) {
    it(`gives the same modeled timeline twice: ${JSON.stringify(w)}`, async () => {
      const a = await run(w, { coherent: new FakeSvaDma(), devices: 2, ringBuffers: 2 });
      const b = await run(w, { coherent: new FakeSvaDma(), devices: 2, ringBuffers: 2 });
      expect(b.stats.byThread()).toEqual(a.stats.byThread());
      expect(b.kernel.vcpuNs).toEqual(a.kernel.vcpuNs);
      expect(b.run.counters).toEqual(a.run.counters);
      expect(a.stats.recorded.length).toBeGreaterThan(0);
      // Each thread's operations follow one another on its clock.
      for (const ops of a.stats.byThread()) {
        for (let i = 1; i < ops.length; i++) expect((ops[i] as Recorded).startNs).toBeGreaterThanOrEqual((ops[i - 1] as Recorded).startNs + (ops[i - 1] as Recorded).ns);
      }
    });
  }

  it('declares its operations even when none runs', async () => {
    // The deadline passes before the first packet: no operation runs.
    const o = await run({ kind: 'packet-stream', ops: 0, durationSec: 1e-9, threads: 1 }, { devices: 1 });
    expect(o.stats.recorded).toEqual([]);
    expect(o.stats.opReports().map((r) => r.op).sort()).toEqual(['io', 'map', 'rx', 'tx', 'unmap']);
    const sva = await run({ kind: 'sva-unmap-storm', ops: 1 }, { coherent: new FakeSvaDma() });
    expect(sva.stats.opReports().map((r) => r.op)).toEqual(['invalidate']);
  });
});

describe('workload scenario keys', () => {
  const refused = (doc: unknown): VmmsimError => {
    try {
      resolveScenario(doc);
    } catch (err) {
      if (err instanceof VmmsimError) return err;
      throw err;
    }
    throw new Error('expected the scenario to be refused');
  };

  it('runs open loop for dma-map-benchmark, packet-stream and block only', () => {
    expect(resolveScenario({ workload: { kind: 'packet-stream', rate: 1e5 } }).workload.rate).toBe(1e5);
    expect(resolveScenario({ workload: { kind: 'block', rate: 5000 } }).workload.rate).toBe(5000);
    expect(resolveScenario({ workload: { kind: 'dma-map-benchmark', rate: 5000 } }).workload.rate).toBe(5000);
    for (const kind of ['sva-unmap-storm', 'trace-replay']) {
      const e = refused({ workload: { kind, rate: 10 } });
      expect(e.code).toBe('E_NOT_SUPPORTED');
      expect(e.message).toContain(`scenario key workload.rate: 10 is not supported yet with workload.kind ${kind}`);
    }
  });

  it('refuses workload.kind static, naming dma=static in its place', () => {
    const e = refused({ workload: { kind: 'static' } });
    expect(e.code).toBe('E_SCENARIO_FIELD');
    expect(e.message).toContain('scenario key workload.kind: "static" is no longer a value of this key');
    expect(e.message).toContain('set dma to static with workload.kind packet-stream or block');
  });

  it('refuses settings a workload would ignore, and runs that never end', () => {
    expect(refused({ workload: { kind: 'packet-stream', rate: 10, gapUs: 5 } }).message).toContain('workload.gapUs');
    expect(refused({ workload: { kind: 'sva-unmap-storm', dwellUs: 5 } }).message).toContain('workload.dwellUs');
    const forever = refused({ workload: { kind: 'block', ops: 0 } });
    expect(forever.code).toBe('E_SCENARIO_FIELD');
    expect(forever.message).toContain('workload.durationSec');
    expect(resolveScenario({ workload: { kind: 'block', ops: 0, durationSec: 1 } }).workload.ops).toBe(0);
  });

  it('takes arrivals constant (the default) or poisson, and poisson only at a rate', () => {
    expect(resolveScenario({}).workload.arrivals).toBe('constant');
    expect(resolveScenario({ workload: { rate: 100, arrivals: 'poisson' } }).workload.arrivals).toBe('poisson');
    const typo = refused({ workload: { rate: 100, arrivals: 'poison' } });
    expect(typo.code).toBe('E_SCENARIO_FIELD');
    expect(typo.message).toContain('did you mean "poisson"');
    const closed = refused({ workload: { arrivals: 'poisson' } });
    expect(closed.code).toBe('E_SCENARIO_FIELD');
    expect(closed.message).toContain('scenario key workload.arrivals');
    expect(closed.message).toContain('workload.rate');
  });

  it('takes queueDepth 0..256, 0 (the default) meaning the workload\'s own', () => {
    expect(resolveScenario({}).workload.queueDepth).toBe(0);
    expect(resolveScenario({ workload: { kind: 'block', queueDepth: 4 } }).workload.queueDepth).toBe(4);
    expect(refused({ workload: { queueDepth: -1 } }).code).toBe('E_SCENARIO_FIELD');
    expect(refused({ workload: { queueDepth: 257 } }).code).toBe('E_SCENARIO_FIELD');
    // The workload's own: packet-stream NAPI_POLL_WEIGHT 64, block fio's iodepth 32, 1 for the others.
    expect(queueDepthOf(spec({ kind: 'packet-stream', queueDepth: 0 }))).toBe(64);
    expect(queueDepthOf(spec({ kind: 'block', queueDepth: 0 }))).toBe(32);
    expect(queueDepthOf(spec({ kind: 'dma-map-benchmark', queueDepth: 0 }))).toBe(1);
    expect(queueDepthOf(spec({ kind: 'block', queueDepth: 4 }))).toBe(4);
  });
});
