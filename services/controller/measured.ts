/**
 * The measured section of a run (results.json runs[].measured): this host's real IPC between the
 * simulator's processes, per operation, per hop and per transition kind, with the host's floor
 * beside it, kept apart from every modeled figure. A run may repeat its measured part (--trials N):
 * each figure is then the median of the trials with a seeded bootstrap interval, so the interval is
 * the same every time for the same trial values.
 */
import { NS_PER_US } from '../runtime/clock.js';
import type { StartReply__Output } from '../runtime/generated/vmmsim/v1/StartReply.js';
import type { Summary__Output as Summary } from '../runtime/generated/vmmsim/v1/Summary.js';
import { percentileOfSorted, summarizeValues } from '../runtime/samples.js';
import { TRANSITION_KINDS, transitionOf, type Role, type TransitionKind } from '../runtime/topology.js';
import type { MachineState } from './machine.js';
import { SETUP_THREAD } from '../guest/driver.js';
import { settling, unsettled, type Settling } from './settling.js';

/** What the measured section says it is, in results.json and above its tables. */
export const MEASURED_ABOUT =
  "this host's real IPC between the simulator's processes (gRPC streams between OS processes on this machine), not a model of real hardware; the modeled figures are the projection";

/**
 * One measured figure over the trials: the median of the trial values, its 95% bootstrap interval
 * (null with one trial), and every trial's value in order.
 */
export interface Estimate {
  value: number;
  ci95: [number, number] | null;
  trials: number[];
}

export interface MeasuredOp {
  op: string;
  /** Steady operations measured per trial (after the warm-up), summed over the trials. */
  count: number;
  p50Us: Estimate;
  p99Us: Estimate;
  meanUs: Estimate;
  /** Where each trial's steady operations of this kind settled (settling.ts, MSER-5; absent in a results.json written before it). */
  settling?: MeasuredSettling;
}

/**
 * Where a kind of operation's measured times settled in each trial (settling.ts: MSER-5 on the
 * steady operations of each guest in the order they completed): the operations still warming up,
 * their median, the median of the rest, and the warm-up per vCPU that would have left them out.
 * Only a start that settling.ts calls unsettled counts (a slow start of a few operations, or one
 * barely slower, is settled): afterOps 0 and p50FirstUs null otherwise.
 */
export interface MeasuredSettling {
  /** Steady operations before the settled part, per trial (0: settled from the first). */
  afterOps: number[];
  /** Their median measured time, per trial (null where there were none). */
  p50FirstUs: (number | null)[];
  /** The median of the settled part (of every steady operation where afterOps is 0). */
  p50Us: Estimate;
  /**
   * Operations per vCPU (--warmup counts them so) a warm-up would have needed to leave the unsettled
   * start out, the warm-up given included, per trial (0 where it settled); where `late`, every
   * operation the vCPU ran: the run was too short to say where it settles.
   */
  warmupPerThread: number[];
  /** Still getting faster at the middle of the run, per trial (settling.ts Settling.late). */
  late: boolean[];
  /** Steady operations of the trial, per trial. */
  steadyOps: number[];
}

export interface MeasuredHop {
  from: string;
  to: string;
  /** The transition a request pays on this hop (exit, user, ioctl, hw, direct), or the one whose reply it carries. */
  transition: TransitionKind | null;
  direction: 'request' | 'reply' | null;
  count: number;
  p50Us: Estimate;
  p99Us: Estimate;
}

/**
 * One kind of context transition as this host's IPC plays it: the request hop and its reply, p50
 * each, added (a round trip), averaged over the pairs of processes that make that kind.
 */
export interface MeasuredTransition {
  kind: TransitionKind;
  /** The hop pairs (request direction) that make it: `guest-0>kvm`. */
  pairs: string[];
  roundTripP50Us: Estimate;
}

/** The host's transport floor: what one message costs on the bare layers, one way (half a round trip). */
export interface HostFloor {
  /** How it was measured, in words. */
  how: string;
  measuredAt: string;
  roundTrips: number;
  rawUdsOneWayUs: Summary;
  grpcOneWayUs: Summary;
  /** CPUs the floor's two processes ran on (--pin), or null. */
  cpus: number[] | null;
}

/** Where the processes ran: unpinned, or each on the CPU named (--pin). */
export interface Placement {
  pin: string;
  cpus: Record<string, number>;
}

/**
 * One process's share of one kind of operation's measured time, after the warm-up: the time it held
 * each operation (from receiving a hop to sending the next, on its own clock), summed per operation;
 * the guest's share is what is left once the crossings and the other processes' shares are out.
 */
export interface MeasuredResidence {
  op: string;
  process: string;
  /** Times an operation entered the process, on average (the guest counts its start). */
  visitsPerOp: number;
  /** Operations split (each operation whose hops form one chain). */
  count: number;
  p50Us: Estimate;
  p99Us: Estimate;
}

export interface MeasuredSection {
  about: string;
  trials: number;
  /** Operations of each guest thread left out of every figure here, per trial (they count in the modeled figures). */
  warmupOps: number;
  /** Warm-up operations left out, over every thread and trial. */
  warmupOpsExcluded: number;
  placement: Placement | null;
  /** The host's floor, measured at the start of the command (absent when it could not be). */
  floor?: HostFloor;
  /** Topology.floor_peer runs (the path bench): the bare grpc-js floor between two of the run's processes, one way, between operations. */
  inPathFloorUs?: Estimate;
  ops: MeasuredOp[];
  hops: MeasuredHop[];
  transitions: MeasuredTransition[];
  /** Where each operation kind's time went, by process, and its crossings (`process` "crossings"). */
  residence?: MeasuredResidence[];
  /** Operations per second over the run, measured. */
  opsPerSec: Estimate;
  machine: MachineState;
}

/** One trial's raw figures, before they are put together with the other trials. */
export interface TrialFigures {
  ops: { op: string; count: number; p50Us: number; p99Us: number; meanUs: number; settling: TrialSettling }[];
  hops: { from: string; to: string; fromRole: string; toRole: string; count: number; p50Us: number; p99Us: number }[];
  opsPerSec: number;
  inPathFloorUs: number | undefined;
  warmupOps: number;
  residence: { op: string; process: string; visitsPerOp: number; count: number; p50Us: number; p99Us: number }[];
}

/** One trial's settling of one kind of operation, over its guests (MeasuredSettling). */
export interface TrialSettling {
  afterOps: number;
  p50FirstUs: number;
  p50RestUs: number;
  warmupPerThread: number;
  late: boolean;
}

/** A kind of operation's steady times in one guest, in the order they completed, with each one's place on its vCPU. */
interface Series {
  ns: number[];
  /** Operations its vCPU had completed (warm-up included) when each one completed. */
  nth: number[];
}

/**
 * Settling over several guests: each guest's series settles on its own (their operations interleave
 * in real time in no order the replies keep), and only a guest whose start was unsettled gives up
 * its first operations; the dropped and the kept operations are pooled.
 */
function settleSeries(series: readonly Series[]): TrialSettling {
  const first: number[] = [];
  const rest: number[] = [];
  let warmupPerThread = 0;
  let late = false;
  for (const s of series) {
    const t: Settling = settling(s.ns);
    const after = unsettled(t, s.ns.length) ? t.after : 0;
    for (let i = 0; i < s.ns.length; i++) (i < after ? first : rest).push(s.ns[i] as number);
    if (after === 0) continue;
    late ||= t.late;
    // Every dropped operation inside the warm-up: the largest place any of them had on its vCPU,
    // or, still falling at the middle, every operation the run had.
    const upTo = t.late ? s.nth.length : after;
    for (let i = 0; i < upTo; i++) warmupPerThread = Math.max(warmupPerThread, s.nth[i] as number);
  }
  const p50 = (xs: number[]): number => (xs.length > 0 ? summarizeValues(xs, NS_PER_US).p50 : NaN);
  return { afterOps: first.length, p50FirstUs: p50(first), p50RestUs: p50(rest), warmupPerThread, late };
}

/**
 * A trial's figures from its guests' replies: steady operations (not warm-up) by kind with where
 * they settled, steady hop crossings, the in-path floor when one was timed. `vcpus`: the workload's
 * threads per guest, whose lanes (an application workload's queue slots, thread ids t + k x vcpus)
 * count on their vCPU as the guest's warm-up does; absent, each thread id is its own.
 */
export function trialFigures(replies: readonly StartReply__Output[], roleOf: (name: string) => string, opsPerSec: number, vcpus?: number): TrialFigures {
  const vcpuOf = (thread: number): number => (vcpus && vcpus > 0 && thread < SETUP_THREAD ? thread % vcpus : thread);
  // Each kind's steady times per guest, kinds in the order the replies first name them.
  const perGuest = new Map<string, Series[]>();
  let warmupOps = 0;
  for (const r of replies) {
    for (const o of r.ops) if (!perGuest.has(o.op)) perGuest.set(o.op, []);
    const mine = new Map<string, Series>();
    const done = new Map<number, number>();
    for (const e of r.timeline) {
      const vcpu = vcpuOf(e.thread);
      const nth = (done.get(vcpu) ?? 0) + 1;
      done.set(vcpu, nth);
      if (e.warmup) {
        warmupOps += 1;
        continue;
      }
      const op = r.ops[e.op]?.op ?? '';
      let s = mine.get(op);
      if (!s) mine.set(op, (s = { ns: [], nth: [] }));
      s.ns.push(e.measuredNs);
      s.nth.push(nth);
    }
    for (const [op, s] of mine) perGuest.get(op)?.push(s);
  }
  const ops = [...perGuest].map(([op, series]) => {
    const s = summarizeValues(series.flatMap((x) => x.ns), NS_PER_US);
    return { op, count: s.count, p50Us: s.p50, p99Us: s.p99, meanUs: s.mean, settling: settleSeries(series) };
  });
  // Hops by pair over every guest: a shared kvm or vfio hop is crossed by several VMs' operations.
  const hopSets = new Map<string, { from: string; to: string; parts: Summary[] }>();
  for (const r of replies) {
    for (const h of r.hops) {
      const key = `${h.from}>${h.to}`;
      let e = hopSets.get(key);
      if (!e) hopSets.set(key, (e = { from: h.from, to: h.to, parts: [] }));
      if (h.steadyUs && Number(h.steadyUs.count) > 0) e.parts.push(h.steadyUs);
    }
  }
  const hops = [...hopSets.values()].map((h) => {
    const count = h.parts.reduce((n, p) => n + Number(p.count), 0);
    // Several guests' summaries of one hop: their count-weighted p50 and the largest p99 (raw
    // samples stay in the guests).
    const p50 = count > 0 ? h.parts.reduce((n, p) => n + p.p50 * Number(p.count), 0) / count : NaN;
    const p99 = h.parts.length > 0 ? Math.max(...h.parts.map((p) => p.p99)) : NaN;
    return { from: h.from, to: h.to, fromRole: roleOf(h.from), toRole: roleOf(h.to), count, p50Us: round(p50), p99Us: round(p99) };
  });
  const floors = replies.map((r) => r.floorUs).filter((f): f is Summary => f !== null && f !== undefined && Number(f.count) > 0);
  const inPathFloorUs = floors.length > 0 ? floors.reduce((n, f) => n + f.p50 * Number(f.count), 0) / floors.reduce((n, f) => n + Number(f.count), 0) : undefined;
  // Residence by (op, process) over every guest, count-weighted as the hops; each op's crossings as the row "crossings".
  const resSets = new Map<string, { op: string; process: string; visits: number; parts: Summary[] }>();
  const add = (op: string, process: string, visits: number, s: Summary | null | undefined): void => {
    if (!s || Number(s.count) === 0) return;
    const key = `${op}>${process}`;
    let e = resSets.get(key);
    if (!e) resSets.set(key, (e = { op, process, visits: 0, parts: [] }));
    e.visits += visits * Number(s.count);
    e.parts.push(s);
  };
  for (const r of replies) {
    // Per op: its crossings first, then the processes in the guest's order (its own first).
    const crossingsSeen = new Set<string>();
    for (const x of r.residence ?? []) {
      if (!crossingsSeen.has(x.op)) {
        crossingsSeen.add(x.op);
        add(x.op, RESIDENCE_CROSSINGS, 0, x.crossingsUs);
      }
      add(x.op, x.process, x.visitsPerOp, x.steadyUs);
    }
  }
  const residence = [...resSets.values()].map((e) => {
    const count = e.parts.reduce((n, p) => n + Number(p.count), 0);
    const p50 = count > 0 ? e.parts.reduce((n, p) => n + p.p50 * Number(p.count), 0) / count : NaN;
    const p99 = e.parts.length > 0 ? Math.max(...e.parts.map((p) => p.p99)) : NaN;
    return { op: e.op, process: e.process, visitsPerOp: count > 0 ? Math.round((e.visits / count) * 100) / 100 : 0, count, p50Us: round(p50), p99Us: round(p99) };
  });
  return { ops, hops, opsPerSec, inPathFloorUs: inPathFloorUs === undefined ? undefined : round(inPathFloorUs), warmupOps, residence };
}

/** The residence row that holds an operation's one-way crossings, summed. */
export const RESIDENCE_CROSSINGS = 'crossings';

function round(x: number): number {
  return Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x;
}

/** mulberry32: a small seeded generator, so an interval is the same every time for the same values. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A figure's name as a seed (FNV-1a), so every figure gets its own resampling stream. */
function nameSeed(name: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Resamples drawn for an interval. */
export const BOOTSTRAP_RESAMPLES = 2000;

/**
 * The percentile bootstrap interval (95%) of the median of `values`: BOOTSTRAP_RESAMPLES samples
 * of the same size drawn with replacement, by a generator seeded with `seed` and the figure's name.
 * Null for fewer than two finite values.
 */
export function bootstrapMedianCi(values: readonly number[], name: string, seed: number): [number, number] | null {
  const xs = values.filter(Number.isFinite);
  const n = xs.length;
  if (n < 2) return null;
  const rand = seededRandom(nameSeed(name, seed));
  const medians = new Float64Array(BOOTSTRAP_RESAMPLES);
  const draw = new Array<number>(n);
  for (let b = 0; b < BOOTSTRAP_RESAMPLES; b++) {
    for (let i = 0; i < n; i++) draw[i] = xs[Math.floor(rand() * n)] as number;
    medians[b] = median(draw);
  }
  medians.sort();
  return [round(percentileOfSorted(medians, 2.5)), round(percentileOfSorted(medians, 97.5))];
}

export function estimate(values: readonly number[], name: string, seed: number): Estimate {
  return { value: round(median(values)), ci95: bootstrapMedianCi(values, name, seed), trials: values.map(round) };
}

/** The trials' spread of a figure: (max - min) / median, 0 for one trial. */
export function spread(e: Estimate): number {
  const xs = e.trials.filter(Number.isFinite);
  if (xs.length < 2 || !(e.value > 0)) return 0;
  return (Math.max(...xs) - Math.min(...xs)) / e.value;
}

/**
 * Which transition a hop plays: a request hop pays the transition of its roles; the reverse hop
 * carries its reply. `guestIsHost`: bare metal, where the guest process plays the host kernel (transitionOf).
 */
export function transitionOfHop(fromRole: string, toRole: string, guestIsHost = false): { transition: TransitionKind | null; direction: 'request' | 'reply' | null } {
  const req = transitionOf(fromRole as Role, toRole as Role, guestIsHost);
  if (req) return { transition: req, direction: 'request' };
  const rep = transitionOf(toRole as Role, fromRole as Role, guestIsHost);
  if (rep) return { transition: rep, direction: 'reply' };
  return { transition: null, direction: null };
}

export interface SectionInputs {
  trials: readonly TrialFigures[];
  seed: number;
  warmupOps: number;
  placement: Placement | null;
  floor: HostFloor | undefined;
  machine: MachineState;
  /** Bare metal (the design host): the guest process plays the host kernel, so guest -> psmmu is hw. */
  guestIsHost?: boolean;
}

/** The measured section of a run from its trials' figures. */
export function measuredSection(inp: SectionInputs): MeasuredSection {
  const { trials, seed } = inp;
  const opNames: string[] = [];
  for (const t of trials) for (const o of t.ops) if (!opNames.includes(o.op)) opNames.push(o.op);
  const ops: MeasuredOp[] = opNames.map((op) => {
    const per = trials.map((t) => t.ops.find((o) => o.op === op));
    const f = (k: 'p50Us' | 'p99Us' | 'meanUs'): Estimate => estimate(per.map((o) => (o && o.count > 0 ? o[k] : NaN)), `op.${op}.${k}`, seed);
    const settled: MeasuredSettling = {
      afterOps: per.map((o) => o?.settling.afterOps ?? 0),
      p50FirstUs: per.map((o) => (o && o.settling.afterOps > 0 ? round(o.settling.p50FirstUs) : null)),
      p50Us: estimate(per.map((o) => (o && o.count > 0 ? o.settling.p50RestUs : NaN)), `op.${op}.settledP50Us`, seed),
      warmupPerThread: per.map((o) => o?.settling.warmupPerThread ?? 0),
      late: per.map((o) => o?.settling.late ?? false),
      steadyOps: per.map((o) => o?.count ?? 0),
    };
    return { op, count: per.reduce((n, o) => n + (o?.count ?? 0), 0), p50Us: f('p50Us'), p99Us: f('p99Us'), meanUs: f('meanUs'), settling: settled };
  });
  const hopKeys: { from: string; to: string; fromRole: string; toRole: string }[] = [];
  for (const t of trials) for (const h of t.hops) if (!hopKeys.some((k) => k.from === h.from && k.to === h.to)) hopKeys.push(h);
  const hops: MeasuredHop[] = hopKeys.map((k) => {
    const per = trials.map((t) => t.hops.find((h) => h.from === k.from && h.to === k.to));
    const f = (x: 'p50Us' | 'p99Us'): Estimate => estimate(per.map((h) => (h && h.count > 0 ? h[x] : NaN)), `hop.${k.from}>${k.to}.${x}`, seed);
    return { from: k.from, to: k.to, ...transitionOfHop(k.fromRole, k.toRole, inp.guestIsHost), count: per.reduce((n, h) => n + (h?.count ?? 0), 0), p50Us: f('p50Us'), p99Us: f('p99Us') };
  });
  const transitions: MeasuredTransition[] = [];
  for (const kind of TRANSITION_KINDS) {
    const requests = hopKeys.filter((k) => transitionOf(k.fromRole as Role, k.toRole as Role, inp.guestIsHost) === kind);
    if (requests.length === 0) continue;
    const perTrial = trials.map((t) => {
      const pairs = requests
        .map((k) => {
          const go = t.hops.find((h) => h.from === k.from && h.to === k.to);
          const back = t.hops.find((h) => h.from === k.to && h.to === k.from);
          return go && back && go.count > 0 && back.count > 0 ? go.p50Us + back.p50Us : NaN;
        })
        .filter(Number.isFinite);
      return pairs.length > 0 ? pairs.reduce((a, b) => a + b, 0) / pairs.length : NaN;
    });
    transitions.push({ kind, pairs: requests.map((k) => `${k.from}>${k.to}`), roundTripP50Us: estimate(perTrial, `transition.${kind}`, seed) });
  }
  const resKeys: { op: string; process: string }[] = [];
  for (const t of trials) for (const x of t.residence) if (!resKeys.some((k) => k.op === x.op && k.process === x.process)) resKeys.push(x);
  const residence: MeasuredResidence[] = resKeys.map((k) => {
    const per = trials.map((t) => t.residence.find((x) => x.op === k.op && x.process === k.process));
    const f = (x: 'p50Us' | 'p99Us'): Estimate => estimate(per.map((r) => (r && r.count > 0 ? r[x] : NaN)), `residence.${k.op}.${k.process}.${x}`, seed);
    const counted = per.filter((r) => r && r.count > 0);
    const visits = counted.length > 0 ? counted.reduce((n, r) => n + (r?.visitsPerOp ?? 0), 0) / counted.length : 0;
    return { op: k.op, process: k.process, visitsPerOp: Math.round(visits * 100) / 100, count: per.reduce((n, r) => n + (r?.count ?? 0), 0), p50Us: f('p50Us'), p99Us: f('p99Us') };
  });
  const floors = trials.map((t) => t.inPathFloorUs ?? NaN);
  return {
    about: MEASURED_ABOUT,
    trials: trials.length,
    warmupOps: inp.warmupOps,
    warmupOpsExcluded: trials.reduce((n, t) => n + t.warmupOps, 0),
    placement: inp.placement,
    ...(inp.floor ? { floor: inp.floor } : {}),
    ...(floors.some(Number.isFinite) ? { inPathFloorUs: estimate(floors, 'inPathFloor', seed) } : {}),
    ops,
    hops,
    transitions,
    residence,
    opsPerSec: estimate(trials.map((t) => t.opsPerSec), 'opsPerSec', seed),
    machine: inp.machine,
  };
}
