import { describe, expect, it } from 'vitest';
import { Random } from '../../services/machine/random.js';
import { ThreadArrivals, arrivalTimes, constantArrivalNs, type ArrivalSpec } from '../../services/guest/workloads/arrivals.js';

const poisson = (over: Partial<ArrivalSpec> = {}): ArrivalSpec => ({ rate: 1000, threads: 1, process: 'poisson', seed: 1, vm: 0, ...over });

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function stddev(xs: readonly number[]): number {
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
}

function gaps(times: readonly number[]): number[] {
  return times.map((x, i) => x - (i === 0 ? 0 : (times[i - 1] as number)));
}

describe('Random.exponential', () => {
  it('has the mean it is given', () => {
    const r = new Random(7, 3);
    const xs = Array.from({ length: 50_000 }, () => r.exponential(250));
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    // The mean of 50 000 exponentials is within 4 standard errors (250 / sqrt(50 000) = 1.1).
    expect(Math.abs(mean(xs) - 250)).toBeLessThan(4.5);
  });
});

describe('constant arrivals', () => {
  it('spaces the run\'s arrivals 1/rate apart, the threads taking them in turn', () => {
    const spec: ArrivalSpec = { rate: 4000, threads: 3, process: 'constant', seed: 9, vm: 0 };
    const all = [0, 1, 2].flatMap((t) => arrivalTimes(spec, t, 4)).sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 12 }, (_, j) => j * 250_000));
    expect(arrivalTimes(spec, 1, 3)).toEqual([250_000, 1_000_000, 1_750_000]);
    expect(constantArrivalNs(4000, 3, 2, 1)).toBe(1_250_000);
    // The seed plays no part.
    expect(arrivalTimes({ ...spec, seed: 10 }, 1, 3)).toEqual(arrivalTimes(spec, 1, 3));
  });
});

describe('poisson arrivals', () => {
  it('are a pure function of the seed, the VM, the rate and the thread', () => {
    const a = arrivalTimes(poisson({ threads: 4 }), 2, 100);
    expect(arrivalTimes(poisson({ threads: 4 }), 2, 100)).toEqual(a);
    // Drawn one at a time or all at once, the same schedule.
    const one = new ThreadArrivals(poisson({ threads: 4 }), 2);
    expect(Array.from({ length: 100 }, () => one.next())).toEqual(a);
    expect(arrivalTimes(poisson({ threads: 4, seed: 2 }), 2, 100)).not.toEqual(a);
    expect(arrivalTimes(poisson({ threads: 4 }), 3, 100)).not.toEqual(a);
    expect(arrivalTimes(poisson({ threads: 4, vm: 1 }), 2, 100)).not.toEqual(a);
    // Increasing, starting one gap after the run's start.
    expect(a[0]).toBeGreaterThan(0);
    for (let i = 1; i < a.length; i++) expect(a[i]).toBeGreaterThan(a[i - 1] as number);
  });

  it('keep the mean rate, with exponential gaps', () => {
    const rate = 20_000;
    const n = 40_000;
    const g = gaps(arrivalTimes(poisson({ rate }), 0, n));
    // Mean gap 1/rate = 50 us within 2% (the standard error is 0.5%); an exponential's standard
    // deviation equals its mean, where evenly spaced arrivals would have none.
    expect(mean(g) / 50_000).toBeGreaterThan(0.98);
    expect(mean(g) / 50_000).toBeLessThan(1.02);
    expect(stddev(g) / mean(g)).toBeGreaterThan(0.95);
    expect(stddev(g) / mean(g)).toBeLessThan(1.05);
    // Memoryless: about e^-1 of the gaps are longer than the mean.
    expect(g.filter((x) => x > 50_000).length / n).toBeCloseTo(Math.exp(-1), 1);
  });

  it('over several threads, add up to a Poisson stream at the whole rate', () => {
    const rate = 10_000;
    const threads = 4;
    const perThread = 10_000;
    const merged = Array.from({ length: threads }, (_, t) => arrivalTimes(poisson({ rate, threads }), t, perThread)).flat().sort((a, b) => a - b);
    // Up to the time every thread still has arrivals, the merged stream runs at `rate`.
    const horizon = Math.min(...Array.from({ length: threads }, (_, t) => arrivalTimes(poisson({ rate, threads }), t, perThread).at(-1) as number));
    const inside = merged.filter((x) => x <= horizon);
    expect(inside.length / (horizon / 1e9) / rate).toBeGreaterThan(0.97);
    expect(inside.length / (horizon / 1e9) / rate).toBeLessThan(1.03);
    // Counts per 1 ms window (10 expected) have a variance equal to their mean, as a Poisson count does.
    const windows = new Array<number>(Math.floor(horizon / 1e6)).fill(0);
    for (const x of inside) {
      const w = Math.floor(x / 1e6);
      if (w < windows.length) windows[w] = (windows[w] as number) + 1;
    }
    expect(mean(windows)).toBeGreaterThan(9.5);
    expect(mean(windows)).toBeLessThan(10.5);
    const dispersion = stddev(windows) ** 2 / mean(windows);
    expect(dispersion).toBeGreaterThan(0.85);
    expect(dispersion).toBeLessThan(1.15);
  });

  it('refuses a rate of 0 (closed loop has no schedule)', () => {
    expect(() => new ThreadArrivals(poisson({ rate: 0 }), 0)).toThrow(/rate > 0/);
  });
});
