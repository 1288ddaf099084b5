/**
 * Where a run's measured times settle. A role process compiles its path over its first thousands of
 * operations, and each configure deoptimizes some of what the last run compiled (docs/benchmarks.md,
 * "A run's first operations re-warm the JIT"), so the first operations after a short warm-up are
 * slower than the rest. Trials that get faster one after another show it across trials
 * (measured.still-warming); this finds it inside one trial, from the operations' own times in the
 * order they completed.
 *
 * The truncation point is MSER-5, the marginal standard error rule on batch means of five
 * (K. P. White, "An effective truncation heuristic for bias reduction in simulation output",
 * Simulation 69(6), 1997; White, Cobb and Spratt, "A comparison of five steady-state truncation
 * heuristics for simulation", WSC 2000): drop the d leading batches that minimise the squared
 * standard error of the remaining batches' mean, d at most half of them. It looks for a transient at
 * the start and nothing else; whether that transient matters is the caller's judgement (here: the
 * dropped operations' median against the rest's).
 */

/** Operations per batch (MSER-5). */
export const MSER_BATCH = 5;
/** Fewer batches than this: too short a series to tell a transient from noise (truncation 0). */
export const MSER_MIN_BATCHES = 10;

/**
 * How many leading values of `xs` MSER-5 drops: a multiple of MSER_BATCH, at most half the series
 * (the rule's own bound), 0 for a series of fewer than MSER_MIN_BATCHES batches. A trailing partial
 * batch is left out of the batches.
 */
export function mserTruncation(xs: readonly number[]): number {
  const m = Math.floor(xs.length / MSER_BATCH);
  if (m < MSER_MIN_BATCHES) return 0;
  const b = new Float64Array(m);
  for (let j = 0; j < m; j++) {
    let s = 0;
    for (let i = 0; i < MSER_BATCH; i++) s += xs[j * MSER_BATCH + i] as number;
    b[j] = s / MSER_BATCH;
  }
  // Suffix sums of the batch means and their squares: each candidate d in O(1). The batches are
  // centred on the first one first, so the squares do not lose the variance to cancellation.
  const c = b[0] as number;
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

/** A series' settling: where MSER-5 puts its end, and the medians before and after that point. */
export interface Settling {
  /** Leading values MSER-5 drops (0: settled from the start). */
  after: number;
  /** Median of the dropped values (NaN when none is dropped). */
  p50First: number;
  /** Median of the rest. */
  p50Rest: number;
}

function medianOf(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export function settling(xs: readonly number[]): Settling {
  const after = mserTruncation(xs);
  return { after, p50First: medianOf(xs.slice(0, after)), p50Rest: medianOf(xs.slice(after)) };
}

/** The dropped values' median above the rest's by more than this: they were a warm-up, not noise. */
export const UNSETTLED_EXCESS = 0.1;

/**
 * Whether a settling says the series began unsettled: MSER-5 dropped at least two batches and 5% of
 * the series, and the dropped values' median is more than UNSETTLED_EXCESS above the rest's.
 */
export function unsettled(s: Settling, n: number): boolean {
  return s.after >= Math.max(2 * MSER_BATCH, 0.05 * n) && s.p50First > s.p50Rest * (1 + UNSETTLED_EXCESS);
}
