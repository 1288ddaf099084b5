/**
 * Sensitivity analysis (vmmsim sensitivity, docs/cost-model.md): each design's run, recorded once
 * (recorded.ts), re-priced across the profile's cost ranges without starting a process again:
 * every step alone at its range's lo and hi (the tornado), and N Latin-hypercube samples of every
 * step together, each through the deterministic queueing replay (queueing.ts). For every pair of
 * designs and every operation both ran, the ratio of their modeled means (second / first) is
 * summarised as p5/p50/p95 and a verdict: `robust` when the order of the two at the profile's own
 * costs holds in at least 95% of the samples, else `depends on` the three steps whose ranges move
 * the ratio most. Where a run's behaviour depended on modeled time, re-pricing it is not exact: the
 * design, and every comparison it is in, says `approximate` and why.
 */
import type { CostProfile } from '../cost/profile.js';
import { Random } from '../machine/random.js';
import { simulateQueueing } from './queueing.js';
import { reprice, type RecordedRun } from './recorded.js';

/** The share of samples in which the order must hold for a comparison to be robust. */
export const ROBUST_SHARE = 0.95;
/** How many steps a fragile comparison names. */
export const DEPENDS_ON = 3;
/** Default number of Latin-hypercube samples. */
export const DEFAULT_SAMPLES = 200;
/** Tornado bars kept per comparison in results.json (those that move the ratio, largest first). */
const TORNADO_KEEP = 12;
/** The PRNG stream of the sampling: apart from every stream a run's processes draw from. */
const LHS_STREAM = 0x5e45;

/** Why a design's re-pricing is not exact (docs/cost-model.md). */
export interface ApproximateReason {
  /** Stable, for tools: lazy-timer, open-loop-backlog, trace-idle, branched. */
  code: string;
  text: string;
}

/** A design's recorded run and what the analysis needs to know of its scenario. */
export interface SensitivityDesign {
  model: string;
  run: RecordedRun;
  /** The guest DMA API mode (lazy: a flush queue with a timer). */
  dma: string;
  /** The workload kind (trace-replay: vCPUs idle as the trace's timestamps say). */
  workload: string;
  /**
   * The run carries runs[].application (issue 14): its application throughput (the I/Os, operations
   * named `io` or `io@...`, per modeled second, as runs[].application.perSecModeled) is compared too.
   */
  application: boolean;
  /** Operation kinds not counted in throughput (the host's virtio-mem resizes). */
  notWorkload?: (op: string) => boolean;
}

/**
 * How a sample draws a step's cost inside its range: `uniform` (every value of the range alike: the
 * range says what is plausible, not what is likely), or `triangular` (the profile's cost the most
 * likely, falling to nothing at lo and hi: the three-point estimate of cost analysis).
 */
export type Distribution = 'uniform' | 'triangular';
export const DISTRIBUTIONS: readonly Distribution[] = ['uniform', 'triangular'];

export interface SensitivityOptions {
  samples: number;
  seed: number;
  /** Default uniform. */
  distribution?: Distribution;
}

/** One step's range as sampled. */
export interface StepRange {
  step: string;
  ns: number;
  lo: number;
  hi: number;
  confidence: string;
}

export interface TornadoBar {
  step: string;
  /** The ratio with this step alone at its lo, and at its hi (every other step at its own cost). */
  ratioLo: number;
  ratioHi: number;
  /** How far the ratio moves across the range: max - min of ratioLo, ratioHi and the base ratio. */
  swing: number;
}

export interface Comparison {
  /** Ratio = b / a: what b's figure is in a's (below 1: b's operation is faster). */
  a: string;
  b: string;
  /**
   * An operation kind (its mean modeled latency: below 1, b is faster), or `application`
   * (application throughput: above 1, b delivers more).
   */
  metric: string;
  /** At the profile's own costs (the run's own figures). */
  base: number;
  p5: number;
  p50: number;
  p95: number;
  /** Share of the samples in which the order of a and b is the one at the profile's own costs. */
  holds: number;
  verdict: 'robust' | 'depends';
  /** The steps whose ranges move the ratio most (empty when robust, or when none moves it). */
  dependsOn: string[];
  /** Re-pricing at least one of the two is not exact (their designs' reasons say why). */
  approximate: boolean;
  tornado: TornadoBar[];
  /**
   * The ratio at the profile's costs lies above the samples' p95 or below their p5 (absent: inside).
   * It happens when ranges reach further on one side of their costs than on the other: the samples
   * then lean that way, whatever the verdict.
   */
  baseOutside?: 'above' | 'below';
  /** With baseOutside: the steps that lean the samples that way most (their range's mean against their cost, times their slope). */
  leaningOn?: string[];
}

/** results.json `sensitivity` (docs/results.md). */
export interface SensitivitySection {
  method: 'latin-hypercube';
  /** How each step's cost is drawn inside its range (added later: absent in older documents means uniform). */
  distribution: Distribution;
  samples: number;
  seed: number;
  profile: string;
  robustShare: number;
  /** Every step's range, in the profile's step order (a step whose range is a point never varies). */
  steps: StepRange[];
  designs: { model: string; exact: boolean; approximate: ApproximateReason[] }[];
  comparisons: Comparison[];
}

/** A design's figures under one cost table: mean modeled latency per operation kind, and throughputs. */
export interface Figures {
  means: Map<string, number>;
  /** Workload operations per modeled second (runs[].throughput.opsPerSecModeled). */
  throughput: number;
  /** Application I/Os per modeled second (runs[].application.perSecModeled), 0 without any. */
  applicationPerSec: number;
  backlogged: number;
}

/** An application's I/O: the operation `io`, with or without a suffix (`io@emulated`). */
export function isApplicationIo(op: string): boolean {
  return op === 'io' || op.startsWith('io@');
}

function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

/**
 * A Latin hypercube of n samples in `dims` dimensions on [0, 1): in every dimension each of the n
 * strata [k/n, (k+1)/n) holds exactly one sample, at a uniform point inside it; which sample gets
 * which stratum is a seeded permutation per dimension.
 */
export function latinHypercube(n: number, dims: number, rand: Random): Float64Array[] {
  const out = Array.from({ length: n }, () => new Float64Array(dims));
  const perm = new Array<number>(n);
  for (let d = 0; d < dims; d++) {
    for (let i = 0; i < n; i++) perm[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = rand.int(i + 1);
      [perm[i], perm[j]] = [perm[j] as number, perm[i] as number];
    }
    for (let i = 0; i < n; i++) (out[i] as Float64Array)[d] = ((perm[i] as number) + rand.next()) / n;
  }
  return out;
}

/**
 * The cost at quantile u of a step's distribution over [lo, hi]: uniform, or triangular with its mode
 * at the profile's cost (inverse of the triangular CDF).
 */
export function costAt(s: StepRange, u: number, distribution: Distribution): number {
  const { lo, hi } = s;
  if (distribution === 'uniform') return lo + u * (hi - lo);
  const mode = Math.min(hi, Math.max(lo, s.ns));
  const w = hi - lo;
  const f = (mode - lo) / w;
  return u < f ? lo + Math.sqrt(u * w * (mode - lo)) : hi - Math.sqrt((1 - u) * w * (hi - mode));
}

/**
 * `n` cost tables (ns by index of `steps`): a Latin hypercube over the steps whose range is not a
 * point, each sample's cost drawn from its quantile in the step's distribution (costAt), rounded to
 * whole ns as a profile's are; a step whose range is a point keeps its cost. Seeded: the same steps,
 * n, seed and distribution give the same tables.
 */
export function sampleCosts(steps: readonly StepRange[], n: number, seed: number, distribution: Distribution = 'uniform'): Float64Array[] {
  const varying = steps.map((s, i) => ({ s, i })).filter(({ s }) => s.hi > s.lo);
  const cube = latinHypercube(n, varying.length, new Random(seed, LHS_STREAM));
  return cube.map((u) => {
    const c = Float64Array.from(steps, (s) => s.ns);
    varying.forEach(({ s, i }, d) => {
      c[i] = Math.round(costAt(s, u[d] as number, distribution));
    });
    return c;
  });
}

/** The profile's steps with their ranges, in sorted step order (the runs' step index order). */
export function stepRanges(profile: CostProfile): StepRange[] {
  return Object.keys(profile.steps)
    .sort()
    .map((step) => {
      const s = profile.steps[step] as CostProfile['steps'][string];
      return { step, ns: Math.round(s.ns), lo: Math.round(s.range[0]), hi: Math.round(s.range[1]), confidence: s.confidence };
    });
}

/** Linear interpolation between closest ranks of a sorted list. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const x = (sorted.length - 1) * q;
  const i = Math.floor(x);
  const lo = sorted[i] as number;
  const hi = sorted[Math.min(i + 1, sorted.length - 1)] as number;
  return lo + (hi - lo) * (x - i);
}

/**
 * Prices one design's recorded run under `costs` (ns by the design's step index) and replays its
 * queueing: each operation kind's mean modeled latency as results.json rounds it (modeledNs.mean),
 * and operations per modeled second.
 */
export function figuresOf(d: SensitivityDesign, costs: Float64Array): Figures {
  const priced = reprice(d.run, costs);
  const q = simulateQueueing(priced.ops, { foreground: new Set(priced.threadEndNs.keys()) });
  const sums = new Map<string, { sum: number; n: number }>();
  let workloadOps = 0;
  let ios = 0;
  let backlogged = 0;
  priced.ops.forEach((o, k) => {
    const v = q.latencyNs[k] ?? o.ns;
    // As Distribution.record counts a value: whole ns, nothing below 0.
    const r = v > 0 ? Math.round(v) : 0;
    let s = sums.get(o.kind);
    if (!s) sums.set(o.kind, (s = { sum: 0, n: 0 }));
    s.sum += r;
    s.n += 1;
    if (!d.notWorkload?.(o.kind)) workloadOps += 1;
    if (isApplicationIo(o.kind)) ios += 1;
    if ((q.backlogNs[k] ?? 0) > 0) backlogged += 1;
  });
  let elapsed = 0;
  for (const [thread, end] of priced.threadEndNs) elapsed = Math.max(elapsed, end + (q.threadShiftNs.get(thread) ?? 0));
  const means = new Map([...sums].map(([k, s]) => [k, Math.round((s.sum / s.n) * 1000) / 1000]));
  return {
    means,
    throughput: elapsed > 0 ? Math.round((workloadOps / (elapsed / 1e9)) * 1000) / 1000 : 0,
    applicationPerSec: elapsed > 0 ? Math.round(ios / (elapsed / 1e9)) : 0,
    backlogged,
  };
}

/** Why re-pricing a design's run is not exact, from what it recorded and what the replays saw. */
export function approximateReasons(d: SensitivityDesign, backlogged: number): ApproximateReason[] {
  const out: ApproximateReason[] = [];
  if (d.dma === 'lazy') {
    out.push({ code: 'lazy-timer', text: 'lazy mode: the flush queue\'s timer runs in modeled time, so which unmaps a timer flush covers, and when, could change with the costs; the recorded flushes are kept' });
  }
  const arrivals = d.run.ops.filter((o) => o.arrival).length;
  if (arrivals > 0 && backlogged > 0) {
    out.push({ code: 'open-loop-backlog', text: `open loop: arrivals keep their recorded times, and in the recorded run or a re-priced one ${backlogged} arrival(s) waited behind their vCPU's earlier work; what the guest did at the recorded times (its flush timer, its device's DMA) is kept` });
  }
  if (d.workload === 'trace-replay') {
    out.push({ code: 'trace-idle', text: 'trace replay: when a vCPU is idle follows the trace\'s timestamps against modeled time, which the costs move' });
  }
  const gathered = d.run.ops.filter((o) => o.fixedNs !== 0).length;
  if (gathered > 0) {
    out.push({ code: 'cmdq-gather', text: `${gathered} operation(s) waited in modeled time for another vCPU's command-queue work (arm_smmu_cmdq_issue_cmdlist: a gathered list for its owner's PROD write, an owner for the previous owner's): those waits are kept as recorded, and which lists are gathered could change with the costs` });
  }
  const branched = d.run.ops.filter((o) => o.branched).length;
  if (branched > 0) {
    out.push({ code: 'branched', text: `${branched} operation(s) took the longest of parallel branches whose step counts do not contain one another: under other costs another branch could be the longest` });
  }
  return out;
}

/** Ratio b / a of two figures; NaN when a is 0 (nothing to compare against). */
function ratioOf(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || a === 0) return NaN;
  return b / a;
}

function orderOf(r: number): number {
  return Math.abs(r - 1) < 1e-9 ? 0 : r < 1 ? -1 : 1;
}

/**
 * The analysis: every design re-priced at the profile's own costs, each step alone at lo and hi, and
 * `samples` Latin-hypercube samples; then every pair (in the order given) and metric compared.
 */
export function analyse(designs: readonly SensitivityDesign[], profile: CostProfile, o: SensitivityOptions): SensitivitySection {
  const steps = stepRanges(profile);
  const base = Float64Array.from(steps, (s) => s.ns);
  // Each design's step index into the profile's (a design's table is the run's cost table: the same names).
  const maps = designs.map((d) => Int32Array.from(d.run.stepNames, (n) => steps.findIndex((s) => s.step === n)));
  const priceAll = (global: Float64Array): Figures[] =>
    designs.map((d, i) => {
      const map = maps[i] as Int32Array;
      const local = Float64Array.from(map, (g) => (g >= 0 ? (global[g] as number) : 0));
      return figuresOf(d, local);
    });
  const atBase = priceAll(base);
  const backlogged = atBase.map((f) => f.backlogged);

  const varying = steps.map((s, i) => ({ s, i })).filter(({ s }) => s.hi > s.lo);
  const tornado = varying.map(({ s, i }) => {
    const lo = base.slice();
    lo[i] = s.lo;
    const hi = base.slice();
    hi[i] = s.hi;
    return { step: s.step, lo: priceAll(lo), hi: priceAll(hi) };
  });

  const distribution = o.distribution ?? 'uniform';
  const sampled = sampleCosts(steps, o.samples, o.seed, distribution).map(priceAll);
  for (const figs of [...tornado.flatMap((t) => [t.lo, t.hi]), ...sampled]) figs.forEach((f, i) => (backlogged[i] = (backlogged[i] as number) + f.backlogged));

  const reasons = designs.map((d, i) => approximateReasons(d, backlogged[i] as number));
  // How far each varying step's draws sit from its cost on average: (lo + hi) / 2 - ns uniform,
  // (lo + hi - 2 ns) / 3 triangular (the mean of a triangle with its mode at the cost).
  const drift = new Map(varying.map(({ s }) => [s.step, { shift: distribution === 'triangular' ? (s.lo + s.hi - 2 * s.ns) / 3 : (s.lo + s.hi) / 2 - s.ns, width: s.hi - s.lo }]));
  /** The steps whose one-sided ranges lean the samples' ratio the way they lie from the base, most first. */
  const leaning = (bars: { step: string; lo: number; hi: number }[], side: 'above' | 'below'): string[] =>
    bars
      .map((b) => {
        const d = drift.get(b.step);
        // The ratio's expected move from this step alone: its slope across the range times its draws' mean shift.
        const move = d && d.width > 0 && Number.isFinite(b.hi - b.lo) ? ((b.hi - b.lo) / d.width) * d.shift : 0;
        return { step: b.step, lean: side === 'above' ? -move : move };
      })
      .filter((b) => b.lean > 0)
      .sort((x, y) => y.lean - x.lean || (x.step < y.step ? -1 : 1))
      .slice(0, DEPENDS_ON)
      .map((b) => b.step);
  const comparisons: Comparison[] = [];
  for (let ia = 0; ia < designs.length; ia++) {
    for (let ib = ia + 1; ib < designs.length; ib++) {
      const da = designs[ia] as SensitivityDesign;
      const db = designs[ib] as SensitivityDesign;
      const fa = atBase[ia] as Figures;
      const fb = atBase[ib] as Figures;
      const metrics: { metric: string; pick: (f: Figures) => number | undefined }[] = [...fa.means.keys()]
        .filter((k) => fb.means.has(k))
        .map((k) => ({ metric: k, pick: (f: Figures) => f.means.get(k) }));
      if (da.application && db.application) metrics.push({ metric: 'application', pick: (f) => f.applicationPerSec });
      for (const m of metrics) {
        const ratio = (figs: Figures[]): number => ratioOf(m.pick(figs[ia] as Figures), m.pick(figs[ib] as Figures));
        const b0 = ratio(atBase);
        if (!Number.isFinite(b0)) continue;
        const rs = sampled.map(ratio).filter(Number.isFinite).sort((x, y) => x - y);
        const order = orderOf(b0);
        const holds = rs.length > 0 ? rs.filter((r) => orderOf(r) === order).length / rs.length : 1;
        // Each varying step alone at its lo and at its hi: the tornado, and what leans the samples.
        const alone = tornado.map((t) => ({ step: t.step, lo: ratio(t.lo), hi: ratio(t.hi) }));
        const bars: TornadoBar[] = alone
          .map(({ step, lo: rl, hi: rh }) => {
            const swing = Math.max(rl, rh, b0) - Math.min(rl, rh, b0);
            return { step, ratioLo: round4(rl), ratioHi: round4(rh), swing: Number.isFinite(swing) ? swing : 0 };
          })
          .filter((t) => t.swing > 0)
          .sort((x, y) => y.swing - x.swing || (x.step < y.step ? -1 : 1))
          .slice(0, TORNADO_KEEP)
          .map((t) => ({ ...t, swing: round4(t.swing) }));
        const robust = holds >= ROBUST_SHARE;
        const p5 = quantile(rs, 0.05);
        const p95 = quantile(rs, 0.95);
        const outside = b0 > p95 ? 'above' : b0 < p5 ? 'below' : undefined;
        comparisons.push({
          a: da.model,
          b: db.model,
          metric: m.metric,
          base: round4(b0),
          p5: round4(p5),
          p50: round4(quantile(rs, 0.5)),
          p95: round4(p95),
          holds: Math.round(holds * 1000) / 1000,
          verdict: robust ? 'robust' : 'depends',
          dependsOn: robust ? [] : bars.slice(0, DEPENDS_ON).map((t) => t.step),
          approximate: (reasons[ia] as ApproximateReason[]).length > 0 || (reasons[ib] as ApproximateReason[]).length > 0,
          tornado: bars,
          ...(outside ? { baseOutside: outside, leaningOn: leaning(alone, outside) } : {}),
        });
      }
    }
  }
  return {
    method: 'latin-hypercube',
    distribution,
    samples: o.samples,
    seed: o.seed,
    profile: profile.name,
    robustShare: ROBUST_SHARE,
    steps,
    designs: designs.map((d, i) => ({ model: d.model, exact: (reasons[i] as ApproximateReason[]).length === 0, approximate: reasons[i] as ApproximateReason[] })),
    comparisons,
  };
}

/** A ratio for people: 0.281x. */
function x(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(r >= 10 ? 1 : 3)}x` : '?';
}

/** One comparison's verdict in words: `robust (100% of 200)` or `depends on a, b, c (71% of 200)`. */
export function verdictText(c: Comparison, samples: number): string {
  const share = `${Math.round(c.holds * 100)}% of ${samples}`;
  const v = c.verdict === 'robust' ? `robust (${share})` : `depends on ${c.dependsOn.join(', ') || 'no single step'} (order holds in ${share})`;
  return `${v}${c.approximate ? ', approximate' : ''}`;
}

/** One line per pair: each metric's ratio, its p5-p95 and its verdict (vmmsim compare --sensitivity). */
export function verdictLines(s: SensitivitySection): string[] {
  const pairs = new Map<string, Comparison[]>();
  for (const c of s.comparisons) {
    const k = `${c.b} / ${c.a}`;
    pairs.set(k, [...(pairs.get(k) ?? []), c]);
  }
  return [...pairs].map(([k, cs]) => `${k}: ${cs.map((c) => `${c.metric} ${x(c.base)} [${x(c.p5)}-${x(c.p95)}] ${verdictText(c, s.samples)}${leanText(c)}`).join('; ')}`);
}

/** With the base outside p5-p95: which way the samples lean and on what (else nothing). */
function leanText(c: Comparison): string {
  if (!c.baseOutside) return '';
  const way = c.baseOutside === 'above' ? 'below' : 'above';
  return `, samples lean ${way} it${c.leaningOn && c.leaningOn.length > 0 ? ` on ${c.leaningOn.join(', ')}` : ''}`;
}

/** The terminal table of a sensitivity section, and what is approximate and why. */
export function sensitivityTable(s: SensitivitySection): string {
  const head = ['b / a', 'metric', 'base', 'p5', 'p50', 'p95', 'holds', 'verdict'];
  const rows = s.comparisons.map((c) => [
    `${c.b} / ${c.a}`,
    c.metric,
    x(c.base),
    x(c.p5),
    x(c.p50),
    x(c.p95),
    `${Math.round(c.holds * 100)}%`,
    (c.verdict === 'robust' ? 'robust' : `depends on ${c.dependsOn.join(', ') || 'no single step'}`) + (c.approximate ? ' (approximate)' : ''),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (r: string[]): string => r.map((c, i) => (i >= 2 && i <= 6 ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number))).join('  ').trimEnd();
  const out = [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  const varied = s.steps.filter((t) => t.hi > t.lo).length;
  const app = s.comparisons.some((c) => c.metric === 'application') ? '; application: b\'s I/Os per modeled second / a\'s (above 1: b delivers more)' : '';
  out.push('', `ratio = b's modeled mean / a's (below 1: b is faster)${app}; ${s.samples} Latin-hypercube samples of ${varied} steps across their ranges (${(s.distribution ?? 'uniform') === 'triangular' ? "triangular, most likely at the profile's cost" : 'uniform'}; profile ${s.profile}, seed ${s.seed}); robust: the order at the profile's costs holds in >= ${Math.round(s.robustShare * 100)}% of them`);
  const outside = s.comparisons.filter((c) => c.baseOutside);
  if (outside.length > 0) {
    out.push(`base outside p5-p95 in ${outside.length} of ${s.comparisons.length}: the ranges of the steps named reach further from their costs on one side, so the samples lean that way (the verdict still counts the order):`);
    for (const c of outside) out.push(`  ${c.b} / ${c.a} ${c.metric}: ${x(c.base)} ${c.baseOutside} [${x(c.p5)}-${x(c.p95)}]${c.leaningOn && c.leaningOn.length > 0 ? `, leaning on ${c.leaningOn.join(', ')}` : ''}`);
  }
  for (const d of s.designs.filter((x) => !x.exact)) for (const r of d.approximate) out.push(`approximate: ${d.model}: ${r.text}`);
  return out.join('\n') + '\n';
}
