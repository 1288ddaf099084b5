import { NS_PER_US } from '../common/clock.js';
import type { HopReport } from '../common/generated/vmmsim/v1/HopReport.js';
import type { OpReport } from '../common/generated/vmmsim/v1/OpReport.js';
import { simulateQueueing, type ResourceStats, type TimedOp } from '../common/cost/queueing.js';
import { Distribution } from '../common/histogram.js';
import type { OpContext } from '../common/op-context.js';
import { transitionOf, zeroTransitions, type EndpointTable, type TransitionCounts } from '../common/topology.js';

/** Everything the guest records about one kind of operation (map, unmap). */
class OpRecord {
  readonly measured = new Distribution();
  /** Filled by finish(), from the queueing model. */
  readonly modeled = new Distribution();
  readonly transitions: TransitionCounts = zeroTransitions();
  failed = 0;
}

/**
 * Per-operation and per-hop statistics of a guest's run. The guest sees every hop of each of its
 * operations (replies carry the hops taken below), so this is the one place they are counted.
 */
export class OpStats {
  private readonly ops = new Map<string, OpRecord>();
  private readonly hops = new Map<string, { from: string; to: string; dist: Distribution }>();
  /** Every completed operation in its thread's uncontended modeled time, for the queueing model. */
  private readonly timeline: (TimedOp & { record: OpRecord })[] = [];

  constructor(private readonly endpoints: EndpointTable) {}

  private op(name: string): OpRecord {
    let r = this.ops.get(name);
    if (!r) {
      r = new OpRecord();
      this.ops.set(name, r);
    }
    return r;
  }

  /** Declares an operation so it is reported even if it never ran (for example, no unmap under static). */
  declare(name: string): void {
    this.op(name);
  }

  /**
   * A completed operation: its measured time, and for the modeled side the thread (vCPU) it ran
   * on, where it started on that thread's uncontended modeled clock, and what the context charged
   * and held. `arrival`: it arrived at that time on its own (open loop), not after the previous one.
   */
  record(name: string, measuredNs: number, ctx: OpContext, thread: number, startNs: number, arrival = false): void {
    const r = this.op(name);
    r.measured.record(measuredNs);
    this.timeline.push({ thread, startNs, ns: ctx.modeledNs, holds: ctx.holds, arrival, record: r });
    for (const h of ctx.trace) {
      const from = this.endpoints.id(h.from ?? 0);
      const to = this.endpoints.id(h.to ?? 0);
      if (!from || !to) continue;
      const kind = transitionOf(from.role, to.role);
      if (kind) r.transitions[kind] += 1;
      const key = `${from.name}>${to.name}`;
      let hop = this.hops.get(key);
      if (!hop) {
        hop = { from: from.name, to: to.name, dist: new Distribution() };
        this.hops.set(key, hop);
      }
      hop.dist.record(Number(h.receivedNs ?? 0) - Number(h.sentNs ?? 0));
    }
  }

  /**
   * Runs the queueing model over every operation recorded and fills the modeled distributions
   * with the contended latencies. `threadEndNs`: each thread's uncontended clock at its end (with
   * its think times); the modeled run length is the latest of them once shifted by its waits.
   */
  finish(threadEndNs: readonly number[]): { modeledElapsedNs: number; resources: ResourceStats[] } {
    const q = simulateQueueing(this.timeline);
    this.timeline.forEach((op, i) => op.record.modeled.record(q.latencyNs[i] ?? op.ns));
    let elapsed = 0;
    threadEndNs.forEach((end, t) => {
      elapsed = Math.max(elapsed, end + (q.threadShiftNs.get(t) ?? 0));
    });
    this.timeline.length = 0;
    return { modeledElapsedNs: elapsed, resources: q.resources };
  }

  fail(name: string): void {
    this.op(name).failed += 1;
  }

  opReports(): OpReport[] {
    return [...this.ops.entries()].map(([op, r]) => ({
      op,
      count: r.measured.count,
      failed: r.failed,
      transitions: r.transitions,
      measuredUs: r.measured.summary(NS_PER_US),
      modeledNs: r.modeled.summary(1),
    }));
  }

  hopReports(): HopReport[] {
    return [...this.hops.values()].map((h) => ({ from: h.from, to: h.to, measuredUs: h.dist.summary(NS_PER_US) }));
  }
}
