import { describe, expect, it } from 'vitest';
import { ACHIEVED_SHARE, judge, roundRate, searchSaturation, type StepMeasure } from '../../services/controller/saturation-search.js';
import { DEFAULT_MAX, RATE_CAP, progressLine, searchSettings, unboundedLines } from '../../services/controller/cli/search.js';

/**
 * A synthetic system: it completes at most `capacity` arrivals per second, and its p99 grows as
 * an M/M/1 queue's does near its service rate (base / (1 - load)), infinite past it.
 */
function system(capacity: number, baseUs: number): (rate: number) => Promise<StepMeasure> {
  return async (rate) => ({
    achievedPerSec: Math.min(rate, capacity),
    p99Us: rate < capacity ? baseUs / (1 - rate / capacity) : Number.POSITIVE_INFINITY,
  });
}

/** A system whose p99 never matters: only the rate it completes (at most `capacity` per second). */
function capped(capacity: number): (rate: number) => Promise<StepMeasure> {
  return async (rate) => ({ achievedPerSec: Math.min(rate, capacity), p99Us: 1 });
}

describe('judge', () => {
  it('passes at 95% of the requested rate or more with p99 under the bound', () => {
    expect(judge(1000, { achievedPerSec: 950, p99Us: 9.9 }, 10).ok).toBe(true);
    const slow = judge(1000, { achievedPerSec: 949, p99Us: 9.9 }, 10);
    expect(slow.ok).toBe(false);
    expect(slow.why).toBe('achieved 95% of requested');
    const late = judge(1000, { achievedPerSec: 1000, p99Us: 10 }, 10);
    expect(late.ok).toBe(false);
    expect(late.why).toBe('p99 over 10 us');
    expect(judge(1000, { achievedPerSec: 10, p99Us: 11 }, 10).why).toBe('achieved 1% of requested, p99 over 10 us');
  });
});

describe('roundRate', () => {
  it('keeps three significant digits', () => {
    expect(roundRate(123_456)).toBe(123_000);
    expect(roundRate(1500)).toBe(1500);
    expect(roundRate(62.5)).toBe(62.5);
    expect(roundRate(0)).toBe(0);
  });
});

describe('searchSaturation', () => {
  it('finds the knee set by the achieved rate within 5%', async () => {
    // p99 stays far under the bound: the rate the system sustains decides.
    const capacity = 37_000;
    const knee = capacity / ACHIEVED_SHARE;
    const r = await searchSaturation(capped(capacity), { from: 1000, max: 1e7, p99BoundUs: 1e9, maxSteps: 30 });
    expect(r.stop).toBe('converged');
    expect(r.ratePerSec).toBeDefined();
    expect(r.ratePerSec as number).toBeLessThanOrEqual(knee);
    expect(r.ratePerSec as number).toBeGreaterThanOrEqual(0.95 * knee);
    expect(r.failedAtPerSec as number).toBeGreaterThan(knee);
    expect(((r.failedAtPerSec as number) - (r.ratePerSec as number)) / (r.failedAtPerSec as number)).toBeLessThanOrEqual(0.05);
    // Ramp: 1000, 2000, ... up to the first failure, then bisection.
    expect(r.steps.slice(0, 6).map((s) => s.requestedPerSec)).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000]);
    expect(r.steps[6]?.requestedPerSec).toBe(64_000);
    expect(r.steps[6]?.ok).toBe(false);
    expect(r.steps.every((s) => s.ok === (s.requestedPerSec <= knee))).toBe(true);
  });

  it('finds the knee set by the p99 bound within 5%', async () => {
    // p99 = 10 / (1 - rate / 100 000) reaches 50 us at 80 000/s, well before the capacity.
    const r = await searchSaturation(system(100_000, 10), { from: 5000, max: 1e7, p99BoundUs: 50, maxSteps: 30 });
    expect(r.stop).toBe('converged');
    expect(r.ratePerSec as number).toBeLessThan(80_000);
    expect(r.ratePerSec as number).toBeGreaterThanOrEqual(0.95 * 80_000);
    expect(r.steps.filter((s) => !s.ok).every((s) => s.why.includes('p99 over 50 us'))).toBe(true);
  });

  it('ramps down from a first rate that fails', async () => {
    const r = await searchSaturation(capped(300), { from: 10_000, max: 1e7, p99BoundUs: 1e9, maxSteps: 30 });
    expect(r.steps.slice(0, 6).map((s) => [s.requestedPerSec, s.ok])).toEqual([
      [10_000, false], [5000, false], [2500, false], [1250, false], [625, false], [313, true],
    ]);
    expect(r.ratePerSec as number).toBeLessThanOrEqual(300 / ACHIEVED_SHARE);
    expect(r.ratePerSec as number).toBeGreaterThanOrEqual(0.95 * (300 / ACHIEVED_SHARE));
  });

  it('respects the step cap, reporting the best rate so far', async () => {
    const seen: number[] = [];
    const r = await searchSaturation(capped(37_000), { from: 1000, max: 1e7, p99BoundUs: 1e9, maxSteps: 4 }, (s) => seen.push(s.requestedPerSec));
    expect(r.stop).toBe('step-cap');
    expect(r.steps).toHaveLength(4);
    expect(seen).toEqual([1000, 2000, 4000, 8000]);
    expect(r.ratePerSec).toBe(8000);
    expect(r.failedAtPerSec).toBeUndefined();
  });

  it('stops at max when max passes and no cap lies above it, and at the floor when nothing does', async () => {
    const atMax = await searchSaturation(capped(1e9), { from: 1000, max: 5000, p99BoundUs: 1e9, maxSteps: 30 });
    expect(atMax.stop).toBe('max');
    expect(atMax.capped).toBe(true);
    expect(atMax.capPerSec).toBe(5000);
    expect(atMax.boundPerSec).toBe(5000);
    expect(atMax.steps.map((s) => s.requestedPerSec)).toEqual([1000, 2000, 4000, 5000]);
    expect(atMax.steps.every((s) => s.raisedTo === undefined)).toBe(true);
    expect(atMax.ratePerSec).toBe(5000);
    const never = await searchSaturation(async () => ({ achievedPerSec: 0, p99Us: 0 }), { from: 8, max: 100, p99BoundUs: 1, maxSteps: 30 });
    expect(never.stop).toBe('floor');
    expect(never.ratePerSec).toBeUndefined();
    expect(never.steps.map((s) => s.requestedPerSec)).toEqual([8, 4, 2, 1]);
  });

  it('raises a bound that passes (doubling, up to the cap) until it brackets the saturation rate', async () => {
    // The system saturates at 37 000/s, far above the first bound of 5000/s.
    const seen: { rate: number; raisedTo: number | undefined }[] = [];
    const r = await searchSaturation(capped(37_000), { from: 1000, max: 5000, cap: 1e6, p99BoundUs: 1e9, maxSteps: 30 }, (s) => seen.push({ rate: s.requestedPerSec, raisedTo: s.raisedTo }));
    expect(r.stop).toBe('converged');
    expect(r.capped).toBe(false);
    expect(r.steps.slice(0, 6).map((s) => s.requestedPerSec)).toEqual([1000, 2000, 4000, 5000, 10_000, 20_000]);
    // Each pass at the bound doubles it: 5000 -> 10 000 -> 20 000 -> 40 000, where 40 000 fails.
    expect(seen.filter((s) => s.raisedTo !== undefined)).toEqual([
      { rate: 5000, raisedTo: 10_000 }, { rate: 10_000, raisedTo: 20_000 }, { rate: 20_000, raisedTo: 40_000 },
    ]);
    expect(r.boundPerSec).toBe(40_000);
    expect(r.failedAtPerSec as number).toBeGreaterThan(37_000 / ACHIEVED_SHARE);
    expect(r.ratePerSec as number).toBeGreaterThanOrEqual(0.95 * (37_000 / ACHIEVED_SHARE));
  });

  it('says it stopped at the cap when the cap passes, with the cap\'s value', async () => {
    const r = await searchSaturation(capped(1e9), { from: 1000, max: 4000, cap: 20_000, p99BoundUs: 1e9, maxSteps: 30 });
    expect(r.stop).toBe('max');
    expect(r.capped).toBe(true);
    expect(r.capPerSec).toBe(20_000);
    expect(r.boundPerSec).toBe(20_000);
    expect(r.ratePerSec).toBe(20_000);
    expect(r.failedAtPerSec).toBeUndefined();
    expect(r.steps.map((s) => s.requestedPerSec)).toEqual([1000, 2000, 4000, 8000, 16_000, 20_000]);
    expect(r.steps.at(-1)?.raisedTo).toBeUndefined();
  });

  it('refuses a range or a cap it cannot search', async () => {
    await expect(searchSaturation(system(1, 1), { from: 0, max: 10, p99BoundUs: 1, maxSteps: 3 })).rejects.toThrow(/0 < from <= max/);
    await expect(searchSaturation(system(1, 1), { from: 20, max: 10, p99BoundUs: 1, maxSteps: 3 })).rejects.toThrow(/0 < from <= max/);
    await expect(searchSaturation(system(1, 1), { from: 1, max: 10, p99BoundUs: 1, maxSteps: 0 })).rejects.toThrow(/at least one step/);
    await expect(searchSaturation(system(1, 1), { from: 1, max: 10, cap: 5, p99BoundUs: 1, maxSteps: 3 })).rejects.toThrow(/max <= cap/);
  });
});

describe('the search as the commands run it', () => {
  it('reads --cap (default: the largest workload.rate) and refuses a --max above it', () => {
    const s = searchSettings({ 'p99-bound-us': '50' });
    expect(s.cap).toBe(RATE_CAP);
    expect(s.max).toBe(DEFAULT_MAX);
    expect(searchSettings({ 'p99-bound-us': '50', max: '5000', cap: '20000' })).toMatchObject({ max: 5000, cap: 20_000 });
    // A cap below the default bound brings the bound down to it.
    expect(searchSettings({ 'p99-bound-us': '50', cap: '20000' })).toMatchObject({ max: 20_000, cap: 20_000 });
    expect(() => searchSettings({ 'p99-bound-us': '50', max: '30000', cap: '20000' })).toThrow(/--max \(30000\) must be at most --cap \(20000\)/);
    expect(() => searchSettings({ 'p99-bound-us': '50', cap: String(RATE_CAP * 2) })).toThrow(/--cap must be at most/);
  });

  it('names a raised bound on the step line, and says plainly when a search stopped at the cap or ran out of steps', () => {
    expect(progressLine('m', { requestedPerSec: 5000, achievedPerSec: 5000, p99Us: 1, ok: true, why: '', raisedTo: 10_000 })).toBe(
      'vmmsim: saturate m: 5000/s -> achieved 5000/s, p99 1.000 us: ok; passed at the upper bound: raised to 10000/s\n',
    );
    const base = { ratePerSec: 20_000, failedAtPerSec: null, steps: 6, capPerSec: 20_000 };
    expect(unboundedLines([{ ...base, model: 'nested-smmuv3', point: { 'topology.psmmus': 4 }, stop: 'max' }])).toBe(
      '\nnot saturated:\n  topology.psmmus=4 nested-smmuv3: stopped at the cap of 20000/s (--cap): it passed there, so it saturates above the cap; the search did not find where\n',
    );
    expect(unboundedLines([{ ...base, model: 'none', stop: 'step-cap' }])).toContain('none: stopped after 6 steps (--steps) with every rate up to 20000/s passing');
    expect(unboundedLines([{ ...base, model: 'none', failedAtPerSec: 21_000, stop: 'converged' }])).toBe('');
    // An older document without capPerSec: nothing to say about a cap.
    expect(unboundedLines([{ ...base, capPerSec: undefined, model: 'none', stop: 'max' }])).toBe('');
  });
});
