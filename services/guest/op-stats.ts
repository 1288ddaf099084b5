import { NS_PER_US, nowNs } from '../runtime/clock.js';
import type { HopReport } from '../runtime/generated/vmmsim/v1/HopReport.js';
import type { OpReport } from '../runtime/generated/vmmsim/v1/OpReport.js';
import type { TimedOp } from '../runtime/generated/vmmsim/v1/TimedOp.js';
import { Samples } from '../runtime/samples.js';
import type { ExplainedOp } from '../runtime/generated/vmmsim/v1/ExplainedOp.js';
import { VectorInterner } from '../cost/step-vector.js';
import type { Logger } from '../runtime/logger.js';
import type { OpContext } from '../runtime/op-context.js';
import { transitionOf, zeroTransitions, type EndpointTable, type TransitionCounts } from '../runtime/topology.js';
import type { HopSpan, OpTracing } from '../runtime/tracing.js';

interface HopRecord {
  from: string;
  to: string;
  all: Samples;
  steady: Samples;
}

/** What the guest counts about one kind of operation (map, unmap). */
class OpRecord {
  count = 0;
  failed = 0;
  readonly transitions: TransitionCounts = zeroTransitions();

  constructor(readonly index: number) {}
}

/**
 * Per-operation and per-hop records of a guest's run. The guest sees every hop of each of its
 * operations (replies carry the hops taken below), so this is the one place they are counted. The
 * latency distributions are not made here: every operation goes to the controller in the timeline,
 * which prices queueing over all VMs together and builds the measured and modeled distributions.
 */
export class OpStats {
  private readonly ops = new Map<string, OpRecord>();
  private readonly hops = new Map<string, HopRecord>();
  /**
   * Each (from, to) pair of the topology's endpoint ids met so far: its record and transition kind.
   * Every operation's hops look here, with no string built per hop.
   */
  private readonly hopById = new Map<number, { hop: HopRecord; kind: ReturnType<typeof transitionOf>; from: string; to: string }>();
  /** Operations recorded per thread, to tell its first warmupOps (Topology.warmup_ops) apart. */
  private readonly perThread: number[] = [];
  private readonly timeline: TimedOp[] = [];
  private readonly resources = new Map<string, number>();
  private tracing: OpTracing | undefined;
  /** Set only when the guest logs at debug: then each operation gets a line. */
  private opLog: Logger | undefined;
  /** The step vectors of the timeline's operations and holds, each stored once. */
  private readonly vectors = new VectorInterner();
  /** vmmsim explain: the operation to trace, and the one traced once it ran. */
  private explain: { op: string; after: number } | undefined;
  private explainedOp: ExplainedOp | undefined;
  /** Operations of each thread left out of the steady measured figures. */
  private readonly warmupOps: number;
  private readonly guestIsHost: boolean;

  constructor(
    private readonly endpoints: EndpointTable,
    opts: {
      /** Operations of each thread left out of the steady measured figures (Topology.warmup_ops). */
      warmupOps?: number;
      /** Bare metal: the guest process is the host kernel (see transitionOf). */
      guestIsHost?: boolean;
    } = {},
  ) {
    this.warmupOps = opts.warmupOps ?? 0;
    this.guestIsHost = opts.guestIsHost ?? false;
  }

  /** Whether thread t is still warming up: its next operation would be one of its first warmupOps. */
  warmingUp(t: number): boolean {
    return (this.perThread[t] ?? 0) < this.warmupOps;
  }

  /** Sampled operations become traces; at debug level each operation is logged with its opId. */
  observeWith(t: { tracing?: OpTracing | undefined; log: Logger }): void {
    this.tracing = t.tracing;
    this.opLog = t.log.isLevelEnabled('debug') ? t.log : undefined;
  }

  private op(name: string): OpRecord {
    let r = this.ops.get(name);
    if (!r) {
      r = new OpRecord(this.ops.size);
      this.ops.set(name, r);
    }
    return r;
  }

  private resource(name: string): number {
    let i = this.resources.get(name);
    if (i === undefined) {
      i = this.resources.size;
      this.resources.set(name, i);
    }
    return i;
  }

  /** Declares an operation so it is reported even if it never ran (for example, no unmap under static). */
  declare(name: string): void {
    this.op(name);
  }

  /**
   * vmmsim explain: trace the first operation named `op` that completes once `after` operations
   * have (Topology.explain). Until it is found, every operation that starts is traced.
   */
  explainOp(op: string, after: number): void {
    this.explain = { op, after };
  }

  /** Whether an operation starting now is to be traced (vmmsim explain is looking for its operation). */
  explaining(): boolean {
    return this.explain !== undefined && this.explainedOp === undefined && this.timeline.length >= this.explain.after;
  }

  /**
   * A completed operation: its measured time, and for the modeled side the thread (vCPU) it ran
   * on, where it started on that thread's uncontended modeled clock, and what the context charged
   * and held. `arrival`: it arrived at that time on its own (open loop), not after the previous one.
   * `vcpu`: the guest thread whose warm-up it counts in (Topology.warmup_ops), when `thread` is one
   * of an application workload's lanes of that vCPU rather than the vCPU itself.
   */
  record(name: string, measuredNs: number, ctx: OpContext, thread: number, startNs: number, arrival = false, vcpu = thread): void {
    const r = this.op(name);
    r.count += 1;
    const done = (this.perThread[vcpu] ?? 0) + 1;
    this.perThread[vcpu] = done;
    const warmup = done <= this.warmupOps;
    const holdSteps: number[] = [];
    for (const h of ctx.holds) holdSteps.push(this.vectors.id(h.atSteps), this.vectors.id(h.ownSteps));
    if (ctx.explaining && this.explain && this.explainedOp === undefined && name === this.explain.op && this.timeline.length >= this.explain.after) {
      this.explainedOp = { op: name, thread, timelineIndex: this.timeline.length, ns: ctx.modeledNs, events: ctx.explained() };
    }
    this.timeline.push({
      op: r.index,
      thread,
      startNs,
      ns: ctx.modeledNs,
      measuredNs,
      arrival,
      holdResource: ctx.holds.map((h) => this.resource(h.resource)),
      holdAtNs: ctx.holds.map((h) => h.atNs),
      holdNs: ctx.holds.map((h) => h.ns),
      // What ns is made of, each distinct vector sent once (step-vector.ts).
      steps: this.vectors.id(ctx.packedSteps()),
      holdSteps,
      ...(ctx.branched ? { branched: true } : {}),
      ...(warmup ? { warmup } : {}),
    });
    const tracing = this.tracing;
    const spans: HopSpan[] | undefined = tracing?.sampled() ? [] : undefined;
    for (const h of ctx.trace) {
      const e = this.hopOf(h.from ?? 0, h.to ?? 0);
      if (!e) continue;
      if (e.kind) r.transitions[e.kind] += 1;
      spans?.push({ from: e.from, to: e.to, transition: e.kind, sentNs: Number(h.sentNs ?? 0), receivedNs: Number(h.receivedNs ?? 0) });
      const ns = Math.max(0, Number(h.receivedNs ?? 0) - Number(h.sentNs ?? 0));
      e.hop.all.record(ns);
      if (!warmup) e.hop.steady.record(ns);
    }
    if (spans && tracing) {
      // The operation ended at most now (the caller may have been preempted since) and its
      // measured time holds every hop, so it ended no later than its first send + that time.
      let end = nowNs();
      for (const h of spans) if (h.sentNs > 0) end = Math.min(end, h.sentNs + measuredNs);
      tracing.exportOp(name, ctx.opId, end - measuredNs, end, spans);
    }
    this.opLog?.child({ opId: ctx.opId }).debug({ op: name, thread, measuredUs: measuredNs / NS_PER_US, modeledNs: ctx.modeledNs, hops: ctx.trace.length }, 'operation done');
  }

  /** The record of hops from endpoint id `fromId` to `toId` (created on first use), or null when either is unknown. */
  private hopOf(fromId: number, toId: number): { hop: HopRecord; kind: ReturnType<typeof transitionOf>; from: string; to: string } | null {
    const id = fromId * 0x1_0000_0000 + toId;
    let e = this.hopById.get(id);
    if (e !== undefined) return e;
    const from = this.endpoints.id(fromId);
    const to = this.endpoints.id(toId);
    if (!from || !to) return null; // not kept: a reply's hop records cannot grow this map
    const key = `${from.name}>${to.name}`;
    let hop = this.hops.get(key);
    if (!hop) {
      hop = { from: from.name, to: to.name, all: new Samples(), steady: new Samples() };
      this.hops.set(key, hop);
    }
    e = { hop, kind: transitionOf(from.role, to.role, this.guestIsHost), from: from.name, to: to.name };
    this.hopById.set(id, e);
    return e;
  }

  fail(name: string): void {
    this.op(name).failed += 1;
  }

  /** Operations in declaration order (the timeline's op indexes), with their counts and transitions. */
  opReports(): OpReport[] {
    return [...this.ops.entries()].map(([op, r]) => ({ op, count: r.count, failed: r.failed, transitions: r.transitions }));
  }

  hopReports(): HopReport[] {
    return [...this.hops.values()].map((h) => ({ from: h.from, to: h.to, measuredUs: h.all.summary(NS_PER_US), steadyUs: h.steady.summary(NS_PER_US) }));
  }

  /**
   * The timeline, the resource names its holds refer to, and the step vectors its operations and
   * holds name; the records are handed over. With vmmsim explain, the operation it traced.
   */
  takeTimeline(): { timeline: TimedOp[]; resourceNames: string[]; stepVectors: number[]; explained?: ExplainedOp } {
    const timeline = this.timeline.splice(0);
    const explained = this.explainedOp;
    return { timeline, resourceNames: [...this.resources.keys()], stepVectors: this.vectors.flat, ...(explained ? { explained } : {}) };
  }
}
