/**
 * Queueing in modeled time. Every operation reports, in its own uncontended modeled time, when it
 * asked for each contended resource (a vCPU, the VMM's lock, a VFIO container lock, a pSMMU CMDQ,
 * a VCMDQ) and how long it kept it. This replays all operations as a discrete-event simulation
 * ordered by modeled time alone: a resource serves its waiters first come, first served (ties by
 * thread, then by operation), an operation that waits is late by that much for everything after,
 * and each thread's next operation starts as much later as its previous one finished late. Real
 * interleaving of the processes never enters, so the result is the same on every run.
 *
 * A resource is one server unless its name ends in `[k]` (serversOf): then k operations may hold it
 * at once (a device with internal parallelism, an NVMe drive serving k requests together), and the
 * next waits for the first of them to finish.
 */

/** How many operations may hold `resource` at once: k for a name ending in `[k]`, else 1. */
export function serversOf(resource: string): number {
  const m = /\[(\d+)\]$/.exec(resource);
  const k = m ? Number(m[1]) : 1;
  return k >= 1 ? k : 1;
}

export interface ResourceUse {
  resource: string;
  /** Offset from the start of the operation, uncontended. */
  atNs: number;
  ns: number;
}

export interface TimedOp {
  /** The issuing thread (vCPU); its operations run one after another in the order given. */
  thread: number;
  /** Start on the thread's uncontended modeled clock. */
  startNs: number;
  /** Uncontended modeled duration. */
  ns: number;
  holds: readonly ResourceUse[];
  /**
   * Open loop: the operation arrives at startNs whatever happened before (trace replay with its
   * timestamps, a load test's arrivals), so it starts at max(startNs, the thread's previous end).
   * Closed loop (default): it follows the previous operation, as late as that one finished late.
   */
  arrival?: boolean;
}

export interface ResourceStats {
  resource: string;
  holds: number;
  busyNs: number;
  waitNs: number;
  maxWaitNs: number;
  /** Most operations waiting at once. */
  maxQueue: number;
  /** Operations that may hold it at once (serversOf); absent for one. */
  servers?: number;
  /**
   * Time it was held after the run's end (QueueingOptions.foreground): a lazy flush queue's timer
   * that fires after the last I/O. Not in busyNs, which counts the run alone. Absent when none.
   */
  afterEndNs?: number;
  /**
   * Of busyNs, the time its holders spent waiting for another resource while they held this one (a
   * vCPU spinning on the VMM's lock): busy, but not working. Absent when none.
   */
  blockedNs?: number;
}

export interface QueueingResult {
  /**
   * Per operation, in input order: contended modeled latency (its own time plus its waits; for an
   * arrival, from its arrival time).
   */
  latencyNs: number[];
  /** Per operation, in input order: what it waited for resources. */
  waitNs: number[];
  /**
   * Every wait, by operation (input order) and resource: the parts of waitNs. An operation that
   * waited for a resource twice has two entries.
   */
  waits: { op: number; resource: string; ns: number }[];
  /**
   * Per operation, in input order: how long an arrival waited for its thread to finish the
   * operations before it (0 for the rest): the part of its latency that is neither its own time
   * nor a resource's wait.
   */
  backlogNs: number[];
  /** Per thread: how much later than uncontended its last operation finished. */
  threadShiftNs: Map<number, number>;
  /**
   * Per thread: the time its operations ran, from each one's start to its end (waits for
   * resources included, an arrival's backlog not): how busy the thread (a vCPU) kept.
   */
  threadBusyNs: Map<number, number>;
  resources: ResourceStats[];
}

interface Action {
  offset: number;
  acquire: boolean;
  resource: string;
}

interface OpState {
  index: number;
  actions: Action[];
  next: number;
  /** Contended time at which the operation was at offset `at`. */
  clock: number;
  at: number;
  start: number;
  waited: number;
  /** The resources it holds now, each with the contended time it got it. */
  held: Map<string, number>;
}

interface Event {
  time: number;
  thread: number;
  op: number;
  seq: number;
}

interface Resource {
  stats: ResourceStats;
  servers: number;
  /** Operations holding it now. */
  inUse: number;
  waiting: { op: OpState; arrived: number; thread: number }[];
}

/** A binary min-heap of events ordered by (time, thread, op, seq). */
class EventHeap {
  private readonly items: Event[] = [];

  get size(): number {
    return this.items.length;
  }

  private static less(a: Event, b: Event): boolean {
    return a.time !== b.time ? a.time < b.time : a.thread !== b.thread ? a.thread < b.thread : a.op !== b.op ? a.op < b.op : a.seq < b.seq;
  }

  push(e: Event): void {
    const h = this.items;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!EventHeap.less(h[i] as Event, h[p] as Event)) break;
      [h[i], h[p]] = [h[p] as Event, h[i] as Event];
      i = p;
    }
  }

  pop(): Event | undefined {
    const h = this.items;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && EventHeap.less(h[l] as Event, h[m] as Event)) m = l;
        if (r < h.length && EventHeap.less(h[r] as Event, h[m] as Event)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m] as Event, h[i] as Event];
        i = m;
      }
    }
    return top;
  }
}

function actionsOf(op: TimedOp): Action[] {
  // At equal offsets: releases first (back-to-back holds do not queue on themselves), then
  // zero-length uses (still wait for a busy resource: acquire and release at once), then acquires.
  const keyed: { a: Action; rank: number; i: number }[] = [];
  op.holds.forEach((h, i) => {
    const end = h.atNs + h.ns;
    const rank = h.ns > 0 ? 2 : 1;
    keyed.push({ a: { offset: h.atNs, acquire: true, resource: h.resource }, rank, i: 2 * i });
    keyed.push({ a: { offset: end, acquire: false, resource: h.resource }, rank: h.ns > 0 ? 0 : 1, i: 2 * i + 1 });
  });
  return keyed.sort((x, y) => x.a.offset - y.a.offset || x.rank - y.rank || x.i - y.i).map((x) => x.a);
}

export interface QueueingOptions {
  /**
   * The threads whose last operation ends the run (the workload's vCPU lanes). Operations of other
   * threads (a flush queue's timer) may still hold resources after that end: that time is kept
   * apart (afterEndNs), so busyNs, and a utilization over the run, count the run alone. Default:
   * every thread.
   */
  foreground?: ReadonlySet<number>;
}

export function simulateQueueing(ops: readonly TimedOp[], options: QueueingOptions = {}): QueueingResult {
  const foreground = options.foreground;
  /** Holds by operations of other threads than the foreground: [resource, from, to]. */
  const background: [Resource, number, number][] = [];
  const latencyNs = new Array<number>(ops.length).fill(0);
  const waitNs = new Array<number>(ops.length).fill(0);
  const backlogNs = new Array<number>(ops.length).fill(0);
  const waits: QueueingResult['waits'] = [];
  const threadShiftNs = new Map<number, number>();
  const threadBusyNs = new Map<number, number>();
  const resources = new Map<string, Resource>();
  const byThread = new Map<number, number[]>();
  ops.forEach((op, i) => {
    const list = byThread.get(op.thread) ?? [];
    list.push(i);
    byThread.set(op.thread, list);
  });
  const cursor = new Map<number, number>();
  const lastEnd = new Map<number, number>();
  const states = new Map<number, OpState>();
  const heap = new EventHeap();
  let seq = 0;

  const resource = (name: string): Resource => {
    let r = resources.get(name);
    if (!r) {
      const servers = serversOf(name);
      r = { stats: { resource: name, holds: 0, busyNs: 0, waitNs: 0, maxWaitNs: 0, maxQueue: 0, ...(servers > 1 ? { servers } : {}) }, servers, inUse: 0, waiting: [] };
      resources.set(name, r);
    }
    return r;
  };

  const startNext = (thread: number): void => {
    const list = byThread.get(thread) as number[];
    const k = cursor.get(thread) ?? 0;
    const index = list[k];
    if (index === undefined) return;
    cursor.set(thread, k + 1);
    const op = ops[index] as TimedOp;
    const shift = threadShiftNs.get(thread) ?? 0;
    const start = op.arrival ? Math.max(op.startNs, (lastEnd.get(thread) ?? 0)) : op.startNs + shift;
    if (op.arrival) backlogNs[index] = start - op.startNs;
    const s: OpState = { index, actions: actionsOf(op), next: 0, clock: start, at: 0, start, waited: 0, held: new Map() };
    states.set(index, s);
    heap.push({ time: start, thread, op: index, seq: seq++ });
  };

  /** Runs an operation from its clock until it blocks on a resource or ends. */
  const advance = (s: OpState, now: number): void => {
    const op = ops[s.index] as TimedOp;
    for (;;) {
      const a = s.actions[s.next];
      if (!a) {
        const end = s.clock + (op.ns - s.at);
        // An arrival's latency counts from when it was meant to start, not from when its thread
        // got to it: waiting behind earlier work is part of what a load test must see.
        latencyNs[s.index] = end - (op.arrival ? op.startNs : s.start);
        waitNs[s.index] = s.waited;
        threadShiftNs.set(op.thread, end - (op.startNs + op.ns));
        threadBusyNs.set(op.thread, (threadBusyNs.get(op.thread) ?? 0) + (end - s.start));
        lastEnd.set(op.thread, end);
        states.delete(s.index);
        startNext(op.thread);
        return;
      }
      const t = s.clock + (a.offset - s.at);
      if (t > now) {
        // Not there yet: come back at that time, so others that reach a resource earlier go first.
        heap.push({ time: t, thread: op.thread, op: s.index, seq: seq++ });
        return;
      }
      s.clock = t;
      s.at = a.offset;
      s.next += 1;
      const r = resource(a.resource);
      if (!a.acquire) {
        const from = s.held.get(a.resource) ?? t;
        r.stats.busyNs += t - from;
        if (foreground && !foreground.has(op.thread) && t > from) background.push([r, from, t]);
        s.held.delete(a.resource);
        const w = r.waiting.shift();
        if (!w) {
          r.inUse -= 1;
          continue;
        }
        // The next waiter gets it now; it resumes from this instant.
        const waited = t - w.arrived;
        w.op.waited += waited;
        waits.push({ op: w.op.index, resource: a.resource, ns: waited });
        r.stats.waitNs += waited;
        r.stats.maxWaitNs = Math.max(r.stats.maxWaitNs, waited);
        r.stats.holds += 1;
        // What it held while it waited was busy and idle at once: blocked.
        for (const other of w.op.held.keys()) {
          const o = resource(other).stats;
          o.blockedNs = (o.blockedNs ?? 0) + waited;
        }
        w.op.held.set(a.resource, t);
        w.op.clock = t;
        heap.push({ time: t, thread: w.thread, op: w.op.index, seq: seq++ });
        continue;
      }
      if (r.inUse < r.servers) {
        r.inUse += 1;
        s.held.set(a.resource, t);
        r.stats.holds += 1;
        continue;
      }
      r.waiting.push({ op: s, arrived: t, thread: op.thread });
      r.stats.maxQueue = Math.max(r.stats.maxQueue, r.waiting.length);
      return;
    }
  };

  for (const thread of [...byThread.keys()].sort((a, b) => a - b)) startNext(thread);
  for (let e = heap.pop(); e; e = heap.pop()) {
    const s = states.get(e.op);
    if (s) advance(s, e.time);
  }
  if (states.size > 0) {
    // Only possible when two operations take the same resources in opposite orders: a model bug.
    const stuck = [...resources.values()].filter((r) => r.waiting.length > 0).map((r) => r.stats.resource);
    throw new Error(`queueing model deadlock on ${stuck.join(', ')}: resources taken in different orders`);
  }
  if (foreground && background.length > 0) {
    let end = 0;
    for (const thread of foreground) end = Math.max(end, lastEnd.get(thread) ?? 0);
    for (const [r, from, to] of background) {
      const after = to - Math.max(from, end);
      if (after <= 0) continue;
      r.stats.busyNs -= after;
      r.stats.afterEndNs = (r.stats.afterEndNs ?? 0) + after;
    }
  }
  return {
    latencyNs,
    waitNs,
    waits,
    backlogNs,
    threadShiftNs,
    threadBusyNs,
    resources: [...resources.values()].map((r) => r.stats).sort((a, b) => (a.resource < b.resource ? -1 : a.resource > b.resource ? 1 : 0)),
  };
}
