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

describe('MSER-5 truncation', () => {
  it('drops nothing from a steady series, however noisy, and nothing from one too short to judge', () => {
    expect(mserTruncation(new Array<number>(500).fill(100))).toBe(0);
    const steady = noisy(1000, 100, 3);
    const s = settling(steady);
    expect(unsettled(s, steady.length)).toBe(false);
    // Under 10 batches: no verdict, whatever the values.
    expect(mserTruncation([...new Array<number>(20).fill(900), ...new Array<number>(25).fill(100)])).toBe(0);
  });

  it('finds where a warm-up ends, to the batch', () => {
    const xs = [...noisy(200, 300, 1), ...noisy(1000, 100, 2)];
    const s = settling(xs);
    expect(s.after % MSER_BATCH).toBe(0);
    expect(s.after).toBeGreaterThanOrEqual(195);
    expect(s.after).toBeLessThanOrEqual(210);
    expect(s.p50First).toBeGreaterThan(250);
    expect(s.p50Rest).toBeGreaterThan(90);
    expect(s.p50Rest).toBeLessThan(110);
    expect(unsettled(s, xs.length)).toBe(true);
  });

  it('drops at most half the series, however long the fall', () => {
    const falling = Array.from({ length: 1000 }, (_, i) => 2000 - i);
    const after = mserTruncation(falling);
    expect(after).toBeLessThanOrEqual(500);
    expect(after).toBeGreaterThan(0);
  });

  it('calls a slow start that is only a few operations, or only a little slower, settled', () => {
    expect(unsettled(settling([...noisy(5, 1000, 4), ...noisy(995, 100, 5)]), 1000)).toBe(false);
    expect(unsettled(settling([...noisy(200, 105, 6), ...noisy(800, 100, 7)]), 1000)).toBe(false);
  });
});

const quiet: MachineState = { cores: 2, loadAvgStart: [0.5, 0.5, 0.5], loadAvgEnd: [0.6, 0.5, 0.5], seconds: 3, othersCores: 0.05, ownCores: 0.8, stealPct: 0 };

/** A guest's reply of `iterations` map+unmap pairs on one thread: `warmup` operations flagged, unmaps from `unmapUs`. */
function reply(iterations: number, warmup: number, unmapUs: (i: number) => number): StartReply__Output {
  const timeline = [];
  for (let i = 0; i < iterations; i++) {
    timeline.push({ op: 0, thread: 0, measuredNs: 12_000, warmup: 2 * i < warmup });
    timeline.push({ op: 1, thread: 0, measuredNs: unmapUs(i) * 1000, warmup: 2 * i + 1 < warmup });
  }
  return { ops: [{ op: 'map' }, { op: 'unmap' }], timeline, hops: [], floorUs: null, residence: [] } as unknown as StartReply__Output;
}

describe('settling in the measured figures', () => {
  it('gives each operation kind its settled p50 and the warm-up per thread that leaves its start out', () => {
    // 50 warm-up operations, then unmaps at 3 ms for their first 600 iterations and about 2 ms after.
    const rest = noisy(2000, 2000, 8);
    const f = trialFigures([reply(1500, 50, (i) => (i < 625 ? 3000 : Math.min(rest[i] as number, 2200)))], (n) => n.replace(/-\d+$/, ''), 100);
    const unmap = f.ops.find((o) => o.op === 'unmap');
    // The end of the slow start, to a batch (the first batch after it may be low enough to drop too).
    const after = unmap?.settling.afterOps ?? NaN;
    expect([600, 605]).toContain(after);
    expect(unmap?.settling.p50FirstUs).toBe(3000);
    expect(unmap?.settling.p50RestUs).toBeCloseTo(2000, -2);
    // The first settled unmap follows 25 warm-up iterations and `after` slow ones, and its own map.
    expect(unmap?.settling.warmupPerThread).toBe(2 * (25 + after) + 1);
    expect(f.ops.find((o) => o.op === 'map')?.settling.afterOps).toBe(0);
    const m = measuredSection({ trials: [f], seed: 1, warmupOps: 50, placement: null, floor: undefined, machine: quiet });
    expect(m.ops.find((o) => o.op === 'unmap')?.settling).toMatchObject({ afterOps: [after], p50FirstUs: [3000], warmupPerThread: [2 * (25 + after) + 1] });
    const notes = measuredNotes(m);
    expect(notes.map((n) => n.code)).toEqual([NOTE_CODES.unsettled]);
    expect(notes[0]?.text).toMatch(/^unmap p50 \d+\.\d us is \d+% above its settled \d+\.\d us: its first 60[05] steady operations \(MSER-5\) were \d+% slower, .*--warmup 1300 or more/);
  });

  it('says nothing when the run settled at once, or when its start moved the p50 too little to matter', () => {
    const settled = trialFigures([reply(1500, 50, () => 2000)], (n) => n, 100);
    expect(measuredNotes(measuredSection({ trials: [settled], seed: 1, warmupOps: 50, placement: null, floor: undefined, machine: quiet }))).toEqual([]);
    // A slow start of 60 unmaps among 1450: the p50 barely moves.
    const brief = trialFigures([reply(1500, 50, (i) => (i < 85 ? 3000 : 2000 + (i % 7)))], (n) => n, 100);
    expect(brief.ops.find((o) => o.op === 'unmap')?.settling.afterOps).toBeGreaterThan(0);
    expect(measuredNotes(measuredSection({ trials: [brief], seed: 1, warmupOps: 50, placement: null, floor: undefined, machine: quiet })).map((n) => n.code)).not.toContain(NOTE_CODES.unsettled);
  });
});
