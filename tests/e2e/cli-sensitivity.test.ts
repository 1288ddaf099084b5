/**
 * `vmmsim sensitivity` and `vmmsim compare --sensitivity` end to end, through real processes:
 * nested-smmuv3 against nested-smmuv3-vcmdq and virtio-iommu against vhost-iommu each get a verdict
 * (and, when fragile, the steps it depends on) in the table, results.json and the report; two runs
 * with the same seed give the same sensitivity section; the report's tornado charts, opened in
 * headless Chromium, hold results.json's numbers; bad options are refused before anything starts.
 * No process is left behind.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { SensitivitySection } from '../../services/controller/sensitivity.js';
import { loadProfile } from '../../services/cost/profile.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { mismatches } from '../helpers/report-check.js';
import { Runs, entries, lines, readResults, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

const CHROMIUM = '/usr/bin/chromium';
const MODELS = 'nested-smmuv3,nested-smmuv3-vcmdq,virtio-iommu,vhost-iommu';
const ARGS = ['sensitivity', '--models', MODELS, '--ops', '30', '--samples', '60', '--seed', '7'];
const PAIRS = [['nested-smmuv3', 'nested-smmuv3-vcmdq'], ['virtio-iommu', 'vhost-iommu']] as const;

function checkSection(s: SensitivitySection | undefined): SensitivitySection {
  expect(s).toBeDefined();
  const sec = s as SensitivitySection;
  expect(sec).toMatchObject({ method: 'latin-hypercube', distribution: 'uniform', samples: 60, seed: 7, profile: 'arm64-kunpeng920', robustShare: 0.95 });
  // Four designs: six pairs, each with map and unmap.
  expect(sec.comparisons).toHaveLength(12);
  for (const [a, b] of PAIRS) {
    for (const metric of ['map', 'unmap']) {
      const c = sec.comparisons.find((x) => x.a === a && x.b === b && x.metric === metric);
      expect(c, `${b} / ${a} ${metric}`).toBeDefined();
      if (!c) continue;
      expect(['robust', 'depends']).toContain(c.verdict);
      expect(c.p5).toBeLessThanOrEqual(c.p50);
      expect(c.p50).toBeLessThanOrEqual(c.p95);
      if (c.verdict === 'depends') expect(c.dependsOn.length).toBeGreaterThan(0);
      else expect(c.dependsOn).toEqual([]);
      expect(c.holds >= 0.95).toBe(c.verdict === 'robust');
    }
  }
  // VCMDQ takes the unmap's invalidation off the trap path: the tornado names the steps that move it.
  const vcmdq = sec.comparisons.find((x) => x.b === 'nested-smmuv3-vcmdq' && x.a === 'nested-smmuv3' && x.metric === 'unmap');
  expect(vcmdq?.base).toBeLessThan(1);
  expect(vcmdq?.tornado.length).toBeGreaterThan(2);
  // A step whose range is a point never moves a ratio, so is never named.
  const points = new Set(sec.steps.filter((t) => t.lo === t.hi).map((t) => t.step));
  for (const c of sec.comparisons) for (const st of [...c.dependsOn, ...c.tornado.map((t) => t.step)]) expect(points.has(st), st).toBe(false);
  // Strict, closed loop, one thread: re-pricing is exact.
  expect(sec.designs.every((d) => d.exact)).toBe(true);
  return sec;
}

describe('vmmsim sensitivity', () => {
  it('prints verdicts and the steps they depend on, the same for the same seed, and a report whose tornados hold results.json\'s numbers', async () => {
    const d1 = join(runs.folder(), 'one');
    const d2 = join(runs.folder(), 'two');
    const json = await runWatched(runs, [...ARGS, '--json', '--out', d1]);
    expect(json.code, json.stderr).toBe(0);
    const doc1 = JSON.parse(json.stdout) as { sensitivity?: SensitivitySection; runs: unknown[] };
    const s1 = checkSection(doc1.sensitivity);
    expect(doc1.runs).toHaveLength(4);

    const text = await runWatched(runs, [...ARGS, '--out', d2]);
    expect(text.code, text.stderr).toBe(0);
    // Same scenario, same seed: the same section, to the byte.
    const s2 = (readResults(d2) as { sensitivity?: SensitivitySection }).sensitivity;
    expect(JSON.stringify(s2)).toBe(JSON.stringify(s1));
    expect(JSON.stringify(readResults(d1).sensitivity)).toBe(JSON.stringify(s1));

    const out = lines(text.stdout);
    const at = out.indexOf('sensitivity:');
    expect(at).toBeGreaterThan(0);
    expect(out[at + 1]).toMatch(/^b \/ a\s+metric\s+base\s+p5\s+p50\s+p95\s+holds\s+verdict$/);
    for (const [a, b] of PAIRS) {
      for (const metric of ['map', 'unmap']) {
        const c = s1.comparisons.find((x) => x.a === a && x.b === b && x.metric === metric);
        const verdict = c?.verdict === 'robust' ? 'robust' : `depends on ${c?.dependsOn.join(', ')}`;
        expect(out.some((l) => new RegExp(`^${b} / ${a}\\s+${metric}\\s.*\\s${Math.round((c?.holds ?? NaN) * 100)}%\\s+${verdict}$`).test(l)), `${b} / ${a} ${metric}`).toBe(true);
      }
    }
    expect(out).toContain(`report: ${join(d2, 'report.html')}`);
    expect(await waitForNoProcesses(text.marker)).toEqual([]);
    expect(await waitForNoProcesses(json.marker)).toEqual([]);

    if (!existsSync(CHROMIUM)) {
      process.stderr.write(`cli-sensitivity: report check skipped: ${CHROMIUM} is missing\n`);
      return;
    }
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(pathToFileURL(join(d2, 'report.html')).href, { waitUntil: 'load' });
      expect(errors).toEqual([]);
      // A tornado per comparison, each drawn with a size, each verdict listed.
      const charts = await page.$$eval('svg[data-chart="tornado"]', (els) => els.map((e) => ({ a: e.getAttribute('data-a'), b: e.getAttribute('data-b'), metric: e.getAttribute('data-metric'), w: e.getBoundingClientRect().width, h: e.getBoundingClientRect().height })));
      expect(charts.map((c) => `${c.b} / ${c.a} ${c.metric}`)).toEqual(s1.comparisons.map((c) => `${c.b} / ${c.a} ${c.metric}`));
      for (const c of charts) {
        expect(c.w).toBeGreaterThan(100);
        expect(c.h).toBeGreaterThan(50);
      }
      const verdicts = await page.$$eval('#section-sensitivity li[data-verdict]', (els) => els.map((e) => e.getAttribute('data-verdict')));
      expect(verdicts).toEqual(s1.comparisons.map((c) => c.verdict));
      // Every tornado bar end and base line holds results.json's value at its pointer.
      const data = await page.$$eval('svg[data-chart="tornado"] [data-pointer]', (els) => els.map((e) => ({ pointer: e.getAttribute('data-pointer') ?? '', value: e.getAttribute('data-value') ?? '', where: e.getAttribute('data-end') ?? '' })));
      expect(data.length).toBe(s1.comparisons.reduce((n, c) => n + 1 + 2 * c.tornado.length, 0));
      expect(mismatches(readResults(d2), data)).toEqual([]);
      // Bars from the base line: a bar's end further from it is the step moving the ratio further.
      const first = s1.comparisons.findIndex((c) => c.tornado.length > 0);
      const marks = await page.$$eval(`svg[data-chart="tornado"][data-comparison="${first}"] rect.mark`, (els) => els.map((e) => ({ step: e.getAttribute('data-step'), width: Number(e.getAttribute('width')) })));
      const widest = (step: string): number => Math.max(...marks.filter((m) => m.step === step).map((m) => m.width));
      const bars = s1.comparisons[first]?.tornado ?? [];
      for (let i = 1; i < bars.length; i++) expect(widest(bars[i]?.step as string)).toBeLessThanOrEqual(widest(bars[i - 1]?.step as string) * 2 + 0.5);
    } finally {
      await browser.close();
    }
  }, 300_000);

  it('compare --sensitivity prints a verdict per pair under its table', async () => {
    const dir = join(runs.folder(), 'cmp');
    const r = await runWatched(runs, ['compare', '--models', 'virtio-iommu,vhost-iommu', '--ops', '20', '--sensitivity', '--out', dir]);
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout);
    const at = out.findIndex((l) => l.startsWith('sensitivity (ratio second / first'));
    expect(at).toBeGreaterThan(0);
    expect(out[at + 1]).toMatch(/^vhost-iommu \/ virtio-iommu: map \d+\.\d+x \[\d+\.\d+x-\d+\.\d+x\] (robust|depends on [a-z_.]+(, [a-z_.]+)*) .*; unmap \d+\.\d+x \[.*\] (robust|depends on [a-z_.]+(, [a-z_.]+)*) /);
    const doc = readResults(dir) as { sensitivity?: SensitivitySection };
    expect(doc.sensitivity?.samples).toBe(200);
    expect(doc.sensitivity?.comparisons.map((c) => `${c.b} / ${c.a} ${c.metric}`)).toEqual(['vhost-iommu / virtio-iommu map', 'vhost-iommu / virtio-iommu unmap']);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  }, 120_000);

  it('samples measured-host: each step it measured across its samples\' p5-p95, the others across the base profile\'s ranges', async () => {
    const dir = join(runs.folder(), 'measured-host');
    const r = await runWatched(runs, ['sensitivity', '--profile', 'measured-host', '--models', 'virtio-iommu,vhost-iommu', '--ops', '20', '--samples', '20', '--out', dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('vmmsim: measuring what this host can measure about itself');
    const doc = readResults(dir) as { sensitivity?: SensitivitySection };
    expect(doc.sensitivity).toMatchObject({ samples: 20, profile: 'measured-host' });
    // The profile it wrote beside results.json is the one sampled, step by step.
    const measured = loadProfile(join(dir, 'measured-host.yaml'));
    const base = loadProfile('arm64-kunpeng920');
    const steps = doc.sensitivity?.steps ?? [];
    expect(steps.length).toBeGreaterThan(0);
    for (const s of steps) expect([s.step, s.ns, s.lo, s.hi]).toEqual([s.step, measured.steps[s.step]?.ns, ...(measured.steps[s.step]?.range ?? [])]);
    // ioctl.syscall is measured here, its range not the base profile's; an SMMU step keeps its base range.
    expect(measured.steps['ioctl.syscall']?.rangeReason).toBe('the 5th to 95th percentile of the samples on this host');
    expect(measured.steps['smmu.walk_access']?.range).toEqual(base.steps['smmu.walk_access']?.range);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  }, 120_000);

  it('refuses bad options before any process starts', async () => {
    const cwd = runs.folder();
    const cases: [string[], string, RegExp][] = [
      [['sensitivity', '--models', 'nested-smmuv3', '--ops', '5'], 'E_SENSITIVITY', /--models names 1 \(nested-smmuv3\); give at least two/],
      [['sensitivity', '--samples', '5'], 'E_SENSITIVITY', /--samples must be an integer from 10 to 100000, got "5"/],
      [['sensitivity', '--samples', 'many'], 'E_SENSITIVITY', /--samples must be an integer/],
      [['sensitivity', '--distribution', 'normal'], 'E_SENSITIVITY', /--distribution must be uniform or triangular, got "normal"/],
      [['sensitivity', '--model', 'none'], 'E_USAGE', /--model is for `vmmsim run`/],
      [['run', '--sensitivity'], 'E_USAGE', /--sensitivity compares architectures/],
      [['compare', '--models', 'none', '--sensitivity'], 'E_SENSITIVITY', /--sensitivity compares architectures: --models names 1/],
    ];
    for (const [args, code, message] of cases) {
      const r = await runWatched(runs, args, { cwd });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(new RegExp(`^vmmsim: ${code}: `));
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.spawned, args.join(' ')).toEqual([]);
    }
    expect(entries(cwd)).toEqual([]);
    const help = await runWatched(runs, ['sensitivity', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: vmmsim sensitivity \[scenario.yaml\] --models a,b,\.\.\. \[options\]/);
    for (const o of ['--models', '--samples', '--distribution', '--seed', '--json', '--out', '--profile']) expect(help.stdout).toContain(`  ${o} `);
  }, 120_000);
});
