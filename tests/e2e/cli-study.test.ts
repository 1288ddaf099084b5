/**
 * `vmmsim study` end to end: the shipped studies list and plan; `study spapr-tce --quick` runs its
 * ten runs through real processes and writes results.json, report.html and answer.txt, whose lines
 * fit 72 columns and whose every figure (each table cell and each robustness ratio) is the one in
 * results.json; bad names are refused before anything starts. No process is left behind.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ResultsDoc, RunResult } from '../../services/controller/results.js';
import { ANSWER_COLUMNS, fmtCount, fmtRate, fmtRatio, fmtUs, pointLabel, type StudyRecord } from '../../services/controller/study.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { Runs, entries, readResults, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

const SHIPPED = ['dynamic-mappings', 'multi-vsmmu', 'paravirt', 'spapr-tce', 'vcmdq'];

type StudyDoc = ResultsDoc & { study: StudyRecord };

/** The answer's tables: per block label, the cells of each design's row. */
function answerTables(answer: string): Map<string, string[][]> {
  const out = new Map<string, string[][]>();
  let label: string | undefined;
  for (const line of answer.split('\n')) {
    const head = /^ {2}\[([^\]]+)\]/.exec(line);
    if (head) {
      label = head[1];
      out.set(label as string, []);
      continue;
    }
    if (line.trim() === '' || line.startsWith('Robustness')) label = undefined;
    if (!label || !line.startsWith('  ') || line.startsWith('  design') || line.startsWith('  bound by') || line.startsWith('    ')) continue;
    out.get(label)?.push(line.trim().split(/\s+/));
  }
  return out;
}

function opMean(run: RunResult, op: string): number {
  const o = run.ops.find((x) => x.op === op && x.count > 0);
  if (!o) throw new Error(`${run.model} ran no ${op}`);
  return o.modeledNs.mean;
}

/** An operation's own path: its breakdown's cost steps, without what it waited for. */
function opPath(run: RunResult, op: string): number {
  const o = run.ops.find((x) => x.op === op && x.count > 0);
  if (!o) throw new Error(`${run.model} ran no ${op}`);
  return Math.round(o.breakdown.filter((e) => !e.step.startsWith('wait:')).reduce((s, e) => s + e.ns, 0) * 1000) / 1000;
}

describe('vmmsim study', () => {
  it('lists the five studies and plans each (quick) without starting a process', async () => {
    const list = await runWatched(runs, ['study', 'list']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split('\n').filter(Boolean).map((l) => l.split(/\s+/)[0])).toEqual(SHIPPED);
    for (const name of SHIPPED) {
      const plan = await runWatched(runs, ['study', name, '--quick', '--plan']);
      expect(plan.code, `${name}: ${plan.stderr}`).toBe(0);
      expect(plan.stdout).toMatch(new RegExp(`^study ${name} \\(quick\\): \\d+ runs in \\d+ process trees?, profile `));
      expect(plan.spawned).toEqual([]);
    }
  }, 60_000);

  it('refuses an unknown study with E_STUDY and starts nothing', async () => {
    const r = await runWatched(runs, ['study', 'nope']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/E_STUDY: no study named "nope"; studies: dynamic-mappings, multi-vsmmu, paravirt, spapr-tce, vcmdq/);
    expect(r.spawned).toEqual([]);
    expect(entries(r.tmp)).toEqual([]);
  });

  it('spapr-tce --quick: three files, lines of at most 72 columns, and every figure from results.json', async () => {
    const out = runs.folder();
    const r = await runWatched(runs, ['study', 'spapr-tce', '--quick', '--samples', '20', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
    expect(entries(out).sort()).toEqual(['answer.txt', 'report.html', 'results.json']);
    const answer = readFileSync(join(out, 'answer.txt'), 'utf8');
    // stdout is answer.txt, then where the files went.
    expect(r.stdout.startsWith(answer)).toBe(true);
    for (const line of answer.split('\n')) expect(line.length, line).toBeLessThanOrEqual(ANSWER_COLUMNS);
    const doc = readResults(out) as StudyDoc;
    expect(doc.study).toMatchObject({ name: 'spapr-tce', quick: true, command: 'vmmsim study spapr-tce --quick --samples 20', answer });
    expect(doc.runs).toHaveLength(10);
    expect(answer).toMatch(/^Setup: profile power9 \(ppc64\); paths follow Linux v6\.18 and QEMU v10\.2;/m);
    expect(answer).toMatch(/^ {2}vmmsim study spapr-tce --quick --samples 20$/m);

    // Every row of every table is its run's figures.
    const tables = answerTables(answer);
    expect([...tables.keys()]).toEqual(['per-tce granulePages=1', 'per-tce granulePages=16', 'multi-tce granulePages=1', 'multi-tce granulePages=16', 'ddw']);
    for (const [label, rows] of tables) {
      const at = doc.runs.filter((x) => pointLabel(String(x.point?.['part']), x.point ?? {}) === label);
      expect(rows.map((row) => row[0]), label).toEqual(at.map((x) => x.model));
      const base = at.find((x) => x.model === 'spapr-tce') as RunResult;
      for (const run of at) {
        const t = run.ops.find((o) => o.op === 'unmap')?.transitions;
        const ratio = opPath(run, 'unmap') / opPath(base, 'unmap');
        // One vCPU: nothing waits, so each operation's path is its modeled mean.
        expect(opPath(run, 'unmap')).toBeCloseTo(opMean(run, 'unmap'), 2);
        expect(rows.find((row) => row[0] === run.model), `${label} ${run.model}`).toEqual([
          run.model,
          fmtUs(opPath(run, 'map')),
          fmtUs(opPath(run, 'unmap')),
          t ? [t.exit, t.user, t.ioctl, t.hw, t.direct].map(fmtCount).join('/') : '-',
          fmtRate(run.throughput.opsPerSecModeled),
          fmtRatio(ratio),
        ]);
      }
    }
    // The in-kernel path pays no user exit and no ioctl; the multi-TCE hypercall one exit for 16 TCEs.
    expect(tables.get('per-tce granulePages=16')?.find((row) => row[0] === 'spapr-tce-kvm')?.[3]).toBe('16/0/0/16/0');
    expect(tables.get('multi-tce granulePages=16')?.find((row) => row[0] === 'spapr-tce-kvm')?.[3]).toBe('1/0/0/16/0');

    // Every robustness line is a verdict of results.json, with its ratios as recorded there.
    const flat = answer.replace(/\s+/g, ' ');
    expect(doc.study.verdicts.length).toBeGreaterThan(0);
    for (const v of doc.study.verdicts) {
      expect(v).toMatchObject({ a: 'spapr-tce', b: 'spapr-tce-kvm' });
      expect(v.p5).toBeLessThanOrEqual(v.p95);
      const line = `${v.b} / ${v.a} [${v.part}] ${v.figure}: ${fmtRatio(v.base)} (${fmtRatio(v.p5)}-${fmtRatio(v.p95)}) ${v.verdict}`;
      expect(flat).toContain(line);
      // The ratio at the profile's costs is the tables' ratio.
      const at = doc.runs.filter((x) => pointLabel(String(x.point?.['part']), x.point ?? {}) === v.part);
      const [a, b] = [v.a, v.b].map((m) => at.find((x) => x.model === m) as RunResult);
      expect(v.base).toBeCloseTo(opMean(b as RunResult, v.figure) / opMean(a as RunResult, v.figure), 3);
    }

    // The report answers first: the question, its figure and answer.txt.
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).toContain('<title>vmmsim study spapr-tce');
    const first = html.indexOf('id="section-answer"');
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(html.indexOf('id="section-transitions"'));
    expect(html).toContain('data-chart="study"');
  }, 240_000);
});
