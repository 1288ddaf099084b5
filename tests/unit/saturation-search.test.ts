import { describe, expect, it } from 'vitest';
import { ACHIEVED_SHARE, judge, roundRate, searchSaturation, type StepMeasure } from '../../services/controller/saturation-search.js';

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

  it('stops at max when max passes, and at the floor when nothing does', async () => {
    const atMax = await searchSaturation(capped(1e9), { from: 1000, max: 5000, p99BoundUs: 1e9, maxSteps: 30 });
    expect(atMax.stop).toBe('max');
    expect(atMax.steps.map((s) => s.requestedPerSec)).toEqual([1000, 2000, 4000, 5000]);
    expect(atMax.ratePerSec).toBe(5000);
    const never = await searchSaturation(async () => ({ achievedPerSec: 0, p99Us: 0 }), { from: 8, max: 100, p99BoundUs: 1, maxSteps: 30 });
    expect(never.stop).toBe('floor');
    expect(never.ratePerSec).toBeUndefined();
    expect(never.steps.map((s) => s.requestedPerSec)).toEqual([8, 4, 2, 1]);
  });

  it('refuses a range or a cap it cannot search', async () => {
    await expect(searchSaturation(system(1, 1), { from: 0, max: 10, p99BoundUs: 1, maxSteps: 3 })).rejects.toThrow(/0 < from <= max/);
    await expect(searchSaturation(system(1, 1), { from: 20, max: 10, p99BoundUs: 1, maxSteps: 3 })).rejects.toThrow(/0 < from <= max/);
    await expect(searchSaturation(system(1, 1), { from: 1, max: 10, p99BoundUs: 1, maxSteps: 0 })).rejects.toThrow(/at least one step/);
  });
});
