/**
 * Sensitivity analysis on hand-made recorded runs: the Latin hypercube puts one sample in every
 * stratum of every range, a step whose range is a point never varies and is never named in
 * "depends on", the analysis is deterministic for a seed, the verdicts follow the share of samples
 * in which the order holds, and runs whose behaviour depends on modeled time say they are approximate.
 */
import { describe, expect, it } from 'vitest';
import type { CostProfile } from '../../services/cost/profile.js';
import { Random } from '../../services/machine/random.js';
import type { RecordedOp, RecordedRun } from '../../services/controller/recorded.js';
import { analyse, approximateReasons, costAt, figuresOf, latinHypercube, quantile, sampleCosts, stepRanges, verdictLines, type SensitivityDesign } from '../../services/controller/sensitivity.js';

function profileOf(steps: Record<string, [number, number, number]>): CostProfile {
  return {
    name: 'test',
    arch: 'arm64',
    description: '',
    path: 'test.yaml',
    steps: Object.fromEntries(Object.entries(steps).map(([k, [ns, lo, hi]]) => [k, { ns, range: [lo, hi], source: 's', rangeReason: 'r', confidence: 'U' as const }])),
  };
}

/**
 * A closed-loop run of one thread: `n` rounds of a map and an unmap, each a vector over the sorted
 * step names (`map` and `unmap` count each step that many times), priced at `costs` as recorded.
 */
function runOf(stepNames: string[], map: number[], unmap: number[], n: number, costs: Record<string, number>, o: { arrivalEveryNs?: number; branched?: boolean; kinds?: [string, string] } = {}): RecordedRun {
  const pack = (v: number[]): number[] => v.flatMap((c, i) => (c > 0 ? [i, c] : []));
  const vectors = [pack(map), pack(unmap)];
  const price = (v: number[]): number => v.reduce((s, c, i) => s + c * (costs[stepNames[i] as string] as number), 0);
  const ops: RecordedOp[] = [];
  let t = 0;
  for (let k = 0; k < 2 * n; k++) {
    const [first, second] = o.kinds ?? ['map', 'unmap'];
    const kind = k % 2 === 0 ? first : second;
    const ns = price(k % 2 === 0 ? map : unmap);
    const start = o.arrivalEveryNs !== undefined ? k * o.arrivalEveryNs : t;
    ops.push({ kind, guest: 0, index: k, thread: 0, startNs: start, ns, measuredNs: ns, holds: [], steps: k % 2, branched: o.branched === true && k === 0, fixedNs: 0, ...(o.arrivalEveryNs !== undefined ? { arrival: true } : {}) });
    t = start + ns;
  }
  return { stepNames, vectors, ops, threadEndNs: new Map([[0, t]]) };
}

// a: a wide range; b: a narrow one; c: a point (lo = hi).
const profile = profileOf({ a: [100, 50, 400], b: [10, 8, 12], c: [30, 30, 30] });
const costs = { a: 100, b: 10, c: 30 };
const names = ['a', 'b', 'c'];

function design(model: string, map: number[], unmap: number[], extra: Partial<SensitivityDesign> = {}, o: Parameters<typeof runOf>[5] = {}): SensitivityDesign {
  return { model, run: runOf(names, map, unmap, 20, costs, o), dma: 'strict', workload: 'dma-map-benchmark', application: false, ...extra };
}

describe('Latin hypercube', () => {
  it('puts exactly one sample in each of the n strata of every dimension, inside [0, 1)', () => {
    for (const n of [1, 7, 200]) {
      const cube = latinHypercube(n, 5, new Random(3, 1));
      expect(cube).toHaveLength(n);
      for (let d = 0; d < 5; d++) {
        const strata = cube.map((u) => Math.floor((u[d] as number) * n)).sort((x, y) => x - y);
        expect(strata).toEqual(Array.from({ length: n }, (_, i) => i));
        for (const u of cube) {
          expect(u[d]).toBeGreaterThanOrEqual(0);
          expect(u[d]).toBeLessThan(1);
        }
      }
    }
  });

  it('draws each step across its range, stratum by stratum, and leaves a point range at its cost', () => {
    const steps = stepRanges(profile);
    const samples = sampleCosts(steps, 50, 9);
    const a = samples.map((c) => c[0] as number);
    // 50 strata of [50, 400]: one sample in each 7 ns band (whole ns, so a sample may sit on a band's edge).
    const bands = a.map((v) => Math.min(49, Math.floor(((v - 50) / 350) * 50)));
    expect(new Set(bands).size).toBeGreaterThanOrEqual(48);
    expect(Math.min(...a)).toBeGreaterThanOrEqual(50);
    expect(Math.max(...a)).toBeLessThanOrEqual(400);
    expect(samples.every((c) => c[2] === 30)).toBe(true);
    expect(samples.every((c) => [...c].every(Number.isInteger))).toBe(true);
    expect(sampleCosts(steps, 50, 9)).toEqual(samples);
    expect(sampleCosts(steps, 50, 10)).not.toEqual(samples);
  });

  it('draws triangular costs with the profile\'s cost most likely: the CDF at the mode is (mode - lo) / (hi - lo)', () => {
    const step = { step: 'x', ns: 100, lo: 50, hi: 400, confidence: 'U' as const };
    expect(costAt(step, 0, 'triangular')).toBe(50);
    expect(costAt(step, 1, 'triangular')).toBe(400);
    expect(costAt(step, 50 / 350, 'triangular')).toBeCloseTo(100, 9);
    // Monotone in u, and the uniform draw unchanged.
    for (let u = 0; u < 0.985; u += 0.01) expect(costAt(step, u + 0.01, 'triangular')).toBeGreaterThanOrEqual(costAt(step, u, 'triangular'));
    expect(costAt(step, 0.5, 'uniform')).toBe(225);
    // A mode at the range's edge (a profile's cost at lo) is a right triangle.
    expect(costAt({ ...step, ns: 50 }, 0.75, 'triangular')).toBeCloseTo(400 - 350 * Math.sqrt(0.25), 9);
    // 200 stratified samples: the share below the mode is the CDF there, to a stratum.
    const samples = sampleCosts([step], 200, 5, 'triangular').map((c) => c[0] as number);
    const below = samples.filter((v) => v < 100).length / 200;
    expect(Math.abs(below - 50 / 350)).toBeLessThanOrEqual(0.01);
    expect(sampleCosts([step], 200, 5, 'uniform')).toEqual(sampleCosts([step], 200, 5));
  });

  it('quantiles interpolate between ranks', () => {
    expect(quantile([1, 2, 3, 4, 5], 0.5)).toBe(3);
    expect(quantile([1, 2], 0.5)).toBe(1.5);
    expect(quantile([0, 10], 0.05)).toBeCloseTo(0.5);
  });
});

describe('analyse', () => {
  it('re-prices to the run itself at the profile\'s costs', () => {
    const d = design('x', [1, 2, 1], [2, 0, 3]);
    const f = figuresOf(d, Float64Array.from(names, (n) => costs[n as keyof typeof costs]));
    expect(f.means.get('map')).toBe(100 + 20 + 30);
    expect(f.means.get('unmap')).toBe(200 + 90);
  });

  it('calls a comparison robust when no range reverses it, and names the steps that move a fragile one', () => {
    // x: a-heavy; y: b- and c-heavy. y / x for unmap: (10 b + 5 c) / (2 a) = 250 / 200 at the costs,
    // below 1 once a > 125: the order flips across a's range. map: y always 100x cheaper in c.
    const x = design('x', [0, 0, 100], [2, 0, 0]);
    const y = design('y', [0, 0, 1], [0, 10, 5]);
    const s = analyse([x, y], profile, { samples: 200, seed: 4 });
    const map = s.comparisons.find((c) => c.metric === 'map');
    const unmap = s.comparisons.find((c) => c.metric === 'unmap');
    expect(map).toMatchObject({ a: 'x', b: 'y', base: 0.01, p5: 0.01, p95: 0.01, holds: 1, verdict: 'robust', dependsOn: [] });
    expect(unmap?.base).toBe(1.25);
    expect(unmap?.verdict).toBe('depends');
    // a's range decides; c's is a point and never appears, in the verdict or the tornado.
    expect(unmap?.dependsOn[0]).toBe('a');
    expect(unmap?.dependsOn).not.toContain('c');
    expect(unmap?.tornado.map((t) => t.step)).toEqual(['a', 'b']);
    expect(unmap?.tornado[0]).toMatchObject({ step: 'a', ratioLo: 2.5, ratioHi: 0.3125 });
    expect(unmap?.holds).toBeLessThan(0.95);
    expect(unmap?.p5).toBeLessThan(1);
    expect(unmap?.p95).toBeGreaterThan(1);
    expect(s.steps.find((t) => t.step === 'c')).toMatchObject({ lo: 30, hi: 30 });
    expect(verdictLines(s)[0]).toMatch(/^y \/ x: map 0\.010x \[0\.010x-0\.010x\] robust \(100% of 200\); unmap 1\.250x \[.*\] depends on a, b \(order holds in \d+% of 200\)$/);
    expect(s.designs.every((d) => d.exact)).toBe(true);
  });

  it('says when the ratio at the profile\'s costs lies outside the samples\' p5-p95, and which one-sided ranges lean them', () => {
    // a's range reaches 300 ns above its cost and 10 below: x (3 a per unmap) is slower in nearly
    // every sample, so y / x (29 b against 3 a: 0.967 at the costs) lies lower there, above p95.
    const skewed = profileOf({ a: [100, 90, 400], b: [10, 8, 12], c: [30, 30, 30] });
    const x = design('x', [1, 0, 0], [3, 0, 0]);
    const y = design('y', [0, 9, 0], [0, 29, 0]);
    const s = analyse([x, y], skewed, { samples: 200, seed: 5 });
    const unmap = s.comparisons.find((c) => c.metric === 'unmap');
    expect(unmap?.base).toBe(0.9667);
    expect(unmap?.p95).toBeLessThan(0.9667);
    expect(unmap?.baseOutside).toBe('above');
    // a leans the samples down; b's range is symmetric about its cost and leans nothing.
    expect(unmap?.leaningOn).toEqual(['a']);
    expect(verdictLines(s)[0]).toMatch(/unmap 0\.967x \[[0-9.]+x-0\.[0-9]+x\] robust \(\d+% of 200\), samples lean below it on a$/);
    // With the draws most likely at the cost (triangular) they lean less, but the same way.
    const t = analyse([x, y], skewed, { samples: 200, seed: 5, distribution: 'triangular' }).comparisons.find((c) => c.metric === 'unmap');
    expect(t?.p95).toBeGreaterThan(unmap?.p95 ?? 0);
    // A range as wide above its cost as below leans nothing: the base stays inside.
    const even = analyse([x, y], profileOf({ a: [100, 50, 150], b: [10, 8, 12], c: [30, 30, 30] }), { samples: 200, seed: 5 });
    expect(even.comparisons.every((c) => c.baseOutside === undefined && c.leaningOn === undefined)).toBe(true);
  });

  it('never names a step whose range is a point, however much the ratio rests on it', () => {
    const only = profileOf({ a: [100, 100, 100], b: [10, 10, 10], c: [30, 1, 300] });
    const x = design('x', [5, 0, 0], [5, 0, 0]);
    const y = design('y', [0, 50, 1], [0, 50, 1]);
    const s = analyse([x, y], only, { samples: 40, seed: 1 });
    for (const c of s.comparisons) {
      expect(c.dependsOn.every((st) => st === 'c')).toBe(true);
      expect(c.tornado.map((t) => t.step)).toEqual(['c']);
    }
  });

  it('is deterministic for a seed', () => {
    const make = (): string => JSON.stringify(analyse([design('x', [1, 1, 1], [3, 0, 1]), design('y', [0, 3, 2], [1, 4, 0]), design('z', [2, 0, 0], [0, 0, 4])], profile, { samples: 60, seed: 12 }));
    expect(make()).toBe(make());
    expect(JSON.stringify(analyse([design('x', [1, 1, 1], [3, 0, 1]), design('y', [0, 3, 2], [1, 4, 0])], profile, { samples: 60, seed: 13 }))).not.toBe(
      JSON.stringify(analyse([design('x', [1, 1, 1], [3, 0, 1]), design('y', [0, 3, 2], [1, 4, 0])], profile, { samples: 60, seed: 12 })),
    );
  });

  it('compares application throughput only when both runs carry an application', () => {
    // An I/O (io) then its map, each 100 ns of a under x and 10 ns of b under y.
    const kinds = { kinds: ['io', 'map'] as [string, string] };
    const with_ = analyse([design('x', [1, 0, 0], [1, 0, 0], { application: true }, kinds), design('y', [0, 1, 0], [0, 1, 0], { application: true }, kinds)], profile, { samples: 20, seed: 1 });
    expect(with_.comparisons.map((c) => c.metric)).toEqual(['io', 'map', 'application']);
    // I/Os per modeled second: y's is 10 times x's (above 1: b delivers more).
    expect(with_.comparisons.find((c) => c.metric === 'application')).toMatchObject({ base: 10, verdict: 'robust' });
    const without = analyse([design('x', [1, 0, 0], [1, 0, 0], { application: true }, kinds), design('y', [0, 1, 0], [0, 1, 0], {}, kinds)], profile, { samples: 20, seed: 1 });
    expect(without.comparisons.map((c) => c.metric)).toEqual(['io', 'map']);
  });
});

describe('exact or says so', () => {
  it('marks lazy mode, open-loop arrivals behind a backlog, a trace replay and branched operations approximate', () => {
    expect(approximateReasons(design('x', [1, 0, 0], [1, 0, 0]), 0)).toEqual([]);
    expect(approximateReasons(design('x', [1, 0, 0], [1, 0, 0], { dma: 'lazy' }), 0).map((r) => r.code)).toEqual(['lazy-timer']);
    expect(approximateReasons(design('x', [1, 0, 0], [1, 0, 0], { workload: 'trace-replay' }), 0).map((r) => r.code)).toEqual(['trace-idle']);
    expect(approximateReasons(design('x', [1, 0, 0], [1, 0, 0], {}, { branched: true }), 0).map((r) => r.code)).toEqual(['branched']);
    // Open loop without a backlog anywhere is exact; with one it is not.
    const open = design('x', [1, 0, 0], [1, 0, 0], {}, { arrivalEveryNs: 1000 });
    expect(approximateReasons(open, 0)).toEqual([]);
    expect(approximateReasons(open, 3).map((r) => r.code)).toEqual(['open-loop-backlog']);
  });

  it('finds the backlog an open-loop run gets once a range makes operations longer than the gaps', () => {
    // Arrivals every 150 ns; an operation costs a (100 ns at the profile, up to 400): a backlog only at higher costs.
    const open = design('x', [1, 0, 0], [1, 0, 0], {}, { arrivalEveryNs: 150 });
    const other = design('y', [0, 1, 0], [0, 1, 0]);
    const s = analyse([open, other], profile, { samples: 40, seed: 2 });
    expect(s.designs[0]).toMatchObject({ model: 'x', exact: false });
    expect(s.designs[0]?.approximate.map((r) => r.code)).toEqual(['open-loop-backlog']);
    expect(s.designs[1]).toMatchObject({ model: 'y', exact: true });
    expect(s.comparisons.every((c) => c.approximate)).toBe(true);
  });
});

describe('the report\'s sensitivity section', () => {
  it('reads any sensitivity value without throwing, and draws a tornado per comparison', async () => {
    const { reportData } = await import('../../services/controller/report/data.js');
    const { reportHtml } = await import('../../services/controller/report/page.js');
    const docs = [{ runs: [], sensitivity: 3 }, { runs: [], sensitivity: { comparisons: [null, 5, { tornado: [null, { step: 7, ratioLo: 'x' }] }], designs: [{ approximate: [null, { code: 1 }] }] } }, { runs: [], sensitivity: { comparisons: 'no' } }];
    for (const d of docs) expect(() => reportHtml(reportData(d))).not.toThrow();
    const s = analyse([design('x', [0, 0, 100], [2, 0, 0]), design('y', [0, 0, 1], [0, 10, 5], { dma: 'lazy' })], profile, { samples: 20, seed: 4 });
    const html = reportHtml(reportData({ runs: [], sensitivity: s }));
    expect(html.match(/data-chart="tornado"/g)?.length).toBe(s.comparisons.length + s.comparisons.reduce((n, c) => n + 1 + 2 * c.tornado.length, 0));
    expect(html).toContain('data-approximate="lazy-timer"');
    expect(html).toContain('depends on a, b');
  });
});
