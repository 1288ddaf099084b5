/**
 * A run's operations as the guests recorded them, with what each one's modeled time is made of: its
 * step vector and its holds' (services/cost/step-vector.ts). This is what the queueing replay runs
 * on, and what lets a run be re-priced under another cost table without starting the processes
 * again (docs/cost-model.md): each distinct vector is priced once, then the replay runs as usual.
 */
import { packedDot, uninternVectors, type PackedSteps } from '../cost/step-vector.js';
import type { StartReply__Output } from '../runtime/generated/vmmsim/v1/StartReply.js';
import type { ResourceUse, TimedOp } from './queueing.js';

/** Threads of different VMs are told apart by VM: thread ids vm * this + vCPU. */
export const THREADS_PER_VM = 1 << 16;

/** One hold of a recorded operation: as recorded, and the vectors (ids) it is made of. */
export interface RecordedHold extends ResourceUse {
  /** Step vectors (ids into RecordedRun.vectors): the operation's when it asked, and those charged while held. */
  atSteps: number;
  ownSteps: number;
  /** Modeled ns of atNs and of ns that no step counts (see RecordedOp.fixedNs). */
  atFixedNs: number;
  ownFixedNs: number;
}

/** One completed operation of the run. */
export interface RecordedOp extends TimedOp {
  /** The operation's name (map, unmap, flush...). */
  kind: string;
  /** Which guest's reply it came from (index into the guests given), and its place in that timeline. */
  guest: number;
  index: number;
  measuredNs: number;
  /** Its step vector: an id into RecordedRun.vectors. */
  steps: number;
  holds: readonly RecordedHold[];
  /** Parallel branches with unordered vectors on its path: re-pricing it is not exact. */
  branched: boolean;
  /**
   * Modeled ns on its path that no step counts: what it waited, in modeled time, for another vCPU's
   * work (a gathered command list for its owner's PROD write, an owner for the previous owner's:
   * arm_smmu_cmdq_issue_cmdlist). Kept as recorded when re-priced, which is then not exact.
   */
  fixedNs: number;
}

/** A wait for another vCPU's command-queue work (RecordedOp.fixedNs) in a breakdown. */
export const CMDQ_OWNER_WAIT = 'wait:cmdq-owner';

export interface RecordedRun {
  /** The step names vectors count, by index (the run's cost table, sorted). */
  stepNames: readonly string[];
  /** Every distinct step vector of the run, by id. */
  vectors: readonly PackedSteps[];
  /** The operations of every guest, guest by guest, each guest's in its timeline's order. */
  ops: RecordedOp[];
  /** Each guest's threads' uncontended modeled clocks at the end, by global thread id. */
  threadEndNs: Map<number, number>;
}

/**
 * The operations of the guests' Start replies (`guests[i]` is VM `vms[i]`'s) with their vectors, in
 * one index space of steps and one list of vectors.
 */
export function recordRun(guests: readonly StartReply__Output[], vms: readonly number[], costs?: Readonly<Record<string, number>>): RecordedRun {
  const stepNames = [...new Set(guests.flatMap((g) => g.stepNames))].sort();
  const index = new Map(stepNames.map((n, i) => [n, i]));
  const vectors: PackedSteps[] = [];
  const ops: RecordedOp[] = [];
  const threadEndNs = new Map<number, number>();
  guests.forEach((g, gi) => {
    const vm = vms[gi] ?? gi;
    const offset = vectors.length;
    // A guest counts against its own step table; renumber into the run's (the same table, unless builds differ).
    const local = g.stepNames.map((n) => index.get(n) as number);
    const same = local.every((x, i) => x === i);
    for (const v of uninternVectors(g.stepVectors)) vectors.push(same ? v : renumber(v, local));
    const id = (k: number): number => {
      if (!(k >= 0 && offset + k < vectors.length)) throw new Error(`guest ${vm}'s timeline names step vector ${k} of ${vectors.length - offset}`);
      return offset + k;
    };
    g.timeline.forEach((e, i) => {
      ops.push({
        kind: g.ops[e.op]?.op ?? 'unknown',
        guest: gi,
        index: i,
        thread: vm * THREADS_PER_VM + e.thread,
        startNs: e.startNs,
        ns: e.ns,
        measuredNs: e.measuredNs,
        arrival: e.arrival,
        // An older guest sends no vectors: its operations then count no steps (an empty vector).
        steps: g.stepVectors.length > 0 ? id(e.steps) : emptyVector(vectors),
        holds: e.holdResource.map((r, k) => ({
          resource: g.resourceNames[r] ?? `resource-${r}`,
          atNs: e.holdAtNs[k] ?? 0,
          ns: e.holdNs[k] ?? 0,
          atSteps: g.stepVectors.length > 0 ? id(e.holdSteps[2 * k] ?? 0) : emptyVector(vectors),
          ownSteps: g.stepVectors.length > 0 ? id(e.holdSteps[2 * k + 1] ?? 0) : emptyVector(vectors),
          atFixedNs: 0,
          ownFixedNs: 0,
        })),
        branched: e.branched,
        fixedNs: 0,
      });
    });
    g.threadEndNs.forEach((end, t) => threadEndNs.set(vm * THREADS_PER_VM + t, end));
  });
  const run = { stepNames, vectors, ops, threadEndNs };
  if (costs) splitFixed(run, costsByIndex(run, costs));
  return run;
}

/** Below this, a difference between recorded and priced ns is the rounding of a float sum. */
const FIXED_EPSILON_NS = 1e-6;

/**
 * With the costs the run was recorded under: each operation's (and hold's) recorded ns that its
 * vector does not account for, as fixedNs. Zero for every operation whose modeled time is all steps.
 */
function splitFixed(run: RecordedRun, costs: Float64Array): void {
  const price = run.vectors.map((v) => packedDot(v, costs));
  const rest = (recorded: number, id: number): number => {
    const d = recorded - (price[id] as number);
    return Math.abs(d) < FIXED_EPSILON_NS ? 0 : d;
  };
  for (const o of run.ops) {
    o.fixedNs = rest(o.ns, o.steps);
    o.holds = o.holds.map((h) => ({ ...h, atFixedNs: rest(h.atNs, h.atSteps), ownFixedNs: rest(h.ns, h.ownSteps) }));
  }
}

function renumber(v: PackedSteps, local: readonly number[]): PackedSteps {
  const pairs: [number, number][] = [];
  for (let k = 0; k + 1 < v.length; k += 2) pairs.push([local[v[k] as number] as number, v[k + 1] as number]);
  return pairs.sort((a, b) => a[0] - b[0]).flat();
}

function emptyVector(vectors: PackedSteps[]): number {
  let i = vectors.findIndex((v) => v.length === 0);
  if (i < 0) i = vectors.push([]) - 1;
  return i;
}

/** Step costs by the run's step index, from ns by step name (a step the table lacks costs 0). */
export function costsByIndex(run: RecordedRun, costs: Readonly<Record<string, number>>): Float64Array {
  return Float64Array.from(run.stepNames, (n) => costs[n] ?? 0);
}

/**
 * The run's operations priced under `costs` (ns by step index, costsByIndex): each operation's
 * time and its holds' from their vectors, and on each thread the operations that follow the one
 * before them (closed loop) moved by what the operations before them changed; an arrival keeps its
 * arrival time. With the costs the run had, this is the recorded run itself, to the byte.
 *
 * Not exact where the run's behaviour depended on modeled time (docs/cost-model.md): a lazy flush
 * queue's timer, a trace replay's idle vCPUs, operations whose vector is `branched`, and waits for
 * another vCPU's command-queue work (fixedNs, kept as recorded).
 */
export function reprice(run: RecordedRun, costs: Float64Array): { ops: RecordedOp[]; threadEndNs: Map<number, number> } {
  const price = run.vectors.map((v) => packedDot(v, costs));
  const shift = new Map<number, number>();
  const ops = run.ops.map((o): RecordedOp => {
    const ns = (price[o.steps] as number) + o.fixedNs;
    const moved = o.arrival ? 0 : (shift.get(o.thread) ?? 0);
    shift.set(o.thread, moved + ns - o.ns);
    return {
      ...o,
      startNs: o.startNs + moved,
      ns,
      holds: o.holds.map((h) => ({ ...h, atNs: (price[h.atSteps] as number) + h.atFixedNs, ns: (price[h.ownSteps] as number) + h.ownFixedNs })),
    };
  });
  const threadEndNs = new Map([...run.threadEndNs].map(([t, end]) => [t, end + (shift.get(t) ?? 0)]));
  return { ops, threadEndNs };
}
