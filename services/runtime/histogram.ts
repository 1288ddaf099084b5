import * as hdr from 'hdr-histogram-js';
import type { Summary__Output as Summary } from './generated/vmmsim/v1/Summary.js';

/**
 * An HDR histogram of non-negative integer values (nanoseconds) that also keeps the exact count,
 * sum, min and max. The exact sum makes the mean of integer inputs independent of recording order,
 * which modeled-time summaries rely on to be byte-identical run after run.
 */
export class Distribution {
  private readonly hist = hdr.build({
    bitBucketSize: 'packed',
    lowestDiscernibleValue: 1,
    highestTrackableValue: 2,
    autoResize: true,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: false,
  });
  private sum = 0;
  private n = 0;
  private lo = Infinity;
  private hi = 0;

  record(valueNs: number): void {
    const v = valueNs > 0 ? Math.round(valueNs) : 0;
    this.hist.recordValue(v);
    this.sum += v;
    this.n += 1;
    if (v < this.lo) this.lo = v;
    if (v > this.hi) this.hi = v;
  }

  get count(): number {
    return this.n;
  }

  /** Summary with every value divided by `scale` (1000 turns ns into us). */
  summary(scale = 1): Summary {
    if (this.n === 0) return { count: 0, mean: 0, stddev: 0, min: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
    const h = this.hist;
    const round = (x: number): number => Math.round((x / scale) * 1000) / 1000;
    // HDR percentiles report a bucket's upper edge; clamping keeps min <= p50 <= ... <= max.
    const pct = (p: number): number => round(Math.min(this.hi, Math.max(this.lo, h.getValueAtPercentile(p))));
    return {
      count: this.n,
      mean: round(this.sum / this.n),
      stddev: round(h.stdDeviation),
      min: round(this.lo),
      p50: pct(50),
      p90: pct(90),
      p99: pct(99),
      p999: pct(99.9),
      max: round(this.hi),
    };
  }
}

export { Samples, percentileOfSorted, summarizeValues } from './samples.js';
