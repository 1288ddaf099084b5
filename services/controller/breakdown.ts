/**
 * Where each operation's modeled time goes (results.json runs[].ops[].breakdown[]): per operation
 * kind, the mean count and modeled ns of every cost step on its critical path, then what it waited
 * for each contended resource in the queueing replay. The entries add up to the kind's modeled mean
 * (modeledNs.mean): the steps to its uncontended time, the waits to the rest.
 */
import { COST_STEPS } from '../cost/steps.js';
import type { Confidence, CostProfile } from '../cost/profile.js';
import type { QueueingResult } from './queueing.js';
import { CMDQ_OWNER_WAIT, type RecordedOp, type RecordedRun } from './recorded.js';

/** Confidences from strongest to weakest. */
const CONFIDENCE_RANK: Record<Confidence, number> = { C: 0, S: 1, U: 2 };

export interface BreakdownEntry {
  /** A cost step (services/cost/steps.ts), or `wait:<resource>` for a queueing wait. */
  step: string;
  /**
   * Times per operation: the step's charges, the holds of the resource, or (wait:vcpu) the share of
   * the operations that arrived while their vCPU was still busy.
   */
  perOp: number;
  /** Mean modeled ns per operation. */
  ns: number;
  /** The functions the step models in the pinned Linux and QEMU; none for a wait. */
  functions: string[];
  /**
   * The profile's confidence in the step's cost (C, S, U). For a wait: the weakest confidence of
   * the steps charged while any operation held the resource (what the wait is made of).
   */
  confidence: Confidence | '?';
}

/** The prefix of a wait's entry. */
export const WAIT = 'wait:';
/** The entry of an arrival's wait for its vCPU's earlier operations (open loop). */
export const VCPU_BACKLOG = `${WAIT}vcpu`;

/** What a wait for another vCPU's command-queue work models. */
const CMDQ_OWNER_FUNCTIONS = ['linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: arm_smmu_cmdq_issue_cmdlist (a gathered list waits for its owner\'s PROD write; an owner for the previous owner\'s, arm_smmu_cmdq_poll_valid_map and owner_prod)'];

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Order of the steps in steps.ts (guest, exits, VMM, host kernel, SMMU); unknown steps after, by name. */
const STEP_ORDER = new Map(Object.keys(COST_STEPS).map((s, i) => [s, i]));

function functionsOf(step: string): string[] {
  const info = (COST_STEPS as Record<string, { functions: readonly string[] } | undefined>)[step];
  return info ? [...info.functions] : [];
}

/**
 * The breakdown of every operation kind of a run. `ops` are the run's operations (RecordedRun.ops,
 * or re-priced ones), `q` the queueing replay over them, `costs` the step costs by index they were
 * priced with, `profile` where confidences come from.
 */
export function breakdowns(run: RecordedRun, ops: readonly RecordedOp[], q: QueueingResult, costs: Float64Array, profile?: CostProfile): Map<string, BreakdownEntry[]> {
  const confidence = (step: string): Confidence | '?' => profile?.steps[step]?.confidence ?? '?';
  const n = run.stepNames.length;
  interface Acc {
    count: number;
    steps: Float64Array;
    waits: Map<string, number>;
    holds: Map<string, number>;
    backlog: number;
    backlogOps: number;
    fixed: number;
    fixedOps: number;
  }
  const acc = new Map<string, Acc>();
  const of = (kind: string): Acc => {
    let a = acc.get(kind);
    if (!a) {
      a = { count: 0, steps: new Float64Array(n), waits: new Map(), holds: new Map(), backlog: 0, backlogOps: 0, fixed: 0, fixedOps: 0 };
      acc.set(kind, a);
    }
    return a;
  };
  // What each resource is held over: the steps charged between taking and letting go, in any operation.
  const heldSteps = new Map<string, Set<number>>();
  const seenHold = new Set<string>();
  ops.forEach((o, i) => {
    const a = of(o.kind);
    a.count += 1;
    const v = run.vectors[o.steps] ?? [];
    for (let k = 0; k + 1 < v.length; k += 2) a.steps[v[k] as number] = (a.steps[v[k] as number] as number) + (v[k + 1] as number);
    for (const h of o.holds) {
      a.holds.set(h.resource, (a.holds.get(h.resource) ?? 0) + 1);
      const key = `${h.resource}\0${h.ownSteps}`;
      if (seenHold.has(key)) continue;
      seenHold.add(key);
      const set = heldSteps.get(h.resource) ?? new Set<number>();
      const own = run.vectors[h.ownSteps] ?? [];
      for (let k = 0; k + 1 < own.length; k += 2) set.add(own[k] as number);
      heldSteps.set(h.resource, set);
    }
    if (o.fixedNs !== 0) {
      a.fixed += o.fixedNs;
      a.fixedOps += 1;
    }
    const late = q.backlogNs[i] ?? 0;
    if (late > 0) {
      a.backlog += late;
      a.backlogOps += 1;
    }
  });
  for (const w of q.waits) {
    const o = ops[w.op];
    if (!o) continue;
    const a = of(o.kind);
    a.waits.set(w.resource, (a.waits.get(w.resource) ?? 0) + w.ns);
  }
  const weakest = (steps: Iterable<number>): Confidence | '?' => {
    let worst: Confidence | '?' = '?';
    for (const s of steps) {
      const c = confidence(run.stepNames[s] as string);
      if (c !== '?' && (worst === '?' || CONFIDENCE_RANK[c] > CONFIDENCE_RANK[worst])) worst = c;
    }
    return worst;
  };
  const everyStep = new Set<number>();
  for (const a of acc.values()) a.steps.forEach((c, s) => c > 0 && everyStep.add(s));
  const out = new Map<string, BreakdownEntry[]>();
  for (const [kind, a] of acc) {
    const entries: BreakdownEntry[] = [];
    const steps = [...a.steps.keys()].filter((s) => (a.steps[s] as number) > 0);
    const name = (s: number): string => run.stepNames[s] as string;
    steps.sort((x, y) => (STEP_ORDER.get(name(x)) ?? Infinity) - (STEP_ORDER.get(name(y)) ?? Infinity) || (name(x) < name(y) ? -1 : 1));
    for (const s of steps) {
      const total = a.steps[s] as number;
      entries.push({ step: name(s), perOp: round(total / a.count), ns: round((total * (costs[s] as number)) / a.count), functions: functionsOf(name(s)), confidence: confidence(name(s)) });
    }
    for (const r of [...a.holds.keys()].sort()) {
      entries.push({ step: `${WAIT}${r}`, perOp: round((a.holds.get(r) as number) / a.count), ns: round((a.waits.get(r) ?? 0) / a.count), functions: [], confidence: weakest(heldSteps.get(r) ?? []) });
    }
    if (a.fixedOps > 0) entries.push({ step: CMDQ_OWNER_WAIT, perOp: round(a.fixedOps / a.count), ns: round(a.fixed / a.count), functions: [...CMDQ_OWNER_FUNCTIONS], confidence: weakest(everyStep) });
    if (a.backlog > 0) entries.push({ step: VCPU_BACKLOG, perOp: round(a.backlogOps / a.count), ns: round(a.backlog / a.count), functions: [], confidence: weakest(everyStep) });
    out.set(kind, entries);
  }
  return out;
}

/** The sum of a breakdown's ns: the operation kind's modeled mean, within rounding. */
export function breakdownTotal(entries: readonly BreakdownEntry[]): number {
  return entries.reduce((s, e) => s + e.ns, 0);
}
