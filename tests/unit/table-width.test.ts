/**
 * The terminal tables fit 120 columns: the comparison over all ten models, with the widest
 * values a run can produce (the operation names of a migration and of emulated devices, fractional
 * transitions, a broadcast to 64 pSMMUs, counts up to the schema's limit, latencies of seconds on
 * a stalled machine), and the sweep tables with two swept keys.
 */
import { describe, expect, it } from 'vitest';
import { MODELS } from '../../services/scenario/schema.js';
import type { RunResult } from '../../services/controller/results.js';
import { comparisonTable, hopTable, saturationTable, sweepSaturationTable, sweepTable } from '../../services/controller/table.js';
import { fixtureRun, mapUnmap, saturation, type FixtureOp } from '../helpers/results-fixture.js';

const WIDTH = 120;

function tooWide(text: string): string[] {
  return text.split('\n').filter((l) => l.length > WIDTH).map((l) => `${l.length}: ${l}`);
}

/** Every model with the operations of a live migration and of a lazy flush, at `scale` times the usual latency and count. */
function allModels(count: number, scale: number, psmmus: number): RunResult[] {
  return MODELS.map((model, i) => {
    const half = { exit: 0.5, user: 0.5, ioctl: 0.5 * psmmus, hw: 0.5 * psmmus, direct: 0.5 };
    const ops: FixtureOp[] =
      model === 'none'
        ? mapUnmap(count, {}, scale / 1000)
        : [
            ...mapUnmap(count, { exit: 1, user: 1, ioctl: psmmus, hw: psmmus }, scale * (1 + i)),
            { op: 'map@before', count, transitions: {}, measuredP50Us: 25 * scale, modeledP50Ns: 110 * scale },
            { op: 'unmap@before', count, transitions: { direct: 1 }, measuredP50Us: 800 * scale, modeledP50Ns: 1130 * scale },
            { op: 'unmap@after', count, transitions: half, measuredP50Us: 1900 * scale, modeledP50Ns: 2600 * scale },
            { op: 'unmap@emulated', count, transitions: { exit: 1, user: 1 }, measuredP50Us: 1400 * scale, modeledP50Ns: 2936 * scale },
            { op: 'mem-unplug', count: Math.round(count / 100), transitions: { exit: 1, user: 1, ioctl: 1, hw: psmmus }, measuredP50Us: 9000 * scale, modeledP50Ns: 20000 * scale },
            { op: 'flush', count: Math.round(count / 3), transitions: { exit: 1 / 3, user: 1 / 3, ioctl: psmmus / 3, hw: psmmus / 3 }, measuredP50Us: 5000 * scale, modeledP50Ns: 9000 * scale },
          ];
    return fixtureRun({
      model,
      ops,
      psmmus,
      opsPerSecMeasured: model === 'none' ? 99_999_999.123 : 0.001 * (i + 1),
      opsPerSecModeled: model === 'none' ? 33_333_333.333 : 1.5 * (i + 1),
      fanout: psmmus,
      rate: 100_000_000,
    });
  });
}

describe('comparison table', () => {
  it('fits 120 columns over all the models with the usual values', () => {
    const runs = allModels(2000, 1, 1);
    const text = comparisonTable(runs);
    for (const m of MODELS) expect(text).toContain(m);
    expect(tooWide(text)).toEqual([]);
  });

  it('fits 120 columns over all the models with the widest values a run can give', () => {
    const runs = allModels(1_000_000_000, 4000, 64);
    const text = comparisonTable(runs);
    for (const m of MODELS) expect(text).toContain(m);
    expect(text).toContain('unmap@emulated');
    expect(tooWide(text)).toEqual([]);
  });

  it('fits 120 columns for the hops of one run', () => {
    const run = fixtureRun({ model: 'nested-smmuv3', ops: mapUnmap(50, { exit: 1 }), hops: [{ from: 'psmmu-63', to: 'vfio', p50Us: 9_999_999 }] });
    expect(tooWide(hopTable(run))).toEqual([]);
  });
});

describe('sweep tables', () => {
  const points = [1, 2, 4, 8, 16, 64].flatMap((psmmus) => ['single', 'per-psmmu'].map((vsmmu) => ({ 'topology.psmmus': psmmus, 'topology.vsmmu': vsmmu })));
  const runs = points.flatMap((point) =>
    MODELS.map((model) =>
      fixtureRun({ model, point, psmmus: point['topology.psmmus'], ops: mapUnmap(1_000_000_000, { exit: 1, user: 1, ioctl: point['topology.psmmus'], hw: point['topology.psmmus'] }, 4000), opsPerSecModeled: 33_333_333.333, fanout: point['topology.psmmus'] }),
    ),
  );

  it('fits 120 columns with two swept keys and every model', () => {
    const text = sweepTable(['topology.psmmus', 'topology.vsmmu'], runs);
    expect(text.split('\n').length).toBeGreaterThan(runs.length);
    expect(tooWide(text)).toEqual([]);
  });

  it('fits 120 columns for a sweep of saturation searches and for saturate', () => {
    const results = points.flatMap((point) => MODELS.map((m) => ({ ...saturation(m, 99_999_999, { failedAtPerSec: 100_000_000, steps: 24 }), point })));
    expect(tooWide(sweepSaturationTable(['topology.psmmus', 'topology.vsmmu'], results))).toEqual([]);
    const steps = MODELS.map((model) => fixtureRun({ model, point: { 'workload.rate': 99_999_999 }, rate: 99_999_999, ops: mapUnmap(1_000_000_000, { exit: 1 }, 4000) }));
    expect(tooWide(saturationTable(MODELS.map((m) => saturation(m, 99_999_999, { failedAtPerSec: 100_000_000, steps: 24 })), steps))).toEqual([]);
  });
});
