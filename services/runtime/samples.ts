import type { Summary__Output as Summary } from './generated/vmmsim/v1/Summary.js';

/**
 * Measured values kept as they come, in a Float64Array that doubles when full, and summarized
 * once at the end by sorting. Recording is a store and a count: no bucket arithmetic on the path
 * being measured (an HDR histogram's packed array cost ~0.5 us a value in a guest, eight times an
 * operation). Percentiles are nearest-rank. For measured figures only: the modeled summaries stay
 * with Distribution, whose exact sums they are byte-identical with.
 */
export class Samples {
  private values = new Float64Array(1024);
  private n = 0;

  record(value: number): void {
    if (this.n === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.n++] = value;
  }

  get count(): number {
    return this.n;
  }

  /** The values recorded, in recording order (a view: copy it to keep it past the next record). */
  view(): Float64Array {
    return this.values.subarray(0, this.n);
  }

  /** Summary with every value divided by `scale` (1000 turns ns into us). */
  summary(scale = 1): Summary {
    return summarizeValues(this.view(), scale);
  }
}

/** Nearest-rank percentile of sorted values (p in 0..100). */
export function percentileOfSorted(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const rank = Math.min(n, Math.max(1, Math.ceil((p / 100) * n)));
  return sorted[rank - 1] as number;
}

/** The Summary of measured values (not modified), each divided by `scale`, rounded to 1/1000. */
export function summarizeValues(values: ArrayLike<number>, scale = 1): Summary {
  const n = values.length;
  if (n === 0) return { count: 0, mean: 0, stddev: 0, min: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i] as number;
  const mean = sum / n;
  let sq = 0;
  for (let i = 0; i < n; i++) sq += ((sorted[i] as number) - mean) ** 2;
  const round = (x: number): number => Math.round((x / scale) * 1000) / 1000;
  return {
    count: n,
    mean: round(mean),
    stddev: round(Math.sqrt(sq / n)),
    min: round(sorted[0] as number),
    p50: round(percentileOfSorted(sorted, 50)),
    p90: round(percentileOfSorted(sorted, 90)),
    p99: round(percentileOfSorted(sorted, 99)),
    p999: round(percentileOfSorted(sorted, 99.9)),
    max: round(sorted[n - 1] as number),
  };
}
