/**
 * `vmmsim sweep` end to end: the built CLI runs a cross product of scenario values on real process
 * trees (a new tree only when the process set changes), prints its table and progress, writes
 * results.json and results.csv, and leaves no process behind, also when interrupted; bad values
 * are refused before any process starts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ResultsDoc, RunResult } from '../../services/controller/results.js';
import type { CliResult } from '../helpers/cli.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { Runs, STACK_LINE, entries, lines, parseResults, readResults, roleOf, runWatched, waitFor, within } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

function unmap(run: RunResult): RunResult['ops'][number] {
  const o = run.ops.find((x) => x.op === 'unmap');
  expect(o, `unmap in ${run.model} at ${JSON.stringify(run.point)}`).toBeDefined();
  return o as RunResult['ops'][number];
}

describe('vmmsim sweep --ops 30 --set topology.psmmus=1,2 --set topology.vsmmu=single,per-psmmu --models nested-smmuv3', () => {
  let out: string;
  let result: CliResult & { spawned: { pid: number; cmdline: string }[]; tmp: string };
  let doc: ResultsDoc;

  beforeAll(async () => {
    out = join(runs.folder(), 'out');
    result = await runWatched(runs, ['sweep', '--ops', '30', '--set', 'topology.psmmus=1,2', '--set', 'topology.vsmmu=single,per-psmmu', '--models', 'nested-smmuv3', '--out', out]);
    doc = readResults(out);
  });

  it('exits 0 and writes results.json with one run per point, each carrying its point', () => {
    expect(result.code, result.stderr).toBe(0);
    expect(doc.status).toBe('ok');
    expect(doc.sweep).toEqual({ keys: ['topology.psmmus', 'topology.vsmmu'], points: 4 });
    expect(doc.runs.map((r) => r.point)).toEqual([
      { 'topology.psmmus': 1, 'topology.vsmmu': 'single' },
      { 'topology.psmmus': 1, 'topology.vsmmu': 'per-psmmu' },
      { 'topology.psmmus': 2, 'topology.vsmmu': 'single' },
      { 'topology.psmmus': 2, 'topology.vsmmu': 'per-psmmu' },
    ]);
    for (const r of doc.runs) {
      expect(r.model).toBe('nested-smmuv3');
      // Each run really ran its point's topology.
      expect(r.topology.psmmus).toBe(r.point?.['topology.psmmus']);
      expect(r.topology.vsmmu).toBe(r.point?.['topology.vsmmu']);
      expect(r.processes.filter((p) => p.role === 'psmmu')).toHaveLength(r.topology.psmmus);
      expect(unmap(r).count).toBe(30);
    }
    expect(doc.scenario.workload.ops).toBe(30);
  });

  it('shows the divergence: a single vSMMU broadcasts each invalidation to both pSMMUs, one per pSMMU does not', () => {
    const [one, onePer, single, per] = doc.runs as [RunResult, RunResult, RunResult, RunResult];
    expect(one.invalidations.fanout).toBe(1);
    expect(onePer.invalidations.fanout).toBe(1);
    expect(single.invalidations.fanout).toBe(2);
    expect(per.invalidations.fanout).toBe(1);
    expect(single.invalidations.guestCommands).toBe(30);
    expect(Object.values(single.invalidations.deliveredPerPsmmu)).toEqual([30, 30]);
    expect(Object.values(per.invalidations.deliveredPerPsmmu).reduce((a, b) => a + b, 0)).toBe(30);
    // Broadcasting costs modeled time on the unmap path.
    expect(unmap(single).modeledNs.mean).toBeGreaterThan(unmap(per).modeledNs.mean);
    expect(unmap(per).modeledNs.mean).toBe(unmap(one).modeledNs.mean);
  });

  it('writes results.csv beside it: a header and one RFC 4180 record per operation of each run, main_op marking one per run', () => {
    const text = readFileSync(join(out, 'results.csv'), 'utf8');
    expect(text.endsWith('\r\n')).toBe(true);
    const records = text.slice(0, -2).split('\r\n').map((l) => l.split(','));
    const header = records[0] as string[];
    // The swept keys, the model, the application columns (empty: dma-map-benchmark has no application throughput), the main operation.
    expect(header.slice(0, 11)).toEqual(['topology.psmmus', 'topology.vsmmu', 'model', 'app_unit', 'app_per_sec_modeled', 'app_bytes_per_sec_modeled', 'app_bottleneck', 'app_bottleneck_kind', 'app_saturated', 'op', 'count']);
    for (const c of ['exit', 'user', 'ioctl', 'hw', 'direct', 'measured_p50_us', 'measured_p99_us', 'modeled_mean_ns', 'modeled_p99_ns', 'ops_per_sec_measured', 'ops_per_sec_modeled', 'fanout', 'guest_commands', 'delivered', 'main_op']) {
      expect(header, c).toContain(c);
    }
    const col = (row: string[], name: string): string => row[header.indexOf(name)] as string;
    // Each run's map and unmap.
    expect(records.slice(1).map((r) => `${col(r, 'op')}:${col(r, 'main_op')}`)).toEqual(Array(4).fill(['map:false', 'unmap:true']).flat());
    const rows = records.slice(1).filter((r) => col(r, 'main_op') === 'true');
    expect(rows).toHaveLength(4);
    rows.forEach((row, i) => {
      const run = doc.runs[i] as RunResult;
      expect(row).toHaveLength(header.length);
      expect(col(row, 'topology.psmmus')).toBe(String(run.point?.['topology.psmmus']));
      expect(col(row, 'topology.vsmmu')).toBe(run.point?.['topology.vsmmu']);
      expect(col(row, 'op')).toBe('unmap');
      expect(Number(col(row, 'count'))).toBe(30);
      expect(Number(col(row, 'fanout'))).toBe(run.invalidations.fanout);
      expect(Number(col(row, 'modeled_mean_ns'))).toBe(unmap(run).modeledNs.mean);
      expect(Number(col(row, 'hw'))).toBe(unmap(run).transitions.hw);
      expect(row.slice(3, 9)).toEqual(['', '', '', '', '', '']);
      // The measured figures as the measured table shows them: warm-up excluded.
      const m = run.measured?.ops.find((o) => o.op === 'unmap');
      expect(Number(col(row, 'measured_p50_us'))).toBe(m?.p50Us.value);
      expect(Number(col(row, 'ops_per_sec_measured'))).toBe(run.measured?.opsPerSec.value);
    });
    expect(rows.map((r) => col(r, 'fanout'))).toEqual(['1', '1', '2', '1']);
  });

  it('prints a progress line per run on stderr and the table on stdout', () => {
    expect(lines(result.stderr)).toEqual([
      'vmmsim: sweep 1/4: topology.psmmus=1 topology.vsmmu=single nested-smmuv3...',
      'vmmsim: sweep 2/4: topology.psmmus=1 topology.vsmmu=per-psmmu nested-smmuv3...',
      'vmmsim: sweep 3/4: topology.psmmus=2 topology.vsmmu=single nested-smmuv3...',
      'vmmsim: sweep 4/4: topology.psmmus=2 topology.vsmmu=per-psmmu nested-smmuv3...',
    ]);
    const stdout = lines(result.stdout);
    for (const l of stdout) expect(l.length, l).toBeLessThanOrEqual(120);
    // Two tables, the modeled one first, then the measured one (never a shared column); each has a
    // row per operation: the run's first (map) with its point and run figures, then its unmap.
    const at = stdout.findIndex((l) => l.startsWith('Measured (this host\'s real IPC'));
    expect(at).toBeGreaterThan(0);
    const row = (l: string): boolean => /^\s*\d+\s+(single|per-psmmu)\s+nested-smmuv3\s+map\s/.test(l);
    const modeled = stdout.slice(0, at);
    const rows = modeled.filter(row);
    expect(rows).toHaveLength(4);
    expect(rows.map((r) => r.trim().split(/\s+/).pop())).toEqual(['1.00', '1.00', '2.00', '1.00']);
    expect(modeled.filter((l) => /^\s+unmap\s+\d/.test(l))).toHaveLength(4);
    modeled.forEach((l, i) => {
      if (row(l)) expect(modeled[i + 1]).toMatch(/^\s+unmap\s+\d/);
    });
    // The measured table: p50, p99 per operation, and the run's ops/s on its first row.
    const measured = stdout.slice(at).filter(row);
    expect(measured).toHaveLength(4);
    expect(measured.map((r) => r.trim().split(/\s+/).length)).toEqual([7, 7, 7, 7]);
    expect(measured.map((r) => Number(r.trim().split(/\s+/).pop()))).toEqual(doc.runs.map((r) => Math.round(r.measured?.opsPerSec.value ?? NaN)));
    expect(stdout).toContain(`results: ${join(out, 'results.json')}`);
    expect(stdout[stdout.length - 1]).toBe(`csv: ${join(out, 'results.csv')}`);
  });

  it('starts one process tree per process set: two trees, the points of each sharing it', () => {
    const pids = doc.runs.map((r) => r.processes.map((p) => p.pid).sort((a, b) => a - b));
    expect(pids[1]).toEqual(pids[0]);
    expect(pids[3]).toEqual(pids[2]);
    expect((pids[2] as number[]).some((pid) => (pids[0] as number[]).includes(pid))).toBe(false);
    // 5 processes for one pSMMU, then 6 for two: nothing else was started.
    expect(result.spawned.filter((p) => roleOf(p.cmdline) !== undefined)).toHaveLength(11);
  });

  it('leaves no process and no socket folder behind', async () => {
    expect(await waitForNoProcesses(result.marker)).toEqual([]);
    expect(entries(result.tmp)).toEqual([]);
  });
});

describe('vmmsim sweep --json', () => {
  it('prints the results document it wrote, nothing on stderr, and keeps one tree when the processes do not change', async () => {
    const out = join(runs.folder(), 'out');
    const r = await runWatched(runs, ['sweep', '--ops', '20', '--set', 'workload.threads=1,2', '--set', 'dma=strict', '--models', 'none', '--json', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const doc = parseResults(r.stdout);
    expect(doc).toEqual(readResults(out));
    expect(doc.sweep).toEqual({ keys: ['workload.threads'], points: 2 });
    expect(doc.runs.map((x) => [x.point, x.workload.threads])).toEqual([[{ 'workload.threads': 1 }, 1], [{ 'workload.threads': 2 }, 2]]);
    expect(existsSync(join(out, 'results.csv'))).toBe(true);
    expect(r.spawned.filter((p) => roleOf(p.cmdline) !== undefined)).toHaveLength(5);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  });
});

describe('vmmsim sweep: bad input starts nothing', () => {
  const CASES: { what: string; args: string[]; code: string; mentions: string[] }[] = [
    { what: 'a value out of range', args: ['--set', 'topology.psmmus=1,100'], code: 'E_SCENARIO_FIELD', mentions: ['topology.psmmus', '100'] },
    { what: 'an unknown value', args: ['--set', 'topology.psmmus=1,2', '--set', 'topology.vsmmu=single,bogus'], code: 'E_SCENARIO_FIELD', mentions: ['topology.vsmmu', '"bogus"'] },
    { what: `more than 256 points`, args: ['--set', `topology.psmmus=${Array.from({ length: 64 }, (_, i) => i + 1).join(',')}`, '--set', 'topology.devicesPerPsmmu=1,2,3,4,5'], code: 'E_USAGE', mentions: ['320 points', '256'] },
    { what: 'no swept key', args: ['--set', 'topology.psmmus=2'], code: 'E_USAGE', mentions: ['key=v1,v2'] },
  ];
  for (const c of CASES) {
    it(`refuses ${c.what}: exit 2, one line, no process, nothing written`, async () => {
      const out = join(runs.folder(), 'out');
      const r = await runWatched(runs, ['sweep', ...c.args, '--out', out]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      const err = lines(r.stderr);
      expect(err, r.stderr).toHaveLength(1);
      expect(err[0]?.startsWith(`vmmsim: ${c.code}: `), err[0]).toBe(true);
      expect(r.stderr).not.toMatch(STACK_LINE);
      for (const m of c.mentions) expect(err[0]).toContain(m);
      expect(r.spawned, 'processes started').toEqual([]);
      expect(entries(r.tmp), 'socket folder created').toEqual([]);
      expect(entries(out), 'results written').toEqual([]);
    });
  }
});

describe('vmmsim sweep interrupted', () => {
  it('SIGINT during the first point: exit 130, results "interrupted" with the CSV, no process left', async () => {
    const out = join(runs.folder(), 'out');
    const tmp = runs.folder('vmmsim-e2e-tmp-');
    const run = runs.start(['sweep', '--ops', '0', '--duration', '30', '--set', 'topology.psmmus=1,2', '--models', 'nested-smmuv3', '--out', out], { env: { TMPDIR: tmp } });
    let stderr = '';
    run.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await waitFor(() => (stderr.includes('vmmsim: sweep 1/2: ') ? true : undefined), 30_000, 'the first point to start');
    run.child.kill('SIGINT');
    const r = await within(run.done, 10_000, 'the controller after SIGINT');
    expect(r.code, r.stderr).toBe(130);
    const doc = readResults(out);
    expect(doc.status).toBe('interrupted');
    expect(doc.error?.code).toBe('E_INTERRUPTED');
    expect(doc.sweep).toEqual({ keys: ['topology.psmmus'], points: 2 });
    expect(doc.runs).toEqual([]);
    expect(readFileSync(join(out, 'results.csv'), 'utf8').split('\r\n')[0]).toBe('topology.psmmus,model,app_unit,app_per_sec_modeled,app_bytes_per_sec_modeled,app_bottleneck,app_bottleneck_kind,app_saturated,op,count,exit,user,ioctl,hw,direct,measured_p50_us,measured_p99_us,modeled_mean_ns,modeled_p99_ns,ops_per_sec_measured,ops_per_sec_modeled,fanout,guest_commands,delivered,main_op');
    // The second point's tree never started.
    expect(stderr).not.toContain('sweep 2/2');
    expect(await waitForNoProcesses(run.marker, 10_000)).toEqual([]);
    expect(entries(tmp), 'socket folder removed').toEqual([]);
  });
});

describe('vmmsim sweep --saturate: a saturation rate per point', () => {
  it('finds each point\'s rate, and a single vSMMU over two pSMMUs saturates lower than one per pSMMU', async () => {
    const out = join(runs.folder(), 'sat');
    const r = await runWatched(runs, [
      'sweep', '--ops', '60', '--set', 'topology.psmmus=2', '--set', 'topology.vsmmu=single,per-psmmu', '--set', 'workload.threads=2',
      '--models', 'nested-smmuv3', '--saturate', '--p99-bound-us', '50', '--from', '100000', '--steps', '6', '--out', out,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const doc = readResults(out);
    // topology.psmmus has one value: an override, not a swept key.
    expect(doc.saturation?.map((s) => s.point)).toEqual([{ 'topology.vsmmu': 'single' }, { 'topology.vsmmu': 'per-psmmu' }]);
    const [single, per] = doc.saturation ?? [];
    expect(single?.ratePerSec).toBeGreaterThan(0);
    // Broadcasting pays two ioctls per unmap under the VMM's lock: it saturates first.
    expect(single?.ratePerSec ?? Infinity).toBeLessThan(per?.ratePerSec ?? 0);
    // Every step is a run with its point and rate.
    expect(doc.runs.every((x) => typeof x.point?.['workload.rate'] === 'number' && x.point?.['topology.vsmmu'] !== undefined)).toBe(true);
    const csv = readFileSync(join(out, 'saturation.csv'), 'utf8').trim().split('\r\n');
    expect(csv[0]).toBe('topology.vsmmu,model,op,metric,p99BoundUs,ratePerSec,failedAtPerSec,steps,stop,boundPerSec,capPerSec,capped');
    expect(doc.saturation?.every((s) => s.capPerSec === 1e9 && s.capped === false)).toBe(true);
    expect(csv).toHaveLength(3);
    expect(lines(r.stdout).some((l) => /^single\s+nested-smmuv3\s+unmap\s+\d+/.test(l))).toBe(true);
  });

  it('refuses search options without --saturate, before any process starts', async () => {
    const r = await runWatched(runs, ['sweep', '--set', 'topology.vsmmu=single,per-psmmu', '--p99-bound-us', '50']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--p99-bound-us is a saturation search option: add --saturate/);
    expect(r.spawned).toEqual([]);
  });
});
