/**
 * `vmmsim saturate` end to end: the built CLI ramps and bisects workload.rate over real runs on
 * one process tree, prints a progress line per step and a table, and writes a results document
 * with every step and each model's saturation rate. Runs are kept short: 200 arrivals each, under
 * `none`, whose modeled iteration is a dma-direct map and unmap (twice the default profile's
 * guest.dma_direct: 10 ns, so the knee is near 100 M/s) and a step takes a fraction of a second.
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadProfile } from '../../services/cost/profile.js';
import type { ResultsDoc, RunResult, SaturationResult } from '../../services/controller/results.js';
import type { CliResult } from '../helpers/cli.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { Runs, entries, lines, parseResults, readResults, roleOf, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

const dmaDirectNs = loadProfile('arm64-kunpeng920').steps['guest.dma_direct']?.ns ?? NaN;
/** The rate one thread completes when it never idles: one map and one unmap per arrival. */
const capacity = 1e9 / (2 * dmaDirectNs);
/** The highest rate at which that is still 95% of the requested rate. */
const knee = capacity / 0.95;
/** One dma-direct unmap's modeled p99 as the progress line prints it (us, 3 decimals, dot escaped). */
const P99 = (dmaDirectNs / 1000).toFixed(3).replace('.', '\\.');

describe('vmmsim saturate --model none --p99-bound-us 50 --ops 200 --json', () => {
  let out: string;
  let result: CliResult & { spawned: { pid: number; cmdline: string }[]; tmp: string };
  let doc: ResultsDoc;
  let sat: SaturationResult;

  beforeAll(async () => {
    out = join(runs.folder(), 'out');
    result = await runWatched(runs, ['saturate', '--model', 'none', '--p99-bound-us', '50', '--ops', '200', '--from', '25000000', '--max', '400000000', '--json', '--out', out]);
    doc = parseResults(result.stdout);
    sat = doc.saturation?.[0] as SaturationResult;
  });

  it('exits 0, prints exactly the document it wrote, and nothing on stderr', () => {
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(doc).toEqual(readResults(out));
    expect(doc.status).toBe('ok');
    expect(doc.saturation).toHaveLength(1);
  });

  it('finds the modeled knee within 5%, from a passing rate below it and a failing one above', () => {
    expect(Number.isFinite(knee)).toBe(true);
    expect(sat).toMatchObject({ model: 'none', metric: 'modeled', p99BoundUs: 50, op: 'unmap', stop: 'converged', boundPerSec: 400e6, capPerSec: 1e9, capped: false });
    expect(sat.ratePerSec).not.toBeNull();
    const rate = sat.ratePerSec as number;
    expect(rate).toBeLessThanOrEqual(knee);
    expect(rate).toBeGreaterThanOrEqual(0.95 * knee);
    expect(sat.failedAtPerSec as number).toBeGreaterThan(knee);
    expect(((sat.failedAtPerSec as number) - rate) / (sat.failedAtPerSec as number)).toBeLessThanOrEqual(0.05);
    // What bounds it: the one thread (vCPU 0) running its maps and unmaps back to back, saturated
    // at the failing step; every step names its busiest resource.
    expect(sat.boundBy).toMatchObject({ resource: 'vm0.vcpu0', kind: 'vcpu' });
    expect(sat.boundBy?.utilization).toBeGreaterThan(0.95);
    for (const r of doc.runs) expect(r.modeledBound?.kind, String(r.workload.rate)).toBe('vcpu');
  });

  it('records every step as a run with its rate, its load and the arrivals it made', () => {
    expect(doc.runs).toHaveLength(sat.steps);
    const rates = doc.runs.map((r) => r.point?.['workload.rate']);
    // The ramp doubles from --from until a rate fails, then bisects.
    expect(rates.slice(0, 4)).toEqual([25e6, 50e6, 100e6, 200e6]);
    for (const run of doc.runs as RunResult[]) {
      const rate = run.point?.['workload.rate'] as number;
      expect(run.model).toBe('none');
      expect(run.workload.rate).toBe(rate);
      expect(run.ops.find((o) => o.op === 'unmap')?.count).toBe(200);
      expect(run.load).toMatchObject({ requestedPerSec: rate, arrivals: 'constant', completed: 200 });
      const modeled = run.load?.achievedPerSec.modeled as number;
      // Below the capacity it keeps up; above it, it completes at the capacity.
      expect(modeled).toBeLessThanOrEqual(Math.max(rate, capacity) * 1.01);
      expect(modeled).toBeGreaterThanOrEqual(Math.min(rate, capacity) * 0.99);
      expect(run.load?.achievedPerSec.measured).toBeGreaterThan(0);
      // Passing (p99 is no issue here) exactly at the rates up to the one found.
      expect(modeled >= 0.95 * rate).toBe(rate <= (sat.ratePerSec as number));
    }
    expect(rates).toContain(sat.ratePerSec);
    expect(rates).toContain(sat.failedAtPerSec);
  });

  it('ran every step on one process tree, and left no process behind', async () => {
    const pids = new Set(doc.runs.flatMap((r) => r.processes.map((p) => p.pid)));
    expect(pids.size).toBe(5);
    // Five role processes; beside them only the host floor's short-lived pair (floor-main.js),
    // measured before the roles start, which the process watcher may or may not catch.
    expect(result.spawned.filter((p) => roleOf(p.cmdline) !== undefined)).toHaveLength(5);
    expect(result.spawned.filter((p) => roleOf(p.cmdline) === undefined).every((p) => p.cmdline.includes('floor-main.js'))).toBe(true);
    expect(await waitForNoProcesses(result.marker, 5000)).toEqual([]);
    expect(entries(result.tmp).filter((e) => e.startsWith('vmmsim-'))).toEqual([]);
  });
});

describe('vmmsim saturate with progress', () => {
  it('prints one line per step on stderr, then the table of models; passing at --max raises it, passing at --cap says it stopped there', async () => {
    const out = join(runs.folder(), 'out');
    const r = await runWatched(runs, ['saturate', '--model', 'none', '--p99-bound-us', '50', '--ops', '100', '--from', '1000000', '--max', '1000000', '--cap', '2000000', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r.stderr)).toEqual([
      expect.stringMatching(new RegExp(`^vmmsim: saturate none: 1000000/s -> achieved \\d+/s, p99 ${P99} us: ok; passed at the upper bound: raised to 2000000/s$`)),
      expect.stringMatching(new RegExp(`^vmmsim: saturate none: 2000000/s -> achieved \\d+/s, p99 ${P99} us: ok$`)),
    ]);
    const table = lines(r.stdout);
    const row = table.find((l) => l.startsWith('none '));
    expect(row).toBeDefined();
    // Passing at the cap ends the search there, and the terminal says so with the cap's value.
    expect(row?.split(/\s+/).slice(0, 7)).toEqual(['none', 'unmap', '2000000', expect.stringMatching(/^(>=|<)\d+$/), '-', '2', 'max']);
    expect(table).toContain('not saturated:');
    expect(table).toContain('  none: stopped at the cap of 2000000/s (--cap): it passed there, so it saturates above the cap; the search did not find where');
    expect(r.stdout).toContain(`results: ${join(out, 'results.json')}`);
    expect(readResults(out).saturation).toEqual([
      { model: 'none', ratePerSec: 2e6, metric: 'modeled', p99BoundUs: 50, op: 'unmap', failedAtPerSec: null, steps: 2, stop: 'max', boundPerSec: 2e6, capPerSec: 2e6, capped: true },
    ]);
  });
});

describe('vmmsim saturate refuses what it cannot search, before starting anything', () => {
  const cases: { what: string; args: string[]; code: string; mentions: string[] }[] = [
    { what: 'no p99 bound', args: ['saturate', '--model', 'none'], code: 'E_USAGE', mentions: ['--p99-bound-us is required'] },
    { what: 'a bound that is not a number', args: ['saturate', '--p99-bound-us', 'fast'], code: 'E_USAGE', mentions: ['--p99-bound-us', '"fast"'] },
    { what: 'an unknown clock', args: ['saturate', '--p99-bound-us', '5', '--metric', 'wall'], code: 'E_USAGE', mentions: ['--metric', 'modeled or measured'] },
    { what: 'max above cap', args: ['saturate', '--p99-bound-us', '5', '--max', '100', '--cap', '10'], code: 'E_USAGE', mentions: ['--max (100)', '--cap (10)'] },
    { what: 'from above max', args: ['saturate', '--p99-bound-us', '5', '--from', '100', '--max', '10'], code: 'E_USAGE', mentions: ['--from (100)', '--max (10)'] },
    { what: 'a rate of its own', args: ['saturate', '--p99-bound-us', '5', '--set', 'workload.rate=5'], code: 'E_USAGE', mentions: ['workload.rate', '--from and --max'] },
    { what: 'a closed-loop workload', args: ['saturate', '--p99-bound-us', '5', '--set', 'workload.kind=sva-unmap-storm'], code: 'E_NOT_SUPPORTED', mentions: ['needs a workload that runs open loop (dma-map-benchmark, packet-stream, block); workload.kind is sva-unmap-storm'] },
    { what: 'an operation no open-loop workload has', args: ['saturate', '--p99-bound-us', '5', '--op', 'flush'], code: 'E_USAGE', mentions: ['--op', 'map, unmap'] },
  ];
  for (const c of cases) {
    it(`refuses ${c.what} with exit 2`, async () => {
      const r = await runWatched(runs, c.args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain(`vmmsim: ${c.code}: `);
      for (const m of c.mentions) expect(r.stderr).toContain(m);
      expect(r.spawned).toEqual([]);
    });
  }

  it('prints its help', async () => {
    const r = await runWatched(runs, ['help', 'saturate']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('usage: vmmsim saturate');
    expect(r.stdout).toContain('--p99-bound-us');
  });
});
