import { GUEST_BUFFER_BASE } from '../../machine/board.js';
import { nowNs } from '../../runtime/clock.js';
import { DeviceRing, RING_SLOTS } from '../../machine/device-ring.js';
import type { Workload__Output } from '../../runtime/generated/vmmsim/v1/Workload.js';
import { PAGE_SIZE } from '../../machine/memory.js';
import type { OpContext } from '../../runtime/op-context.js';
import { deviceOpName, type DmaApi, type GuestDevice, type GuestKernel } from '../driver.js';
import type { OpStats } from '../op-stats.js';
import { RESIZE_OPS } from '../../machine/virtio-mem.js';
import { VirtioMemDriver } from '../virtio-mem.js';
import { ThreadArrivals } from './arrivals.js';
import { DEFAULT_QUEUE_DEPTH } from '../../scenario/schema.js';
import { PAGE_POOL_SETUP_OP, STATIC_SETUP_OP } from '../../machine/setup-ops.js';
import type { CostStep } from '../../cost/steps.js';
import { ModeledOrder } from '../modeled-order.js';

export interface WorkloadResult {
  elapsedNs: number;
  /** Per thread (vCPU) the sum of its operations' modeled time; the run's modeled length is the max. */
  modeledPerThreadNs: number[];
  operations: number;
  /**
   * Application workloads: the uncontended modeled clock at the end of each thread of the queueing
   * replay, by its id (laneThread): every vCPU's lanes. Absent: the vCPUs' clocks are the threads'.
   */
  threadEndNs?: number[];
}

/** A finished workload: its result and what it counted itself (packets, I/Os, trace lines...). */
export interface WorkloadRun extends WorkloadResult {
  counters: Record<string, number>;
}

/** The workload keys as the guest gets them (a queueDepth of 0, the protocol's default, means 1). */
export type WorkloadSpec = Workload__Output;

/** Everything a workload needs from the guest: its kernel, its DMA API in the scenario's mode, the architecture's own DMA API, and where results go. */
export interface WorkloadEnv {
  kernel: GuestKernel;
  /** The streaming DMA API in the scenario's DMA mode (strict, lazy, static, bounce). */
  dma: DmaApi;
  /** The architecture's DMA API itself, as dma_alloc_coherent and the IOMMU driver's own paths use it. */
  coherent: DmaApi;
  stats: OpStats;
  w: WorkloadSpec;
  /** A point of the run where every vCPU stops until something is done (workload.migration). */
  step?: WorkloadStep;
  /**
   * Run after each operation, outside its time (Topology.floor_peer: one round trip of the
   * transport floor), so the floor is measured in the same machine state as the operations.
   */
  probe?: () => Promise<void>;
}

/** A stop the threads make together: each calls `reach` before every operation and `leave` when it has none left. */
export interface WorkloadStep {
  /** Resolves when thread t may run its next operation. */
  reach(t: number): Promise<void>;
  leave(t: number): void;
}

/** workload.queueDepth, or the workload's own when it is 0 (DEFAULT_QUEUE_DEPTH; 1 for the others). */
export function queueDepthOf(w: WorkloadSpec): number {
  const q = w.queueDepth ?? 0;
  return q > 0 ? q : (DEFAULT_QUEUE_DEPTH[w.kind] ?? 1);
}

/** Bytes of Ethernet framing a packet adds on the wire: preamble and SFD 8, header 14, FCS 4, inter-frame gap 12. */
export const ETHERNET_FRAMING_BYTES = 38;

/**
 * What an application workload's I/O costs besides its map and unmap (scenario keys device.nic.*,
 * device.nvme.*, workload.packetBytes): the per-I/O CPU step of each direction, and the device's
 * and the link's time per I/O in whole ns.
 */
export interface IoModel {
  /** dma=static: a poll-mode driver does the I/O (guest.pmd_io), its buffers premapped at setup. */
  pollMode: boolean;
  txStep: CostStep;
  rxStep: CostStep;
  blockStep: CostStep;
  nicNs: number;
  wireNs: number;
  nvmeNs: number;
  nvmeServers: number;
  nvmeLinkNs: number;
}

export function ioModelOf(env: WorkloadEnv): IoModel {
  const { w, kernel } = env;
  const d = kernel.env.topology.device;
  const pollMode = kernel.env.topology.dma === 'static';
  const nic = d?.nic;
  const nvme = d?.nvme;
  const bytes = Math.max(1, w.granulePages) * PAGE_SIZE;
  const whole = (ns: number): number => (Number.isFinite(ns) ? Math.max(1, Math.round(ns)) : 1);
  return {
    pollMode,
    txStep: pollMode ? 'guest.pmd_io' : 'net.tx_packet',
    rxStep: pollMode ? 'guest.pmd_io' : 'net.rx_packet',
    blockStep: pollMode ? 'guest.pmd_io' : 'block.request',
    nicNs: whole(1000 / (nic?.mpps || 115)),
    wireNs: whole((((w.packetBytes || 1500) + ETHERNET_FRAMING_BYTES) * 8) / (nic?.lineGbps || 100)),
    nvmeNs: whole((nvme?.serviceUs || 78) * 1000),
    nvmeServers: Math.max(1, nvme?.parallelism || 78),
    nvmeLinkNs: whole(bytes / (nvme?.linkGBps || 7)),
  };
}

/** Slots at the end of each device ring hold its receive buffers; the workloads use the rest. */
export const MAX_RECEIVE_BUFFERS = 64;
const RECEIVE_BUFFER_BASE = 0x3_0000_0000;
export const WORKLOAD_SLOTS = RING_SLOTS - MAX_RECEIVE_BUFFERS;
/** The workloads' buffers live in the 4 GiB of guest RAM from GUEST_BUFFER_BASE (bounce pools and receive buffers sit above). */
const BUFFER_WINDOW_PAGES = 0x10_0000;

/**
 * Each device's receive ring: buffers its driver maps at probe and keeps mapped, where most of the
 * device's DMA lands. They are set up before the measured operations and not counted among them,
 * and mapped as coherent memory is, whatever the streaming DMA mode (no bouncing, no reuse).
 */
async function mapReceiveRings(kernel: GuestKernel, coherent: DmaApi, rings: Map<number, DeviceRing>): Promise<void> {
  const n = Math.min(kernel.env.topology.device?.ringBuffers ?? 0, MAX_RECEIVE_BUFFERS);
  for (const d of kernel.devices) {
    for (let i = 0; i < n; i++) {
      const ctx = kernel.env.newContext(0, 0);
      const pa = RECEIVE_BUFFER_BASE + (d.index * MAX_RECEIVE_BUFFERS + i) * PAGE_SIZE;
      const iova = await coherent.map(ctx, 0, d, pa, 1);
      if (iova < 0) throw new Error(`mapping the receive ring of device ${d.index} failed (${iova})`);
      rings.get(d.index)?.post(RING_SLOTS - 1 - i, iova, 1);
    }
  }
}

function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * What the threads (vCPUs) of a workload share: each thread's modeled clock (kernel.vcpuNs), the
 * operation ids, the device rings, the run's real-time start and deadline. Which thread runs which
 * operation, and how many, follow from the settings alone (fixed shares), never from measured
 * timing, so every modeled number is the same on every run; real time only paces and measures.
 */
export class WorkloadThreads {
  readonly count: number;
  readonly rings: Map<number, DeviceRing>;
  private nextOpId = 1;
  private t0 = 0;
  /** workload.virtioMem: the driver, and operations thread 0 has run since its last resize. */
  private readonly virtioMem: VirtioMemDriver | undefined;
  private sinceResize = 0;
  private deadline = Number.POSITIVE_INFINITY;
  /** Each thread takes the VM's devices in turn, item by item (see device()). */
  private readonly inTurn: boolean;
  /**
   * Application workloads: each vCPU's I/Os in flight, as lanes. In the queueing replay each lane is
   * a thread of its own (laneThread) whose operations run one after another, and every operation
   * that runs on the vCPU holds it (vcpuResource), so a vCPU's lanes take turns on it while the
   * device and the link serve the I/Os of other lanes. 0: not one (a thread is its vCPU).
   */
  private readonly lanes: number;
  /** Each lane's uncontended modeled clock, by laneThread id. */
  private readonly laneNs: number[] = [];

  constructor(
    private readonly env: WorkloadEnv,
    ops: readonly string[],
    o: { lanes?: number } = {},
  ) {
    const { kernel, stats, w } = env;
    this.count = Math.max(1, w.threads);
    // Declared up front so they are reported even when they never run.
    for (const op of ops) stats.declare(op);
    // Emulated devices beside assigned ones: each thread takes every device in turn, and their
    // operations are reported apart.
    const emulated = kernel.devices.find((d) => d.emulated);
    this.inTurn = emulated !== undefined;
    if (emulated) for (const op of ops) stats.declare(deviceOpName(op, emulated));
    const vm = w.virtioMem;
    if (vm && vm.everyOps > 0) {
      this.virtioMem = new VirtioMemDriver(kernel, Math.max(1, vm.blocks));
      for (const op of RESIZE_OPS) stats.declare(op);
    }
    kernel.vcpuNs.length = 0;
    for (let t = 0; t < this.count; t++) kernel.vcpuNs.push(0);
    this.lanes = Math.max(0, o.lanes ?? 0);
    for (let k = 0; k < this.count * this.lanes; k++) this.laneNs.push(0);
    kernel.vcpus?.reset(this.count);
    // The vCPUs run concurrently: where order matters (flush queues), they take turns in modeled time.
    kernel.order = this.count > 1 ? new ModeledOrder(this.count, kernel.vcpus) : undefined;
    this.rings = new Map(kernel.devices.map((d) => [d.index, new DeviceRing(kernel.ram, d.index)]));
  }

  /** Maps the devices' receive rings (not measured), then starts the run's real clock and deadline. */
  async begin(): Promise<void> {
    await mapReceiveRings(this.env.kernel, this.env.coherent, this.rings);
    this.t0 = nowNs();
    this.deadline = this.env.w.durationSec > 0 ? this.t0 + this.env.w.durationSec * 1e9 : Number.POSITIVE_INFINITY;
  }

  /** Thread t's fixed share of `total` items (all of them when total is 0: until the deadline). */
  share(t: number, total = this.env.w.ops): number {
    return total > 0 ? Math.floor(total / this.count) + (t < total % this.count ? 1 : 0) : Number.POSITIVE_INFINITY;
  }

  /** False once durationSec of real time has passed. */
  running(): boolean {
    return nowNs() < this.deadline;
  }

  /**
   * The device of thread t's item i (an iteration, packet, batch, buffer or munmap). Threads are
   * spread over the guest's devices: thread t drives device t mod n. A VM with emulated devices
   * beside its assigned ones has every thread take all its devices in turn instead, item by item
   * from that one (device (t + i) mod n), so each thread runs operations on both kinds.
   */
  device(t: number, i = 0): GuestDevice {
    const n = this.env.kernel.devices.length;
    const d = this.env.kernel.devices[(this.inTurn ? t + i : t) % n];
    if (!d) throw new Error('the guest has no device');
    return d;
  }

  /** The ring of the device of thread t's item i. */
  ring(t: number, i = 0): DeviceRing {
    return this.rings.get(this.device(t, i).index) as DeviceRing;
  }

  /**
   * Ring slot k of the `perThread` slots thread t uses in its device's ring. Threads that share a
   * device get consecutive groups (when threads take devices in turn, any thread may meet any
   * other on a device: each has its own group); past the ring's WORKLOAD_SLOTS they wrap and share
   * slots (the device then sees the buffer posted last in a slot).
   */
  slot(t: number, k: number, perThread: number): number {
    const group = this.inTurn ? t : Math.floor(t / this.env.kernel.devices.length);
    return (group * perThread + k) % WORKLOAD_SLOTS;
  }

  /** Guest-physical address of buffer `index` of `pages` pages, in the workloads' buffer window. */
  static bufferPa(index: number, pages: number): number {
    return GUEST_BUFFER_BASE + (index % Math.floor(BUFFER_WINDOW_PAGES / pages)) * pages * PAGE_SIZE;
  }

  /** Thread t's modeled clock. */
  clock(t: number): number {
    return this.env.kernel.vcpuNs[t] ?? 0;
  }

  /** Modeled time passes on thread t with no operation (think time, I/O); on its lane too in an application workload. */
  advance(t: number, ns: number, lane = 0): void {
    this.env.kernel.vcpuNs[t] = this.clock(t) + ns;
    this.env.kernel.order?.at(t, this.clock(t));
    if (this.lanes > 0) {
      const id = this.laneThread(t, lane);
      this.laneNs[id] = (this.laneNs[id] ?? 0) + ns;
    }
  }

  /** The queueing replay's thread of vCPU t's lane (lane 0 is the vCPU's own id). */
  laneThread(t: number, lane: number): number {
    return t + (lane % Math.max(1, this.lanes)) * this.count;
  }

  /** The vCPU as a resource of the queueing replay: held by every operation that runs on it. */
  vcpuResource(t: number): string {
    return `vm${this.env.kernel.env.self.index ?? 0}.vcpu${t}`;
  }

  /**
   * dma=static in an application workload: thread t maps each of its buffers once before its I/Os
   * (dma=static's first map of a buffer goes through the IOMMU, later ones only look it up), each
   * reported as the setup operation static-setup: on no vCPU, apart from the steady state.
   */
  async premap(t: number, buffers: readonly { device: GuestDevice; pa: number; pages: number }[]): Promise<void> {
    if (this.env.kernel.env.topology.dma !== 'static') return;
    for (const b of buffers) {
      let status = 0;
      await this.env.kernel.setup(STATIC_SETUP_OP, async (ctx) => {
        status = await this.env.dma.map(ctx, t, b.device, b.pa, b.pages);
      });
      if (status < 0) this.env.stats.fail(STATIC_SETUP_OP);
    }
  }

  /**
   * device.nic.pagePool: thread t maps each of its RX buffers once into the driver's page_pool
   * (page_pool_dma_map), each reported as the setup operation page-pool-setup: on no vCPU, apart
   * from the steady state. Returns each buffer's IOVA (-1 where the map failed).
   */
  async poolMap(t: number, buffers: readonly { device: GuestDevice; pa: number; pages: number }[]): Promise<number[]> {
    const iovas: number[] = [];
    for (const b of buffers) {
      let iova = -1;
      await this.env.kernel.setup(PAGE_POOL_SETUP_OP, async (ctx) => {
        iova = await this.env.dma.map(ctx, t, b.device, b.pa, b.pages);
      });
      if (iova < 0) this.env.stats.fail(PAGE_POOL_SETUP_OP);
      iovas.push(iova);
    }
    return iovas;
  }

  /**
   * An I/O on the device and the link of an application workload, on thread t's lane: a fresh
   * context whose charges (device and link time, hw.* steps) are made under the holds `fn` takes;
   * it holds no vCPU and moves only its lane's clock. Recorded like any operation.
   */
  async io(name: string, t: number, lane: number, fn: (ctx: OpContext) => Promise<void>): Promise<void> {
    const ctx = this.env.kernel.env.newContext(this.nextOpId++, 0);
    const id = this.laneThread(t, lane);
    const start = this.laneNs[id] ?? 0;
    const m0 = nowNs();
    await fn(ctx);
    this.laneNs[id] = start + ctx.modeledNs;
    // The warm-up counts per vCPU, not per lane.
    this.env.stats.record(name, nowNs() - m0, ctx, id, start, false, t);
  }

  /**
   * Thread t's open-loop arrivals (workload.rate > 0: `rate` per second over the VM's threads,
   * spaced as workload.arrivals says), or undefined in closed loop.
   */
  arrivals(t: number): ThreadArrivals | undefined {
    const { w, kernel } = this.env;
    if (!(w.rate > 0)) return undefined;
    return new ThreadArrivals({ rate: w.rate, threads: this.count, process: w.arrivals === 'poisson' ? 'poisson' : 'constant', seed: kernel.env.topology.seed, vm: kernel.env.self.index ?? 0 }, t);
  }

  /**
   * Runs one operation on thread t in a fresh context: measures it, moves the thread's clock by
   * its modeled time, and records it (or counts it failed when `fn` returns a negative errno).
   * `arrivalNs`: an open-loop arrival, due at that time of the schedule (wait for it with `due`).
   * It starts there on the thread's uncontended modeled clock, even if the thread's previous
   * operation ended later: the queueing model then starts it when the thread is free and counts its
   * latency from the arrival, and the operations that follow it move by what it finished late. Its
   * measured latency counts from the same instant on the real clock (the run's start + arrivalNs)
   * when it started late, so neither clock omits the wait of a late send (coordinated omission).
   */
  async op(name: string, t: number, fn: (ctx: OpContext) => Promise<number>, arrivalNs?: number, lane = 0): Promise<number> {
    // Before the clocks are read: a step may hold the thread and move its clock. While it waits
    // there it bounds no decision in modeled time (every clock is past it when it resumes).
    if (this.env.step) {
      const vcpus = this.env.kernel.vcpus;
      vcpus?.park(t);
      this.env.kernel.order?.park(t);
      try {
        await this.env.step.reach(t);
      } finally {
        this.env.kernel.order?.unpark(t);
        vcpus?.unpark(t);
      }
    }
    const r = await this.timed(name, t, fn, arrivalNs, lane);
    if (this.env.probe) await this.env.probe();
    if (t === 0 && this.virtioMem && ++this.sinceResize >= (this.env.w.virtioMem?.everyOps ?? 0)) {
      // workload.virtioMem: a resize after thread 0's operation, an operation of its own (the host
      // asked, and the vCPU that serves the driver's work does it).
      this.sinceResize = 0;
      const driver = this.virtioMem;
      await this.timed(driver.next(), 0, (ctx) => driver.resize(ctx));
    }
    return r;
  }

  /** One operation on thread t in a fresh context, timed on both clocks and recorded (see op). */
  private async timed(name: string, t: number, fn: (ctx: OpContext) => Promise<number>, arrivalNs?: number, lane = 0): Promise<number> {
    const ctx = this.env.kernel.env.newContext(this.nextOpId++, 0);
    const start = arrivalNs ?? this.clock(t);
    // While it runs, the vCPU's clock is the operation's start (GuestKernel.vcpuNs).
    this.env.kernel.vcpuNs[t] = start;
    this.env.kernel.vcpus?.begin(t, ctx);
    const order = this.env.kernel.order;
    order?.at(t, start);
    const m0 = nowNs();
    let r: number;
    try {
      // In an application workload the operation runs on its vCPU: it holds it throughout.
      r = this.lanes > 0 ? await ctx.hold(this.vcpuResource(t), () => fn(ctx)) : await fn(ctx);
    } finally {
      this.env.kernel.vcpuNs[t] = start + ctx.modeledNs;
      this.env.kernel.vcpus?.end(t);
    }
    const m1 = nowNs();
    // Its place in the replay: its lane, after the lane's previous operation (or at its arrival).
    const id = this.lanes > 0 ? this.laneThread(t, lane) : t;
    const at = this.lanes > 0 ? (arrivalNs ?? this.laneNs[id] ?? 0) : start;
    if (this.lanes > 0) this.laneNs[id] = Math.max(at, this.laneNs[id] ?? 0) + ctx.modeledNs;
    // Closed loop: the next operation starts after this one. An arrival's successor starts at its
    // own (later) arrival, perhaps before this one's end: the floor stays at this start.
    if (arrivalNs === undefined) order?.at(t, start + ctx.modeledNs);
    // Timers are millisecond-grained, so an arrival may also go out a little early: then it is
    // timed from when it really started, never for less than its own run.
    const from = arrivalNs === undefined ? m0 : Math.min(m0, this.t0 + arrivalNs);
    if (r < 0) this.env.stats.fail(name);
    else this.env.stats.record(name, m1 - from, ctx, id, at, arrivalNs !== undefined, t);
    return r;
  }

  /** What the workload's virtio-mem driver counted (nothing when the scenario resizes nothing). */
  resizeCounters(): Record<string, number> {
    return this.virtioMem ? { ...this.virtioMem.counters } : {};
  }

  /**
   * `us` microseconds with nothing for thread t to do (the device doing the I/O, think time): real
   * time as a timer, modeled time as set (not as long as the timer really took).
   */
  async pause(t: number, us: number, lane = 0): Promise<void> {
    if (us <= 0) return;
    await sleepMs(us / 1000);
    this.advance(t, us * 1000, lane);
  }

  /** Real time only: the device keeps what was posted `us` microseconds (its modeled time is the I/O's). */
  static async dwell(us: number): Promise<void> {
    if (us > 0) await sleepMs(us / 1000);
  }

  /** Waits until `ns` after the run's start in real time (an arrival's send time); never waits when already late. */
  async due(ns: number): Promise<void> {
    // Timers are millisecond-grained: wait only when a whole one is ahead, and catch up after. A
    // timer can also fire early (libuv fires on the loop's cached millisecond clock, and the delay
    // is cut to whole ms), so look again after it: an arrival goes out at most 1 ms early.
    for (let ahead = ns - (nowNs() - this.t0); ahead > 1e6; ahead = ns - (nowNs() - this.t0)) await sleepMs(ahead / 1e6);
  }

  /** Lets timers and I/O run between operations that never wait (a loop that only touches guest RAM). */
  static yieldToLoop(): Promise<void> {
    return new Promise((resolve) => setImmediate(resolve));
  }

  /** Runs every thread to its end, flushes what the DMA API deferred, and gives the run's result. */
  async run(thread: (t: number) => Promise<void>, counters: () => Record<string, number>): Promise<WorkloadRun> {
    await Promise.all(Array.from({ length: this.count }, (_, t) => thread(t).finally(() => {
      this.env.kernel.order?.finish(t);
      this.env.step?.leave(t);
      // Done: it bounds nothing any more.
      this.env.kernel.vcpus?.park(t);
    })));
    this.env.kernel.order = undefined;
    await this.env.dma.drain();
    return {
      elapsedNs: nowNs() - this.t0,
      modeledPerThreadNs: this.env.kernel.vcpuNs,
      operations: this.nextOpId - 1,
      counters: { ...counters(), ...this.resizeCounters() },
      ...(this.lanes > 0 ? { threadEndNs: [...this.laneNs] } : {}),
    };
  }
}
