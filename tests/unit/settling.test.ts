import { describe, expect, it } from 'vitest';
import { MSER_BATCH, mserTruncation, settling, unsettled } from '../../services/controller/settling.js';
import { measuredSection, seededRandom, trialFigures } from '../../services/controller/measured.js';
import { NOTE_CODES, measuredNotes } from '../../services/controller/measured-notes.js';
import type { MachineState } from '../../services/controller/machine.js';
import type { StartReply__Output } from '../../services/runtime/generated/vmmsim/v1/StartReply.js';

/** Latencies around `base` with a seeded spread of +-10% and, one in 50, a spike of 5x (a GC pause). */
function noisy(n: number, base: number, seed: number): number[] {
  const r = seededRandom(seed);
  return Array.from({ length: n }, () => base * (0.9 + 0.2 * r()) * (r() < 0.02 ? 5 : 1));
}

const SEEDS = Array.from({ length: 40 }, (_, i) => i + 1);

describe('settling (MSER-5 on batch medians)', () => {
  it('calls a steady series settled for every seed, spikes and all, and drops at most a few batches of it', () => {
    for (const seed of SEEDS) {
      const xs = noisy(1000, 100, seed);
      const s = settling(xs);
      expect(unsettled(s, xs.length), `seed ${seed}`).toBe(false);
      expect(s.late, `seed ${seed}`).toBe(false);
      expect(s.after, `seed ${seed}`).toBeLessThanOrEqual(12 * MSER_BATCH);
    }
    expect(mserTruncation(new Array<number>(500).fill(100))).toBe(0);
    // Under 10 batches: no verdict, whatever the values.
    expect(mserTruncation([...new Array<number>(20).fill(900), ...new Array<number>(25).fill(100)])).toBe(0);
  });

  it('finds where a slow start ends to within a few batches, for every seed', () => {
    for (const seed of SEEDS) {
      const xs = [...noisy(200, 300, 2 * seed), ...noisy(1000, 100, 2 * seed + 1)];
      const s = settling(xs);
      expect(s.after % MSER_BATCH).toBe(0);
      expect(s.after, `seed ${seed}`).toBeGreaterThanOrEqual(190);
      expect(s.after, `seed ${seed}`).toBeLessThanOrEqual(250);
      expect(s.p50Rest, `seed ${seed}`).toBeLessThan(110);
      expect(unsettled(s, xs.length), `seed ${seed}`).toBe(true);
    }
  });

  it('says a series still getting faster at its middle never settled, rather than nothing', () => {
    for (const slow of [600, 700, 800]) {
      const xs = [...noisy(slow, 300, slow), ...noisy(1000 - slow, 100, slow + 1)];
      const s = settling(xs);
      expect(s.late, `${slow} slow`).toBe(true);
      expect(s.after).toBe(500);
      expect(unsettled(s, xs.length)).toBe(true);
    }
    // A slow decay over the whole run.
    const r = seededRandom(5);
    const decay = Array.from({ length: 1500 }, (_, i) => 100 * (1 + Math.exp(-i / 400)) * (0.9 + 0.2 * r()));
    expect(unsettled(settling(decay), 1500)).toBe(true);
  });

  it('calls a slow start of a few operations, or one only a little slower, settled', () => {
    expect(unsettled(settling([...noisy(5, 1000, 4), ...noisy(995, 100, 5)]), 1000)).toBe(false);
    expect(unsettled(settling([...noisy(200, 105, 6), ...noisy(800, 100, 7)]), 1000)).toBe(false);
  });
});

const quiet: MachineState = { cores: 2, loadAvgStart: [0.5, 0.5, 0.5], loadAvgEnd: [0.6, 0.5, 0.5], seconds: 3, othersCores: 0.05, ownCores: 0.8, stealPct: 0 };

/**
 * A guest's reply of `iterations` map+unmap pairs: `warmup` operations per vCPU flagged, unmaps
 * from `unmapUs`; with `lanes`, iteration i runs on thread id i % lanes (one vCPU's queue slots).
 */
function reply(iterations: number, warmup: number, unmapUs: (i: number) => number, lanes = 1): StartReply__Output {
  const timeline = [];
  for (let i = 0; i < iterations; i++) {
    const thread = i % lanes;
    timeline.push({ op: 0, thread, measuredNs: 12_000, warmup: 2 * i < warmup });
    timeline.push({ op: 1, thread, measuredNs: unmapUs(i) * 1000, warmup: 2 * i + 1 < warmup });
  }
  return { ops: [{ op: 'map' }, { op: 'unmap' }], timeline, hops: [], floorUs: null, residence: [] } as unknown as StartReply__Output;
}

const section = (f: ReturnType<typeof trialFigures>): ReturnType<typeof measuredSection> =>
  measuredSection({ trials: [f], seed: 1, warmupOps: 50, placement: null, floor: undefined, machine: quiet });

describe('settling in the measured figures', () => {
  it('gives each operation kind its settled p50 and the warm-up per vCPU that leaves its start out', () => {
    // 50 warm-up operations, then unmaps about 50% slower for their first 600 iterations.
    const slow = noisy(625, 3000, 8);
    const fast = noisy(875, 2000, 9);
    const f = trialFigures([reply(1500, 50, (i) => (i < 625 ? (slow[i] as number) : (fast[i - 625] as number)))], (n) => n.replace(/-\d+$/, ''), 100, 1);
    const unmap = f.ops.find((o) => o.op === 'unmap');
    const after = unmap?.settling.afterOps ?? NaN;
    expect(after).toBeGreaterThanOrEqual(595);
    expect(after).toBeLessThanOrEqual(650);
    expect(unmap?.settling.p50FirstUs).toBeCloseTo(3000, -2);
    expect(unmap?.settling.p50RestUs).toBeCloseTo(2000, -2);
    expect(unmap?.settling.late).toBe(false);
    // The last dropped unmap is its vCPU's operation 2 x (25 + after): a warm-up of that many leaves it out.
    expect(unmap?.settling.warmupPerThread).toBe(2 * (25 + after));
    expect(f.ops.find((o) => o.op === 'map')?.settling.afterOps).toBe(0);
    const m = section(f);
    expect(m.ops.find((o) => o.op === 'unmap')?.settling).toMatchObject({ afterOps: [after], warmupPerThread: [2 * (25 + after)], late: [false], steadyOps: [1475] });
    const notes = measuredNotes(m);
    expect(notes.map((n) => n.code)).toEqual([NOTE_CODES.unsettled]);
    expect(notes[0]?.text).toMatch(/^unmap p50 \d+\.\d us is \d+% above its settled \d+\.\d us: its first \d+ of 1475 steady operations \(MSER-5\) were \d+% slower .*give --warmup 1[34]00 or more/);
    expect(notes[0]?.subject).toMatch(/^unmap p50 \+\d+%, --warmup 1[34]00$/);
  });

  it('counts an application workload\'s lanes on their vCPU, as the guest counts its warm-up', () => {
    const unmapUs = (i: number): number => (i < 400 ? 3000 : 2000);
    const perLane = trialFigures([reply(1200, 50, unmapUs, 4)], (n) => n, 100);
    const perVcpu = trialFigures([reply(1200, 50, unmapUs, 4)], (n) => n, 100, 1);
    const w = (f: typeof perLane): number => f.ops.find((o) => o.op === 'unmap')?.settling.warmupPerThread ?? NaN;
    expect(w(perVcpu)).toBeGreaterThan(750);
    expect(w(perLane)).toBeLessThan(w(perVcpu) / 3);
  });

  it('says a trial still getting faster at its middle never settled, and asks for more operations', () => {
    const f = trialFigures([reply(1500, 50, (i) => 2000 * (1 + Math.exp(-i / 500)))], (n) => n, 100, 1);
    const notes = measuredNotes(section(f));
    expect(notes.map((n) => n.code)).toEqual([NOTE_CODES.unsettled]);
    expect(notes[0]?.text).toMatch(/still getting faster at the middle of the run.*give --warmup 3000 or more and more operations than that/);
    expect(notes[0]?.subject).toMatch(/--warmup 3000\+$/);
  });

  it('says nothing when the run settled at once, or when its slow start moved the p50 too little to matter', () => {
    const settled = trialFigures([reply(1500, 50, (i) => noisy(1500, 2000, 10)[i] as number)], (n) => n, 100, 1);
    expect(measuredNotes(section(settled))).toEqual([]);
    // 8% of the unmaps twice as slow over a wide spread: unsettled, but the p50 moves about 4%.
    const r = seededRandom(11);
    const wide = Array.from({ length: 1500 }, (_, i) => (i < 145 ? 4000 : 1000 + 2000 * r()));
    const slight = trialFigures([reply(1500, 50, (i) => wide[i] as number)], (n) => n, 100, 1);
    const st = slight.ops.find((o) => o.op === 'unmap')?.settling;
    expect(st?.afterOps).toBeGreaterThan(0);
    const p50 = slight.ops.find((o) => o.op === 'unmap')?.p50Us ?? NaN;
    expect(p50 / (st?.p50RestUs ?? NaN) - 1).toBeLessThan(0.05);
    expect(measuredNotes(section(slight)).map((n) => n.code)).not.toContain(NOTE_CODES.unsettled);
  });
});
