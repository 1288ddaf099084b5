/**
 * `vmmsim sweep` planning, without processes: which --set is swept, the cross product's order,
 * every point resolved through the real scenario loader (bad values refused with the key, the
 * value and the point), the cap on runs, the grouping by process tree, and the CSV it writes.
 */
import { describe, expect, it } from 'vitest';
import { VmmsimError } from '../../services/runtime/errors.js';
import { loadScenario } from '../../services/controller/scenario-load.js';
import type { ModelName, Scenario } from '../../services/scenario/schema.js';
import { csvField, toCsv } from '../../services/controller/csv.js';
import type { OpResult, RunResult } from '../../services/controller/results.js';
import {
  MAX_SWEEP_RUNS, crossProduct, describeRun, mainOp, planSweep, splitSets, sweepCsvRecords, type SweepInput,
} from '../../services/controller/sweep.js';
import { sweepTable } from '../../services/controller/table.js';
import { measuredOf } from '../../services/controller/measured-table.js';
import type { Estimate } from '../../services/controller/measured.js';
import { thrown } from '../helpers/thrown.js';

/** A sweep input over the real loader (no scenario file), with the scenario's model or a fixed list. */
function input(sets: string[], models?: ModelName[], overrides: Record<string, unknown> = {}): SweepInput & { resolved: number } {
  const x = {
    sets,
    resolved: 0,
    resolve: (s: string[]): Scenario => {
      x.resolved += 1;
      return loadScenario(undefined, s, overrides);
    },
    models: (s: Scenario): ModelName[] => models ?? [s.model],
  };
  return x;
}

const range = (n: number): string => Array.from({ length: n }, (_, i) => i + 1).join(',');

describe('splitSets', () => {
  it('sweeps a value list and keeps a single value as a plain override', () => {
    const { swept, plain } = splitSets(['topology.psmmus=1, 2,4', 'workload.threads=2', 'topology.vsmmu=single,per-psmmu']);
    expect(swept).toEqual([
      { key: 'topology.psmmus', values: ['1', '2', '4'] },
      { key: 'topology.vsmmu', values: ['single', 'per-psmmu'] },
    ]);
    expect(plain).toEqual(['workload.threads=2']);
  });

  it.each([
    ['an empty value in a list', ['topology.psmmus=1,,2'], 'empty value'],
    ['a value listed twice', ['topology.psmmus=1,2,1'], 'value "1" is listed twice'],
    ['a key swept twice', ['topology.psmmus=1,2', 'topology.psmmus=4,8'], 'swept twice'],
    ['a swept key also given one value (after)', ['topology.psmmus=1,2', 'topology.psmmus=4'], 'already swept'],
    ['a swept key also given one value (before)', ['topology.psmmus=4', 'topology.psmmus=1,2'], 'also set to one value'],
    ['the model as a swept key', ['model=none,intel-cm'], '--models none,intel-cm'],
    ['an assignment without =', ['topology.psmmus'], 'key=value'],
  ])('refuses %s with E_USAGE', (_what, sets, says) => {
    const e = thrown(() => splitSets(sets));
    expect(e.code).toBe('E_USAGE');
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain(says);
  });

  it('refuses sweeping a key an option already sets, naming the option', () => {
    const e = thrown(() => splitSets(['workload.ops=10,20'], { 'workload.ops': '--ops' }));
    expect(e.code).toBe('E_USAGE');
    expect(e.message).toContain('workload.ops');
    expect(e.message).toContain('--ops');
    // A plain --set of the same key stays allowed (the option wins, as in run).
    expect(splitSets(['workload.ops=10'], { 'workload.ops': '--ops' }).plain).toEqual(['workload.ops=10']);
  });
});

describe('crossProduct', () => {
  it('varies the first key slowest and the last fastest', () => {
    expect(crossProduct([{ key: 'a', values: ['1', '2'] }, { key: 'b', values: ['x', 'y', 'z'] }])).toEqual([
      ['a=1', 'b=x'], ['a=1', 'b=y'], ['a=1', 'b=z'],
      ['a=2', 'b=x'], ['a=2', 'b=y'], ['a=2', 'b=z'],
    ]);
    expect(crossProduct([{ key: 'a', values: ['1'] }])).toEqual([['a=1']]);
  });
});

describe('planSweep', () => {
  it('resolves every point through the schema, with typed values and the plain overrides everywhere', () => {
    const x = input(['topology.psmmus=1,2,4', 'workload.threads=2', 'topology.vsmmu=single,per-psmmu'], ['nested-smmuv3', 'nested-smmuv3-vcmdq'], { 'workload.ops': 30 });
    const plan = planSweep(x);
    expect(plan.keys).toEqual(['topology.psmmus', 'topology.vsmmu']);
    expect(plan.points.map((p) => p.values)).toEqual([
      { 'topology.psmmus': 1, 'topology.vsmmu': 'single' },
      { 'topology.psmmus': 1, 'topology.vsmmu': 'per-psmmu' },
      { 'topology.psmmus': 2, 'topology.vsmmu': 'single' },
      { 'topology.psmmus': 2, 'topology.vsmmu': 'per-psmmu' },
      { 'topology.psmmus': 4, 'topology.vsmmu': 'single' },
      { 'topology.psmmus': 4, 'topology.vsmmu': 'per-psmmu' },
    ]);
    expect(plan.points.map((p) => p.index)).toEqual([0, 1, 2, 3, 4, 5]);
    for (const p of plan.points) {
      expect(p.scenario.topology.psmmus).toBe(p.values['topology.psmmus']);
      expect(p.scenario.topology.vsmmu).toBe(p.values['topology.vsmmu']);
      expect(p.scenario.workload.threads).toBe(2);
      expect(p.scenario.workload.ops).toBe(30);
    }
    expect(x.resolved).toBe(6);
    expect(plan.runs).toBe(12);
    expect(describeRun(plan.points[2]?.values ?? {}, 'nested-smmuv3')).toBe('topology.psmmus=2 topology.vsmmu=single nested-smmuv3');
  });

  it('runs the points that share their processes on one tree, models innermost', () => {
    // psmmus varies fastest here: grouping by the process set still gives one tree per psmmus.
    const plan = planSweep(input(['topology.vsmmu=single,per-psmmu', 'topology.psmmus=1,2'], ['none', 'nested-smmuv3']));
    expect(plan.groups).toHaveLength(2);
    const show = (g: (typeof plan.groups)[number]): string[] => g.map((r) => describeRun(r.point.values, r.model));
    expect(show(plan.groups[0] ?? [])).toEqual([
      'topology.vsmmu=single topology.psmmus=1 none',
      'topology.vsmmu=single topology.psmmus=1 nested-smmuv3',
      'topology.vsmmu=per-psmmu topology.psmmus=1 none',
      'topology.vsmmu=per-psmmu topology.psmmus=1 nested-smmuv3',
    ]);
    expect(show(plan.groups[1] ?? []).every((s) => s.includes('topology.psmmus=2'))).toBe(true);
    // Keys that leave the processes alone need one tree for the whole sweep.
    expect(planSweep(input(['workload.threads=1,2,4', 'dma=strict,lazy'])).groups).toHaveLength(1);
  });

  it('refuses a bad value naming the key, the value and the point (exit 2)', () => {
    const x = input(['topology.psmmus=1,100', 'topology.vsmmu=single,per-psmmu']);
    const e = thrown(() => planSweep(x));
    expect(e.code).toBe('E_SCENARIO_FIELD');
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain('topology.psmmus');
    expect(e.message).toContain('100');
    expect(e.message).toContain('sweep point topology.psmmus=100 topology.vsmmu=single');
    const enumBad = thrown(() => planSweep(input(['topology.vsmmu=single,bogus'])));
    expect(enumBad.code).toBe('E_SCENARIO_FIELD');
    expect(enumBad.message).toContain('"bogus"');
    const word = thrown(() => planSweep(input(['topology.psmmus=1,two'])));
    expect(word.message).toContain('"two"');
    const unsupported = thrown(() => planSweep(input(['topology.hosts=1,2'])));
    expect(unsupported.code).toBe('E_NOT_SUPPORTED');
    expect(unsupported.message).toContain('topology.hosts');
    const unknown = thrown(() => planSweep(input(['topology.psmmu=1,2'])));
    expect(unknown.message).toContain('did you mean topology.psmmus');
  });

  it('refuses a point the models cannot run, naming the point', () => {
    const e = thrown(() =>
      planSweep({
        ...input(['topology.psmmus=1,2']),
        models: (s) => {
          if (s.topology.psmmus === 2) throw new VmmsimError('E_NOT_SUPPORTED', 'not with two');
          return ['none'];
        },
      }),
    );
    expect(e.code).toBe('E_NOT_SUPPORTED');
    expect(e.message).toBe('not with two (sweep point topology.psmmus=2)');
  });

  it('needs at least one swept key', () => {
    const e = thrown(() => planSweep(input(['topology.psmmus=2'])));
    expect(e.code).toBe('E_USAGE');
    expect(e.message).toContain('key=v1,v2');
  });

  it(`refuses more than ${MAX_SWEEP_RUNS} points before resolving any, naming the count`, () => {
    const x = input([`topology.psmmus=${range(64)}`, 'topology.devicesPerPsmmu=1,2,3,4,5']);
    const e = thrown(() => planSweep(x));
    expect(e.code).toBe('E_USAGE');
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain('320 points');
    expect(e.message).toContain(`${MAX_SWEEP_RUNS}`);
    expect(x.resolved).toBe(0);
  });

  it(`counts points x models against the ${MAX_SWEEP_RUNS} cap`, () => {
    const e = thrown(() => planSweep(input([`topology.psmmus=${range(64)}`, 'topology.vsmmu=single,per-psmmu'], ['none', 'intel-cm', 'nested-smmuv3'])));
    expect(e.code).toBe('E_USAGE');
    expect(e.message).toContain('384 runs (128 points x 3 models)');
    // Exactly the cap is allowed.
    expect(planSweep(input([`topology.psmmus=${range(64)}`, 'topology.vsmmu=single,per-psmmu'], ['none', 'nested-smmuv3'])).runs).toBe(MAX_SWEEP_RUNS);
  });
});

function summary(mean: number, p50: number, p99: number): OpResult['measuredUs'] {
  return { count: 10, mean, stddev: 0, min: p50, p50, p90: p99, p99, p999: p99, max: p99 };
}

function op(name: string, count: number, exit = 1): OpResult {
  return {
    op: name,
    count,
    failed: 0,
    transitions: { exit, user: exit, ioctl: 0.5, hw: 2, direct: 0 },
    measuredUs: summary(50, 40.5, 99.25),
    modeledNs: summary(4061, 4061, 5386),
    breakdown: [],
  };
}

function run(point: Record<string, string | number>, model: string, ops: OpResult[]): RunResult {
  const scenario = loadScenario(undefined);
  return {
    point,
    model,
    workload: scenario.workload,
    topology: scenario.topology,
    processes: [],
    ops,
    hops: [],
    throughput: { opsPerSecMeasured: 1234.5, opsPerSecModeled: 479501.319 },
    invalidations: { guestCommands: 30, guestCommandsFailed: 0, deliveredPerPsmmu: { 'psmmu-0': 30, 'psmmu-1': 30 }, fanout: 2, wasted: 0, hostStage2: { unmaps: 0, deliveredPerPsmmu: {} } },
    dma: { mode: 'strict', translations: 0, iotlbHitRate: 0, faults: 0, staleTranslations: 0, atcHits: 0, atcStaleTranslations: 0, useAfterUnmap: 0, staleDuringUnmap: 0, walkAccesses: 0, translationCostNs: 0 },
    elapsedSec: 1,
    modeledElapsedNs: 1,
    modeledResources: [],
    workloadCounters: {},
    counters: {},
    notes: [],
  };
}

describe('mainOp', () => {
  it('is unmap when there is one, else the most frequent operation', () => {
    expect(mainOp(run({}, 'm', [op('map', 30), op('unmap', 30), op('flush', 2)]))?.op).toBe('unmap');
    expect(mainOp(run({}, 'm', [op('invalidate', 100)]))?.op).toBe('invalidate');
    expect(mainOp(run({}, 'm', []))).toBeUndefined();
  });

  it('is the unmap after a migration when the VM migrated', () => {
    expect(mainOp(run({}, 'm', [op('map@before', 50), op('unmap@before', 50), op('map@after', 20), op('unmap@after', 20)]))?.op).toBe('unmap@after');
  });
});

describe('CSV (RFC 4180)', () => {
  it('quotes a field with a comma, a double quote, a CR or an LF, doubling inner quotes', () => {
    expect(csvField('plain')).toBe('plain');
    expect(csvField(4.5)).toBe('4.5');
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('two\nlines')).toBe('"two\nlines"');
    expect(csvField('cr\r')).toBe('"cr\r"');
    expect(csvField('')).toBe('');
    expect(toCsv([['a', 'b,c'], [1, '"']])).toBe('a,"b,c"\r\n1,""""\r\n');
  });

  it('writes one record per operation that ran after a header naming the swept keys, main_op marking the run\'s main one', () => {
    const keys = ['topology.psmmus', 'name'];
    // A run with its measured section (warm-up excluded, trials): the measured columns are its figures.
    const est = (value: number): Estimate => ({ value, ci95: [value - 1, value + 1], trials: [value - 1, value, value + 1] });
    const steady = run({ 'topology.psmmus': 8, name: 'e' }, 'none', [op('map', 30, 0), op('unmap', 30, 0)]);
    steady.measured = { ...measuredOf(steady), trials: 3, warmupOps: 3, warmupOpsExcluded: 9, ops: [{ op: 'unmap', count: 27, p50Us: est(38), p99Us: est(90.5), meanUs: est(41) }], opsPerSec: est(1500) };
    const text = toCsv(sweepCsvRecords(keys, [
      run({ 'topology.psmmus': 2, name: 'a "b", c' }, 'nested-smmuv3', [op('map', 30, 0), op('unmap', 30), op('flush', 0)]),
      run({ 'topology.psmmus': 4, name: 'd' }, 'none', [op('map@before', 10, 0), op('unmap@before', 10, 0), op('map@after', 20, 0), op('unmap@after', 20, 0)]),
    ]));
    const records = text.split('\r\n');
    expect(records.pop()).toBe('');
    const app = ',,,,,,';
    const tail = '40.5,99.25,4061,5386,1234.5,479501.319,2,30,60';
    expect(records).toEqual([
      'topology.psmmus,name,model,app_unit,app_per_sec_modeled,app_bytes_per_sec_modeled,app_bottleneck,app_bottleneck_kind,app_saturated,op,count,exit,user,ioctl,hw,direct,' +
        'measured_p50_us,measured_p99_us,modeled_mean_ns,modeled_p99_ns,ops_per_sec_measured,ops_per_sec_modeled,fanout,guest_commands,delivered,main_op',
      // The flush that never ran (count 0) has no record.
      `2,"a ""b"", c",nested-smmuv3${app},map,30,0,0,0.5,2,0,${tail},false`,
      `2,"a ""b"", c",nested-smmuv3${app},unmap,30,1,1,0.5,2,0,${tail},true`,
      `4,d,none${app},map@before,10,0,0,0.5,2,0,${tail},false`,
      `4,d,none${app},unmap@before,10,0,0,0.5,2,0,${tail},false`,
      `4,d,none${app},map@after,20,0,0,0.5,2,0,${tail},false`,
      `4,d,none${app},unmap@after,20,0,0,0.5,2,0,${tail},true`,
    ]);
  });
});

describe('sweepTable', () => {
  it('shows a row per operation of each run with the swept values and fits 120 columns for the README example', () => {
    const keys = ['topology.psmmus', 'topology.vsmmu'];
    const runs: RunResult[] = [];
    for (const psmmus of [1, 2, 4, 8, 16]) {
      for (const vsmmu of ['single', 'per-psmmu']) {
        for (const model of ['nested-smmuv3', 'nested-smmuv3-vcmdq']) runs.push(run({ 'topology.psmmus': psmmus, 'topology.vsmmu': vsmmu }, model, [op('map', 2000, 0), op('unmap', 2000)]));
      }
    }
    // A loaded machine's measured latency: about four significant digits keep the columns narrow.
    const slow = runs[19]?.ops[1];
    if (slow) slow.measuredUs = summary(6000, 5881.85, 160033.89);
    const table = sweepTable(keys, runs);
    const lines = table.split('\n');
    for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(120);
    // The modeled table leads; the measured one follows it, with no modeled column in it.
    const headers = lines.filter((l) => l.startsWith('psmmus'));
    expect(headers).toHaveLength(2);
    expect(headers[0]).toMatch(/^psmmus\s+vsmmu\s+model\s+op\s+e\/u\/i\/h\/d\s+mean\s+p99\s+ops\/s\s+fanout$/);
    expect(headers[1]).toMatch(/^psmmus\s+vsmmu\s+model\s+op\s+p50\s+p99\s+ops\/s$/);
    // A row per operation: the run's first (map) carries its point, model and run figures, the unmap only its own.
    const modeledRows = lines.slice(lines.indexOf(headers[0] as string) + 1, lines.indexOf(headers[0] as string) + 41);
    expect(modeledRows[0]).toMatch(/^\s+1\s+single\s+nested-smmuv3\s+map\s+0\/0\/0\.50\/2\/0\s+4\.061\s+5\.386\s+479501\s+2\.00$/);
    expect(modeledRows[1]).toMatch(/^\s+unmap\s+1\/1\/0\.50\/2\/0\s+4\.061\s+5\.386$/);
    expect(modeledRows[38]).toMatch(/^\s*16\s+per-psmmu\s+nested-smmuv3-vcmdq\s+map\s/);
    const measuredRows = lines.slice(lines.indexOf(headers[1] as string) + 1);
    expect(measuredRows).toHaveLength(40);
    expect(measuredRows[0]).toMatch(/^\s+1\s+single\s+nested-smmuv3\s+map\s+40\.50\s+99\.25\s+1235$/);
    expect(measuredRows[1]).toMatch(/^\s+unmap\s+40\.50\s+99\.25$/);
    expect(measuredRows[39]).toMatch(/^\s+unmap\s+5882\s+160034$/);
    expect(table.indexOf('Modeled')).toBeLessThan(table.indexOf('Measured'));
    expect(table).toContain('topology.psmmus x topology.vsmmu (10 points) x 2 models');
  });

  it('shows every operation of a migrated run, @before and @after, and no row for one that never ran', () => {
    const runs = [run({ 'workload.migration.atOp': 100 }, 'nested-smmuv3-vcmdq', [op('map@before', 50, 0), op('unmap@before', 50), op('map@after', 50, 0), op('unmap@after', 50), op('flush', 0)])];
    const lines = sweepTable(['workload.migration.atOp'], runs).split('\n');
    const header = lines.findIndex((l) => l.startsWith('atOp'));
    const rows = lines.slice(header + 1, header + 5);
    expect(rows.map((l) => l.trim().split(/\s+/).find((c) => /^(map|unmap|flush)/.test(c)))).toEqual(['map@before', 'unmap@before', 'map@after', 'unmap@after']);
    expect(rows[0]).toMatch(/^\s*100\s+nested-smmuv3-vcmdq\s+map@before\s/);
    for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(120);
  });
});
