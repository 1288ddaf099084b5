import { profileCosts, type CostProfile } from '../cost/profile.js';
import { NS_PER_US } from '../runtime/clock.js';
import { simulateQueueing, type QueueingResult } from './queueing.js';
import type { StartReply__Output } from '../runtime/generated/vmmsim/v1/StartReply.js';
import { Distribution } from '../runtime/histogram.js';
import { TRANSITION_KINDS, zeroTransitions } from '../runtime/topology.js';
import { breakdowns } from './breakdown.js';
import { THREADS_PER_VM, costsByIndex, recordRun, reprice, type RecordedOp, type RecordedRun } from './recorded.js';
import { boundByOf, resourceKind, type BoundBy } from './application.js';
import type { ModeledResource, OpResult } from './results.js';

export interface CombinedTimeline {
  ops: OpResult[];
  modeledElapsedNs: number;
  resources: ModeledResource[];
  /**
   * What bounds the run in modeled time: its busiest resource (application.ts boundByOf), the
   * workload's threads counted as their vCPUs where no vCPU is a resource of the replay
   * (dma-map-benchmark, where each thread is a vCPU running one operation after another).
   */
  bound: BoundBy | undefined;
  /** The operations as recorded (with their vectors) and the queueing replay over them. */
  replay: { run: RecordedRun; ops: readonly RecordedOp[]; queueing: QueueingResult };
}

export interface CombineOptions {
  /** The run's cost profile: the confidence of each breakdown entry ('?' without it). */
  profile?: CostProfile;
  /**
   * Step costs in ns by name (the run's cost table, Topology.costs_ns): the breakdown prices the
   * steps with them. With `reprice`, the operations are priced under them too, from their vectors,
   * before the queueing replay (recorded.ts). Without costs, the profile's as a run has them.
   */
  costs?: Readonly<Record<string, number>>;
  reprice?: boolean;
  /**
   * The cost table the run was recorded under, to tell the modeled time its steps account for from
   * waits no step counts (RecordedOp.fixedNs). Default: `costs` (without `reprice`), else the profile's.
   */
  recordedCosts?: Readonly<Record<string, number>>;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/**
 * Every guest's operations together: the queueing model over all VMs at once (they share the
 * pSMMU CMDQs, VFIO, and any lock they have in common), then per operation kind the measured and
 * modeled distributions, the transitions per operation and where the modeled time goes (breakdown).
 * `guests[i]` is the reply of VM `vms[i]`.
 */
export function combineGuests(guests: readonly StartReply__Output[], vms: readonly number[], o: CombineOptions = {}): CombinedTimeline {
  const names: string[] = [];
  const totals = new Map<string, { count: number; failed: number; transitions: ReturnType<typeof zeroTransitions> }>();
  for (const g of guests) {
    for (const r of g.ops) {
      if (!totals.has(r.op)) {
        totals.set(r.op, { count: 0, failed: 0, transitions: zeroTransitions() });
        names.push(r.op);
      }
      const t = totals.get(r.op) as NonNullable<ReturnType<typeof totals.get>>;
      t.count += Number(r.count);
      t.failed += Number(r.failed);
      for (const k of TRANSITION_KINDS) t.transitions[k] += Number(r.transitions?.[k] ?? 0);
    }
  }
  const recordedCosts = o.recordedCosts ?? (o.reprice ? (o.profile ? profileCosts(o.profile) : undefined) : (o.costs ?? (o.profile ? profileCosts(o.profile) : undefined)));
  const run = recordRun(guests, vms, recordedCosts);
  const costs = costsByIndex(run, o.costs ?? (o.profile ? profileCosts(o.profile) : {}));
  const priced = o.reprice ? reprice(run, costs) : { ops: run.ops, threadEndNs: run.threadEndNs };
  const q = simulateQueueing(priced.ops, { foreground: new Set(priced.threadEndNs.keys()) });
  const measured = new Map(names.map((n) => [n, new Distribution()]));
  const modeled = new Map(names.map((n) => [n, new Distribution()]));
  priced.ops.forEach((e, k) => {
    measured.get(e.kind)?.record(e.measuredNs);
    modeled.get(e.kind)?.record(q.latencyNs[k] ?? e.ns);
  });
  let elapsed = 0;
  for (const [thread, end] of priced.threadEndNs) elapsed = Math.max(elapsed, end + (q.threadShiftNs.get(thread) ?? 0));
  const split = breakdowns(run, priced.ops, q, costs, o.profile);
  const ops: OpResult[] = names.map((op) => {
    const t = totals.get(op) as NonNullable<ReturnType<typeof totals.get>>;
    const per = zeroTransitions();
    for (const kind of TRANSITION_KINDS) per[kind] = t.count > 0 ? round(t.transitions[kind] / t.count) : 0;
    return {
      op,
      count: t.count,
      failed: t.failed,
      transitions: per,
      measuredUs: (measured.get(op) as Distribution).summary(NS_PER_US),
      modeledNs: (modeled.get(op) as Distribution).summary(1),
      breakdown: split.get(op) ?? [],
    };
  });
  const resources = q.resources.map((r) => ({ ...r, utilization: elapsed > 0 ? round(r.busyNs / elapsed) : 0 }));
  return { ops, modeledElapsedNs: elapsed, resources, bound: boundOf(q, priced.threadEndNs, elapsed), replay: { run, ops: priced.ops, queueing: q } };
}

function boundOf(q: QueueingResult, foreground: ReadonlyMap<number, number>, elapsedNs: number): BoundBy | undefined {
  const candidates: { resource: string; busyNs: number; blockedNs?: number; servers?: number }[] = [...q.resources];
  if (!q.resources.some((r) => resourceKind(r.resource) === 'vcpu')) {
    for (const thread of foreground.keys()) {
      candidates.push({ resource: `vm${Math.floor(thread / THREADS_PER_VM)}.vcpu${thread % THREADS_PER_VM}`, busyNs: q.threadBusyNs.get(thread) ?? 0 });
    }
  }
  return boundByOf(candidates.sort((a, b) => (a.resource < b.resource ? -1 : a.resource > b.resource ? 1 : 0)), elapsedNs);
}
