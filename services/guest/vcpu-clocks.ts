import type { OpContext } from '../runtime/op-context.js';

/**
 * The guest's vCPUs as a decision taken in modeled time needs them: for each vCPU a lower bound of
 * the modeled time of whatever it does next. A vCPU running an operation is at the operation's
 * start (GuestKernel.vcpuNs) plus what its context has charged so far, and can only move forward;
 * one between operations at its last operation's start; one that left the run, or is parked at a
 * point every vCPU stops at (a live migration, after which every clock is at least the latest),
 * bounds nothing.
 *
 * Whoever waits on the bounds (cmdq-gather.ts) subscribes and looks again on every change: an
 * operation begun or ended, a vCPU parked, unparked or gone, or a waiter's own arrival. A vCPU
 * awaiting a reply moves its bound only once the reply is in and it reaches one of those points.
 * Without a run registered (no workload threads: a trace replay, a unit test) nothing is known, and
 * `known` is false.
 */
export class VcpuClocks {
  private count = 0;
  private readonly running = new Map<number, OpContext>();
  /** Each vCPU's last operation's start: where its next one starts at the earliest. */
  private readonly lastStart = new Map<number, number>();
  private readonly out = new Set<number>();
  /** vCPUs a command queue holds until after a modeled time (a gathered list waiting for its owner's PROD write). */
  private readonly holds = new Map<number, number>();
  private readonly listeners = new Set<() => void>();

  constructor(private readonly vcpuNs: readonly number[]) {}

  /** A run with `count` vCPUs starts (WorkloadThreads). */
  reset(count: number): void {
    this.count = count;
    this.running.clear();
    this.lastStart.clear();
    this.out.clear();
    this.holds.clear();
    this.changed();
  }

  /** Whether the vCPUs of a run are registered. */
  get known(): boolean {
    return this.count > 0;
  }

  get vcpus(): number {
    return this.count;
  }

  /** vCPU t starts an operation in `ctx` (its clock, vcpuNs[t], is the operation's start). */
  begin(t: number, ctx: OpContext): void {
    this.running.set(t, ctx);
    this.lastStart.set(t, this.vcpuNs[t] ?? 0);
    this.changed();
  }

  /** vCPU t's operation ended (its clock moved past it). */
  end(t: number): void {
    this.running.delete(t);
    this.changed();
  }

  /** vCPU t stops at a point every vCPU reaches (it bounds nothing until unpark), or left the run. */
  park(t: number): void {
    this.out.add(t);
    this.changed();
  }

  unpark(t: number): void {
    this.out.delete(t);
    this.changed();
  }

  /**
   * The modeled time before which vCPU t can do nothing more (Infinity: never again, or not until
   * the others moved on). Held by a command queue, it does nothing until after that queue's time.
   */
  bound(t: number): number {
    if (this.out.has(t) || t >= this.count) return Number.POSITIVE_INFINITY;
    return Math.max(this.clock(t), this.holds.get(t) ?? Number.NEGATIVE_INFINITY);
  }

  /**
   * Running: the operation's start and what it charged so far. Between operations: the last one's
   * start, as an open-loop operation may start at its arrival, before the previous one's end (a
   * vCPU's arrivals only increase, as its closed-loop operations start where the last ended).
   */
  private clock(t: number): number {
    const ctx = this.running.get(t);
    return ctx ? (this.vcpuNs[t] ?? 0) + ctx.modeledNs : (this.lastStart.get(t) ?? 0);
  }

  /** Whether vCPU t can only act strictly after its bound (it is held there). */
  after(t: number): boolean {
    const hold = this.holds.get(t);
    return hold !== undefined && hold >= this.clock(t);
  }

  /** A command queue holds vCPU t until after modeled time `until` (raised, never lowered, while held). */
  hold(t: number, until: number): void {
    this.holds.set(t, Math.max(until, this.holds.get(t) ?? Number.NEGATIVE_INFINITY));
    this.changed();
  }

  /** The queue let vCPU t go (its clock moved past the hold). */
  release(t: number): void {
    if (this.holds.delete(t)) this.changed();
  }

  /** Calls `fn` on every change; returns the unsubscription. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Something moved: waiters look again. */
  changed(): void {
    for (const fn of [...this.listeners]) fn();
  }
}
