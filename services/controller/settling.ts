/**
 * Where a run's measured times settle. A role process compiles its path over its first thousands of
 * operations, and each configure deoptimizes some of what the last run compiled (docs/benchmarks.md,
 * "A run's first operations re-warm the JIT"), so the first operations after a short warm-up are
 * slower than the rest. Trials that get faster one after another show it across trials
 * (measured.still-warming); this finds it inside one trial, from the operations' own times in the
 * order they completed.
 *
 * The truncation point is MSER-5, the marginal standard error rule on batches of five (K. P.
 * White, "An effective truncation heuristic for bias reduction in simulation output", Simulation
 * 69(6), 1997; White, Cobb and Spratt, "A comparison of five steady-state truncation heuristics for
 * simulation", WSC 2000): drop the d leading batches that minimise the squared standard error of
 * the remaining batches' mean, d at most half of them; here each batch stands for its median
 * (mserTruncation). It looks for a transient at the start and nothing else; whether that transient
 * matters is the caller's judgement (here: the dropped operations' median against the rest's).
 */

import { percentileOfSorted } from '../runtime/samples.js';

/** Operations per batch (MSER-5). */
export const MSER_BATCH = 5;
/** Fewer batches than this: too short a series to tell a transient from noise (truncation 0). */
export const MSER_MIN_BATCHES = 10;

/**
 * How many leading values of `xs` MSER-5 drops: a multiple of MSER_BATCH, at most half the series
 * (the rule's own bound: past it the statistic rests on too few batches), 0 for a series of fewer
 * than MSER_MIN_BATCHES batches. Each batch stands for its median, not its mean: a GC pause or a
 * preemption multiplies one operation's time several times over, and on means a few of them made
 * MSER drop parts of steady series (a variant; on a simulated step, medians found its end to within
 * two batches in 93 of 100 seeds, means in 53). A trailing partial batch is left out.
 */
export function mserTruncation(xs: readonly number[]): number {
  const m = Math.floor(xs.length / MSER_BATCH);
  if (m < MSER_MIN_BATCHES) return 0;
  const b = new Float64Array(m);
  const batch = new Float64Array(MSER_BATCH);
  for (let j = 0; j < m; j++) {
    for (let i = 0; i < MSER_BATCH; i++) batch[i] = xs[j * MSER_BATCH + i] as number;
    batch.sort();
    b[j] = batch[MSER_BATCH >> 1] as number;
  }
  // Suffix sums of the batch values and their squares: each candidate d in O(1). Centred on the
  // last batch (the settled end) so the squares do not lose the variance to cancellation.
  const c = b[m - 1] as number;
  let sum = 0;
  let sq = 0;
  const stat = new Float64Array(m);
  for (let j = m - 1; j >= 0; j--) {
    const v = (b[j] as number) - c;
    sum += v;
    sq += v * v;
    const k = m - j;
    stat[j] = (sq - (sum * sum) / k) / (k * k);
  }
  let best = 0;
  for (let d = 1; d <= Math.floor(m / 2); d++) if ((stat[d] as number) < (stat[best] as number)) best = d;
  return best * MSER_BATCH;
}

/** A series' settling: where it settled, and the medians before and after that point. */
export interface Settling {
  /** Leading values before the settled part (0: settled from the start). */
  after: number;
  /** Median of those values (NaN when there are none). */
  p50First: number;
  /** Median of the rest. */
  p50Rest: number;
  /**
   * The series was still getting faster at its middle: MSER-5 found no end in the first half (or
   * put it at the half), and the first half's median is more than UNSETTLED_EXCESS above the last
   * quarter's. `after` is then the first half: the run is too short to say where it settles.
   */
  late: boolean;
}

/** The dropped values' median above the rest's by more than this: they were a warm-up, not noise. */
export const UNSETTLED_EXCESS = 0.1;

/** The p50 of `xs` as every measured figure takes it (nearest rank); NaN for none. */
const medianOf = (xs: readonly number[]): number => percentileOfSorted(Float64Array.from(xs).sort(), 50);

export function settling(xs: readonly number[]): Settling {
  let after = mserTruncation(xs);
  let late = false;
  const m = Math.floor(xs.length / MSER_BATCH);
  const half = Math.floor(m / 2) * MSER_BATCH;
  // MSER-5 looks at most half-way: a start slower for longer than that shows as no truncation,
  // or one at the bound. The first half's median against the last quarter's tells whether the
  // series was still falling there (a start slower for up to about seven eighths of the run).
  const tail = xs.slice(xs.length - Math.floor(xs.length / 4));
  if (m >= MSER_MIN_BATCHES && (after === 0 || after === half) && medianOf(xs.slice(0, half)) > medianOf(tail) * (1 + UNSETTLED_EXCESS)) {
    after = half;
    late = true;
  }
  return { after, p50First: medianOf(xs.slice(0, after)), p50Rest: medianOf(xs.slice(after)), late };
}

/**
 * Whether a settling says the series began unsettled: it was still falling at its middle, or
 * MSER-5 dropped at least two batches and 5% of its `n` values and their median is more than
 * UNSETTLED_EXCESS above the rest's.
 */
export function unsettled(s: Settling, n: number): boolean {
  if (s.late) return true;
  return s.after >= Math.max(2 * MSER_BATCH, 0.05 * n) && s.p50First > s.p50Rest * (1 + UNSETTLED_EXCESS);
}
