import { NS_PER_US, nowNs } from '../runtime/clock.js';
import type { HopReport } from '../runtime/generated/vmmsim/v1/HopReport.js';
import type { OpReport } from '../runtime/generated/vmmsim/v1/OpReport.js';
import type { ResidenceReport } from '../runtime/generated/vmmsim/v1/ResidenceReport.js';
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

/** One process's share of one kind of operation (OpStats.residenceReports). */
interface Residence {
  ns: Samples;
  visits: number;
}

/** What the guest counts about one kind of operation (map, unmap). */
class OpRecord {
  count = 0;
  failed = 0;
  readonly transitions: TransitionCounts = zeroTransitions();
  /** Steady operations whose hops were one chain (their time split by process), and their crossings. */
  chained = 0;
  readonly crossings = new Samples();
  /** By endpoint id: the time each process held the operation (the guest's under its own id). */
  readonly residence = new Map<number, Residence>();

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
    if (!warmup && ctx.trace.length > 0) this.split(r, ctx, measuredNs);
    if (spans && tracing) {
      // The operation ended at most now (the caller may have been preempted since) and its
      // measured time holds every hop, so it ended no later than its first send + that time.
      let end = nowNs();
      for (const h of spans) if (h.sentNs > 0) end = Math.min(end, h.sentNs + measuredNs);
      tracing.exportOp(name, ctx.opId, end - measuredNs, end, spans);
    }
    this.opLog?.child({ opId: ctx.opId }).debug({ op: name, thread, measuredUs: measuredNs / NS_PER_US, modeledNs: ctx.modeledNs, hops: ctx.trace.length }, 'operation done');
  }

  /**
   * Splits a steady operation's measured time: each process's time between receiving a hop and
   * sending the next (one process's own clock, so no clock is compared across processes), the
   * crossings, and the guest's rest. Only an operation whose hops form one chain (each hop leaves
   * from where the previous arrived: no parallel branches) is split.
   */
  private readonly scratchNs = new Map<number, number>();
  private readonly scratchVisits = new Map<number, number>();
  private split(r: OpRecord, ctx: OpContext, measuredNs: number): void {
    const tr = ctx.trace;
    const ns = this.scratchNs;
    const visits = this.scratchVisits;
    ns.clear();
    visits.clear();
    const guest = tr[0]?.from ?? 0;
    // The guest's start is an entry; every hop's arrival is one (the last: the guest's again).
    visits.set(guest, 1);
    let crossing = 0;
    let held = 0;
    for (let i = 0; i < tr.length; i++) {
      const h = tr[i] as (typeof tr)[number];
      const sent = Number(h.sentNs ?? 0);
      const received = Number(h.receivedNs ?? 0);
      const to = h.to ?? 0;
      // Hop records come back in replies: only processes of the topology get a row (no peer grows these maps).
      if (sent <= 0 || received < sent || !this.endpoints.id(to)) return;
      crossing += received - sent;
      visits.set(to, (visits.get(to) ?? 0) + 1);
      if (i === 0) continue;
      const prev = tr[i - 1] as (typeof tr)[number];
      const at = h.from ?? 0;
      const own = sent - Number(prev.receivedNs ?? 0);
      if (at !== (prev.to ?? 0) || own < 0) return;
      ns.set(at, (ns.get(at) ?? 0) + own);
      held += own;
    }
    if ((tr[tr.length - 1]?.to ?? 0) !== guest) return;
    ns.set(guest, Math.max(0, measuredNs - crossing - held + (ns.get(guest) ?? 0)));
    r.chained += 1;
    r.crossings.record(crossing);
    for (const [id, x] of ns) {
      let e = r.residence.get(id);
      if (!e) {
        e = { ns: new Samples(), visits: 0 };
        r.residence.set(id, e);
      }
      e.ns.record(x);
      e.visits += visits.get(id) ?? 0;
    }
  }

  /** Where each kind of operation's steady measured time went, by process (StartReply.residence). */
  residenceReports(): ResidenceReport[] {
    const out: ResidenceReport[] = [];
    for (const [op, r] of this.ops) {
      if (r.chained === 0) continue;
      const crossingsUs = r.crossings.summary(NS_PER_US);
      const guestFirst = [...r.residence].sort(([a], [b]) => (this.endpoints.id(a)?.role === 'guest' ? 0 : 1) - (this.endpoints.id(b)?.role === 'guest' ? 0 : 1));
      for (const [id, e] of guestFirst) {
        const name = this.endpoints.id(id)?.name ?? String(id);
        out.push({ op, process: name, visitsPerOp: e.visits / r.chained, steadyUs: e.ns.summary(NS_PER_US), crossingsUs });
      }
    }
    return out;
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
