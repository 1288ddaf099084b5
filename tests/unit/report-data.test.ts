/**
 * Reading results documents for the report: every kind the CLI writes (run, compare, sweep,
 * saturate, sweep --saturate, failed or interrupted with few or no runs), what is missing said in
 * notes, every value kept with the JSON Pointer it came from, and no document, however broken,
 * making it throw. Reading a file: exit-2 errors that name the file.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { reportData, shortKeys } from '../../services/controller/report/data.js';
import { reportHtml } from '../../services/controller/report/page.js';
import { readResultsFile } from '../../services/controller/report/read.js';
import { RESULTS_SCHEMA } from '../../services/controller/results.js';
import { fixtureDoc, fixtureRun, mapUnmap, saturation } from '../helpers/results-fixture.js';
import { resolvePointer } from '../helpers/report-check.js';
import { thrown } from '../helpers/thrown.js';

const compare = fixtureDoc([
  fixtureRun({ model: 'none', ops: mapUnmap(50, {}, 0.001) }),
  fixtureRun({ model: 'nested-smmuv3', ops: mapUnmap(50, { exit: 1, user: 1, ioctl: 1, hw: 1 }), hops: [{ from: 'guest-0', to: 'kvm', p50Us: 300 }] }),
  fixtureRun({ model: 'nested-smmuv3-vcmdq', ops: mapUnmap(50, { direct: 1 }, 0.3) }),
]);

const sweepPoints = [1, 2].flatMap((psmmus) => ['single', 'per-psmmu'].map((vsmmu) => ({ 'topology.psmmus': psmmus, 'topology.vsmmu': vsmmu })));

describe('reportData', () => {
  it('reads a comparison: one run per model, its main operation, and pointers to every figure', () => {
    const d = reportData(compare);
    expect(d.kind).toBe('compare');
    expect(d.status).toBe('ok');
    expect(d.notes).toEqual([]);
    expect(d.runs.map((r) => r.label)).toEqual(['none', 'nested-smmuv3', 'nested-smmuv3-vcmdq']);
    for (const r of d.runs) {
      expect(r.mainOp?.op).toBe('unmap');
      for (const f of [...r.figures, r.throughputMeasured, r.throughputModeled, ...r.delivered, ...r.workloadCounters]) {
        expect(resolvePointer(compare, f.pointer), `${r.label} ${f.name}`).toBe(f.value);
      }
      for (const o of r.ops) {
        expect(resolvePointer(compare, o.pointer)).toMatchObject({ op: o.op, count: o.count });
        expect(resolvePointer(compare, `${o.pointer}/modeledNs/p999`)).toBe(o.modeledNs.p999);
      }
    }
    expect(d.runs[1]?.hops.map((h) => `${h.from}->${h.to}`)).toEqual(['guest-0->kvm']);
    expect(d.scenario).toContainEqual(['workload.kind', 'dma-map-benchmark']);
  });

  it('reads one run as a run', () => {
    expect(reportData(fixtureDoc([fixtureRun({ model: 'none', ops: mapUnmap(5, {}) })])).kind).toBe('run');
  });

  it('reads a sweep: swept keys, points named by short keys, and says which points an interrupted sweep never reached', () => {
    const runs = sweepPoints.slice(0, 3).map((point) => fixtureRun({ model: 'nested-smmuv3', point, ops: mapUnmap(30, { exit: 1 }) }));
    const doc = fixtureDoc(runs, { status: 'interrupted', error: { code: 'E_INTERRUPTED', message: 'interrupted by SIGINT' }, sweep: { keys: ['topology.psmmus', 'topology.vsmmu'], points: 4 } });
    const d = reportData(doc);
    expect(d.kind).toBe('sweep');
    expect(d.sweepKeys).toEqual(['topology.psmmus', 'topology.vsmmu']);
    expect(d.pointKeys).toEqual(['topology.psmmus', 'topology.vsmmu']);
    expect(d.runs.map((r) => r.label)).toEqual(['psmmus=1 vsmmu=single nested-smmuv3', 'psmmus=1 vsmmu=per-psmmu nested-smmuv3', 'psmmus=2 vsmmu=single nested-smmuv3']);
    expect(d.error).toEqual({ code: 'E_INTERRUPTED', message: 'interrupted by SIGINT' });
    expect(d.notes[0]).toMatch(/interrupted.*partial results \(3 runs\)/);
    expect(d.notes).toContain('The sweep has 4 points; runs reached 3 of them.');
  });

  it('reads a saturation search: steps placed by rate, and a search where no rate passed', () => {
    const runs = [1000, 2000].map((rate) => fixtureRun({ model: 'nested-smmuv3', point: { 'workload.rate': rate }, rate, ops: mapUnmap(20, { exit: 1 }) }));
    const doc = fixtureDoc(runs, { saturation: [saturation('nested-smmuv3', 2000), saturation('none', null)] });
    const d = reportData(doc);
    expect(d.kind).toBe('saturate');
    expect(d.pointKeys).toEqual(['workload.rate']);
    expect(d.runs[0]?.achievedModeled?.value).toBe(runs[0]?.load?.achievedPerSec.modeled);
    expect(d.saturation.map((s) => s.ratePerSec.value)).toEqual([2000, Number.NaN]);
    expect(d.notes.some((n) => n.includes('none') && n.includes('no rate tried passed'))).toBe(true);
  });

  it('reads a sweep of saturation searches', () => {
    const doc = fixtureDoc([fixtureRun({ model: 'nested-smmuv3', point: { 'topology.psmmus': 1, 'workload.rate': 1000 }, rate: 1000, ops: mapUnmap(20, {}) })], {
      sweep: { keys: ['topology.psmmus'], points: 1 },
      saturation: [{ ...saturation('nested-smmuv3', 1000), point: { 'topology.psmmus': 1 } }],
    });
    const d = reportData(doc);
    expect(d.kind).toBe('sweep-saturate');
    expect(d.pointKeys).toEqual(['topology.psmmus', 'workload.rate']);
    expect(d.saturation[0]?.label).toBe('psmmus=1 nested-smmuv3');
  });

  it('says there is nothing to chart when a command failed before any run finished', () => {
    const d = reportData(fixtureDoc([], { status: 'failed', error: { code: 'E_PROCESS_EXITED', message: 'psmmu-0 exited' } }));
    expect(d.runs).toEqual([]);
    expect(d.notes[0]).toBe('No run finished before the command failed: there is nothing to chart.');
    expect(d.error?.code).toBe('E_PROCESS_EXITED');
  });

  it('reads what a broken document has and notes the rest', () => {
    const broken = fixtureDoc([fixtureRun({ model: 'none', ops: mapUnmap(5, {}) })]) as unknown as Record<string, unknown>;
    const run = (broken['runs'] as Record<string, unknown>[])[0] as Record<string, unknown>;
    const op = (run['ops'] as Record<string, unknown>[])[1] as Record<string, unknown>;
    delete (op['measuredUs'] as Record<string, unknown>)['p999'];
    op['modeledNs'] = 'fast';
    delete run['throughput'];
    delete broken['scenario'];
    const d = reportData(broken);
    expect(d.runs[0]?.ops[1]?.measuredUs.p999).toBeNaN();
    expect(d.runs[0]?.ops[1]?.measuredUs.p50).toBe(((op['measuredUs'] as Record<string, number>)['p50']));
    expect(d.runs[0]?.ops[1]?.modeledNs.p50).toBeNaN();
    expect(d.notes).toEqual(expect.arrayContaining([
      'run 1 (none) unmap measuredUs: no p999',
      'run 1 (none) unmap modeledNs: no summary',
      'run 1 (none): no throughput',
      'The document has no scenario.',
    ]));
    expect(reportData({ schema: RESULTS_SCHEMA, runs: 'none' }).notes).toContain('The document has no runs[].');
  });

  it('never throws, and always gives a page, whatever the document holds', () => {
    const anyJson = fc.jsonValue({ maxDepth: 4 });
    const runLike = fc.record({ model: anyJson, point: anyJson, ops: fc.oneof(anyJson, fc.array(fc.record({ op: anyJson, count: anyJson, transitions: anyJson, measuredUs: anyJson, modeledNs: anyJson }, { requiredKeys: [] }))), hops: anyJson, counters: anyJson }, { requiredKeys: [] });
    fc.assert(
      fc.property(
        fc.record({ status: anyJson, error: anyJson, sweep: anyJson, runs: fc.oneof(anyJson, fc.array(runLike, { maxLength: 3 })), saturation: anyJson, scenario: anyJson, profile: anyJson, tool: anyJson }, { requiredKeys: [] }),
        (doc) => {
          const html = reportHtml(reportData({ schema: RESULTS_SCHEMA, ...doc }));
          expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('names point keys by their last part unless two share it', () => {
    expect([...shortKeys(['topology.psmmus', 'topology.vsmmu']).values()]).toEqual(['psmmus', 'vsmmu']);
    expect([...shortKeys(['a.rate', 'workload.rate', 'seed']).values()]).toEqual(['a.rate', 'workload.rate', 'seed']);
  });
});

describe('readResultsFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmmsim-report-read-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('reads a results document', () => {
    expect(readResultsFile(file('ok.json', JSON.stringify(compare)))['runs']).toHaveLength(3);
  });

  it('refuses, with exit 2 and the file named, a missing file, a folder, non-JSON, and JSON of another kind', () => {
    const cases: [string, RegExp][] = [
      [join(dir, 'missing.json'), /cannot read .*missing\.json: no such file/],
      [dir, /cannot read .*: it is a folder/],
      [file('bad.json', '{"schema": '), /bad\.json is not JSON/],
      [file('array.json', '[]'), /array\.json is not a vmmsim results document \(not a JSON object\)/],
      [file('other.json', '{"name": "vmmsim"}'), /other\.json is not a vmmsim results document \(no schema field/],
      [file('v9.json', '{"schema": "vmmsim/results/v9"}'), /schema "vmmsim\/results\/v9"; this vmmsim reads vmmsim\/results\/v1/],
    ];
    for (const [path, message] of cases) {
      const e = thrown(() => readResultsFile(path));
      expect(e.code, path).toBe('E_RESULTS_FILE');
      expect(e.exitCode).toBe(2);
      expect(e.message).toMatch(message);
      expect(e.line().split('\n')).toHaveLength(1);
    }
  });
});

describe('a saturation search that did not find the rate', () => {
  it('says so at the top of the report: stopped at the cap, with its value, or out of steps with every rate passing', () => {
    const runs = [1000, 2000].map((rate) => fixtureRun({ model: 'none', point: { 'workload.rate': rate }, rate, ops: mapUnmap(20, {}) }));
    const capped = reportData(fixtureDoc(runs, { saturation: [saturation('none', 2000, { stop: 'max', capPerSec: 2000, boundPerSec: 2000, capped: true })] }));
    expect(capped.notes).toContain('Saturation of none: stopped at the cap of 2000/s (--cap): it passed there, so it saturates above the cap; the search did not find where.');
    const outOfSteps = reportData(fixtureDoc(runs, { saturation: [saturation('none', 2000, { stop: 'step-cap', steps: 2 })] }));
    expect(outOfSteps.notes).toContain('Saturation of none: stopped after 2 steps (--steps) with every rate up to 2000/s passing: it saturates above that.');
    const found = reportData(fixtureDoc(runs, { saturation: [saturation('none', 2000, { stop: 'converged', failedAtPerSec: 2100 })] }));
    expect(found.notes.filter((n) => n.startsWith('Saturation'))).toEqual([]);
  });
});
