import { NS_PER_US } from '../runtime/clock.js';
import { simulateQueueing, type TimedOp } from './queueing.js';
import type { StartReply__Output } from '../runtime/generated/vmmsim/v1/StartReply.js';
import { Distribution } from '../runtime/histogram.js';
import { TRANSITION_KINDS, zeroTransitions } from '../runtime/topology.js';
import type { ModeledResource, OpResult } from './results.js';

/** Threads of different VMs are told apart by VM: thread ids vm * this + vCPU. */
const THREADS_PER_VM = 1 << 16;

export interface CombinedTimeline {
  ops: OpResult[];
  modeledElapsedNs: number;
  resources: ModeledResource[];
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/**
 * Every guest's operations together: the queueing model over all VMs at once (they share the
 * pSMMU CMDQs, VFIO, and any lock they have in common), then per operation kind the measured and
 * modeled distributions and the transitions per operation. `guests[i]` is the reply of VM `vms[i]`.
 */
export function combineGuests(guests: readonly StartReply__Output[], vms: readonly number[]): CombinedTimeline {
  const timeline: TimedOp[] = [];
  /** The operation kind of each timeline entry, by name. */
  const kinds: string[] = [];
  const names: string[] = [];
  const totals = new Map<string, { count: number; failed: number; transitions: ReturnType<typeof zeroTransitions> }>();
  guests.forEach((g, gi) => {
    const vm = vms[gi] ?? gi;
    for (const o of g.ops) {
      if (!totals.has(o.op)) {
        totals.set(o.op, { count: 0, failed: 0, transitions: zeroTransitions() });
        names.push(o.op);
      }
      const t = totals.get(o.op) as NonNullable<ReturnType<typeof totals.get>>;
      t.count += Number(o.count);
      t.failed += Number(o.failed);
      for (const k of TRANSITION_KINDS) t.transitions[k] += Number(o.transitions?.[k] ?? 0);
    }
    for (const e of g.timeline) {
      timeline.push({
        thread: vm * THREADS_PER_VM + e.thread,
        startNs: e.startNs,
        ns: e.ns,
        arrival: e.arrival,
        holds: e.holdResource.map((r, i) => ({ resource: g.resourceNames[r] ?? `resource-${r}`, atNs: e.holdAtNs[i] ?? 0, ns: e.holdNs[i] ?? 0 })),
      });
      kinds.push(g.ops[e.op]?.op ?? 'unknown');
    }
  });
  const q = simulateQueueing(timeline);
  const measured = new Map(names.map((n) => [n, new Distribution()]));
  const modeled = new Map(names.map((n) => [n, new Distribution()]));
  let k = 0;
  guests.forEach((g) => {
    for (const e of g.timeline) {
      const kind = kinds[k] as string;
      measured.get(kind)?.record(e.measuredNs);
      modeled.get(kind)?.record(q.latencyNs[k] ?? e.ns);
      k += 1;
    }
  });
  let elapsed = 0;
  guests.forEach((g, gi) => {
    const vm = vms[gi] ?? gi;
    g.threadEndNs.forEach((end, t) => {
      elapsed = Math.max(elapsed, end + (q.threadShiftNs.get(vm * THREADS_PER_VM + t) ?? 0));
    });
  });
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
    };
  });
  const resources = q.resources.map((r) => ({ ...r, utilization: elapsed > 0 ? round(r.busyNs / elapsed) : 0 }));
  return { ops, modeledElapsedNs: elapsed, resources };
}
