/**
 * `vmmsim report` through the built CLI: it writes report.html beside results.json (or at --html)
 * and prints its path; bad input (a missing, unreadable or foreign file, a folder as --html, wrong
 * arguments) exits 2 with one line naming the file and the fix, no stack trace, no process started.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { waitForNoProcesses } from '../helpers/processes.js';
import { dataInHtml, mismatches } from '../helpers/report-check.js';
import { fixtureDoc, fixtureRun, mapUnmap } from '../helpers/results-fixture.js';
import { Runs, STACK_LINE, lines, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

const doc = fixtureDoc([
  fixtureRun({ model: 'none', ops: mapUnmap(10, {}, 0.001) }),
  fixtureRun({ model: 'nested-smmuv3', ops: mapUnmap(10, { exit: 1, user: 1, ioctl: 1, hw: 1 }), hops: [{ from: 'guest-0', to: 'kvm', p50Us: 300 }] }),
]);

function resultsIn(dir: string, text = JSON.stringify(doc, null, 2)): string {
  const path = join(dir, 'results.json');
  writeFileSync(path, text);
  return path;
}

describe('vmmsim report', () => {
  it('writes report.html beside results.json, prints its path, and the page holds the document\'s numbers', async () => {
    const dir = runs.folder();
    const r = await runWatched(runs, ['report', resultsIn(dir)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const out = join(dir, 'report.html');
    expect(lines(r.stdout)).toEqual([`report: ${out}`]);
    const html = readFileSync(out, 'utf8');
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    const data = dataInHtml(html);
    expect(data.length).toBeGreaterThan(100);
    expect(mismatches(doc, data)).toEqual([]);
    expect(r.spawned).toEqual([]);
  });

  it('writes to --html, creating its folder, and gives the same page as beside results.json', async () => {
    const dir = runs.folder();
    const results = resultsIn(dir);
    const html = join(dir, 'deeper', 'page.html');
    const r = await runWatched(runs, ['report', results, '--html', html]);
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r.stdout)).toEqual([`report: ${html}`]);
    const beside = await runWatched(runs, ['report', results]);
    expect(beside.code, beside.stderr).toBe(0);
    expect(readFileSync(html, 'utf8')).toBe(readFileSync(join(dir, 'report.html'), 'utf8'));
  });

  it('prints its help', async () => {
    const r = await runWatched(runs, ['report', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('usage: vmmsim report results.json [--html FILE]');
    const h = await runWatched(runs, ['help', 'report']);
    expect(h.stdout).toBe(r.stdout);
    const usage = await runWatched(runs, ['--help']);
    expect(usage.stdout).toContain('report results.json');
  });

  const bad: { what: string; args: (dir: string) => string[]; code: string; mentions: (args: string[]) => string[] }[] = [
    { what: 'a missing file', args: (d) => ['report', join(d, 'nope.json')], code: 'E_RESULTS_FILE', mentions: (a) => [a[1] as string, 'no such file', 'fix: give the path of a results.json'] },
    { what: 'a folder', args: (d) => ['report', d], code: 'E_RESULTS_FILE', mentions: (a) => [a[1] as string, 'it is a folder'] },
    { what: 'a file that is not JSON', args: (d) => ['report', resultsIn(d, '{"schema": "vmmsim/results/v1", ')], code: 'E_RESULTS_FILE', mentions: (a) => [a[1] as string, 'is not JSON'] },
    { what: 'JSON that is not a results document', args: (d) => ['report', resultsIn(d, '{"name": "vmmsim"}')], code: 'E_RESULTS_FILE', mentions: (a) => [a[1] as string, 'not a vmmsim results document'] },
    {
      what: 'a folder as --html',
      args: (d) => {
        mkdirSync(join(d, 'out.html'));
        return ['report', resultsIn(d), '--html', join(d, 'out.html')];
      },
      code: 'E_OUTPUT_PATH',
      mentions: (a) => [a[3] as string, 'it is a folder', 'fix: give --html a file path'],
    },
    { what: 'no file', args: () => ['report'], code: 'E_USAGE', mentions: () => ['report takes one results file', 'got 0'] },
    { what: 'two files', args: (d) => ['report', join(d, 'a.json'), join(d, 'b.json')], code: 'E_USAGE', mentions: () => ['got 2'] },
    { what: 'an unknown option', args: (d) => ['report', resultsIn(d), '--pdf'], code: 'E_USAGE', mentions: () => ['--pdf'] },
  ];

  for (const c of bad) {
    it(`exits 2 with one line and no stack trace for ${c.what}`, async () => {
      const dir = runs.folder();
      const args = c.args(dir);
      const r = await runWatched(runs, args);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`^vmmsim: ${c.code}: `));
      expect(r.stderr).not.toMatch(STACK_LINE);
      for (const m of c.mentions(args)) expect(r.stderr).toContain(m);
      if (c.code !== 'E_OUTPUT_PATH') expect(existsSync(join(dir, 'report.html'))).toBe(false);
      expect(await waitForNoProcesses(r.marker)).toEqual([]);
    });
  }
});
