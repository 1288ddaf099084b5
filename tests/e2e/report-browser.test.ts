/**
 * The HTML reports of a real `vmmsim compare` and a real small `vmmsim sweep`, opened from disk in
 * headless Chromium (Debian's, through playwright-core): each loads with no console error and no
 * request but its own file, and its charts, read from the live page, hold the numbers of the
 * results.json beside it and are drawn where those numbers say.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TRANSITION_KINDS } from '../../services/runtime/topology.js';
import type { ResultsDoc } from '../../services/controller/results.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { mismatches, type Datum } from '../helpers/report-check.js';
import { Runs, lines, readResults, runWatched } from './support.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/**
 * Why the test cannot run, if it cannot. It installs nothing itself: importing a test file must
 * not change the machine (.ci/run installs Debian's chromium when it is missing).
 */
function chromiumMissing(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  return `${CHROMIUM} is missing (.ci/run installs it; by hand: apt-get install -y chromium)`;
}

const missing = chromiumMissing();
if (missing) process.stderr.write(`report-browser: skipped: ${missing}\n`);

const runs = new Runs();
let browser: Browser | undefined;

interface Opened {
  doc: ResultsDoc;
  stdout: string;
  marker: string;
  file: string;
  consoleErrors: string[];
  failedRequests: string[];
  requests: string[];
  page: Page;
}

/** Opens a report from disk, recording what the page logged and requested. */
async function open(b: Browser, file: string): Promise<Pick<Opened, 'page' | 'consoleErrors' | 'failedRequests' | 'requests'>> {
  const page = await b.newPage();
  const consoleErrors: string[] = [];
  const failedRequests: string[] = [];
  const requests: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') consoleErrors.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
  page.on('request', (r) => requests.push(r.url()));
  page.on('requestfailed', (r) => failedRequests.push(`${r.url()}: ${r.failure()?.errorText ?? '?'}`));
  await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
  return { page, consoleErrors, failedRequests, requests };
}

/** Every element's datum, read from the live DOM, with the chart it belongs to. */
function pageData(page: Page): Promise<(Datum & { chart: string })[]> {
  return page.$$eval('[data-pointer]', (els) =>
    els.map((e) => ({
      pointer: e.getAttribute('data-pointer') ?? '',
      value: e.getAttribute('data-value') ?? '',
      where: e.tagName.toLowerCase(),
      chart: e.closest('svg')?.getAttribute('data-chart') ?? 'table',
    })),
  );
}

/** The marks of a chart with their drawn geometry; a curve's points carry the curve's data too. */
function chartMarks(page: Page, chart: string): Promise<Record<string, string>[]> {
  return page.$$eval(
    `svg[data-chart="${chart}"] .mark`,
    (els) =>
      els.map((e) => {
        const out: Record<string, string> = {};
        const curve = e.closest('.curve');
        for (const src of [curve, e]) if (src) for (const n of src.getAttributeNames()) out[n] = src.getAttribute(n) ?? '';
        return out;
      }),
  );
}

type Report = 'compare' | 'sweep' | 'contended';

describe.skipIf(missing !== undefined)(missing ? `HTML reports in Chromium (skipped: ${missing})` : 'HTML reports in Chromium', () => {
  const opened: Record<Report, Opened> = {} as Record<Report, Opened>;

  beforeAll(async () => {
    const commands = {
      compare: ['compare', '--ops', '20'],
      sweep: ['sweep', '--set', 'topology.psmmus=1,2', '--models', 'nested-smmuv3,none', '--ops', '20'],
      // Three vCPUs over two pSMMUs behind one vSMMU: queueing waits, and a design that is not upstream.
      contended: ['compare', '--models', 'intel-cm,vhost-iommu,nested-smmuv3', '--set', 'workload.threads=3', '--set', 'topology.psmmus=2', '--ops', '15'],
    } as const;
    const results: Partial<Record<Report, { dir: string; stdout: string; marker: string; code: number | null; stderr: string }>> = {};
    for (const [name, args] of Object.entries(commands) as [Report, readonly string[]][]) {
      const dir = join(runs.folder(), 'out');
      const r = await runWatched(runs, [...args, '--out', dir]);
      results[name] = { dir, stdout: r.stdout, marker: r.marker, code: r.code, stderr: r.stderr };
    }
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    for (const name of ['compare', 'sweep', 'contended'] as const) {
      const r = results[name];
      if (!r) continue;
      expect(r.code, r.stderr).toBe(0);
      const file = join(r.dir, 'report.html');
      opened[name] = { doc: readResults(r.dir), stdout: r.stdout, marker: r.marker, file, ...(await open(browser, file)) };
    }
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
    runs.cleanup();
    runs.removeFolders();
  });

  describe.each(['compare', 'sweep'] as const)('the report of vmmsim %s', (name) => {
    it('was written beside results.json, and the command printed its path', () => {
      const o = opened[name];
      expect(existsSync(o.file)).toBe(true);
      expect(lines(o.stdout)).toContain(`report: ${o.file}`);
      // The report is the one `vmmsim report` gives for that results.json: it depends on nothing else.
      expect(readFileSync(o.file, 'utf8')).toContain(`<body data-kind="${name}">`);
    });

    it('loads from file:// with no console error and no request but its own file', () => {
      const o = opened[name];
      expect(o.consoleErrors).toEqual([]);
      expect(o.failedRequests).toEqual([]);
      expect(o.requests).toEqual([pathToFileURL(o.file).href]);
    });

    it('holds, in every mark and table cell, the value of results.json at the pointer it names', async () => {
      const o = opened[name];
      const data = await pageData(o.page);
      expect(data.length).toBeGreaterThan(o.doc.runs.length * 20);
      expect(mismatches(o.doc, data)).toEqual([]);
      const charts = new Set(data.map((d) => d.chart));
      for (const c of ['transitions', 'breakdown', 'latency', 'hop-latency', 'table', ...(name === 'sweep' ? ['scaling'] : [])]) expect(charts.has(c), c).toBe(true);
    });

    it('has a transitions mark per run, operation and kind, as wide as its value on one scale', async () => {
      const o = opened[name];
      const marks = await chartMarks(o.page, 'transitions');
      o.doc.runs.forEach((r, i) =>
        r.ops.forEach((op) => {
          for (const k of TRANSITION_KINDS) {
            const m = marks.filter((x) => x['data-run'] === String(i) && x['data-op'] === op.op && x['data-kind'] === k);
            expect(m.map((x) => Number(x['data-value'])), `${r.model} ${op.op} ${k}`).toEqual([op.transitions[k]]);
          }
        }),
      );
      const perUnit = marks.filter((m) => Number(m['data-value']) > 0).map((m) => Number(m['width']) / Number(m['data-value']));
      expect(perUnit.length).toBeGreaterThan(0);
      for (const k of perUnit) expect(k).toBeCloseTo(perUnit[0] as number, 1);
      for (const m of marks.filter((x) => Number(x['data-value']) === 0)) expect(Number(m['width'])).toBe(0);
    });

    it('has a latency curve per run and operation in both clocks, rising from p50 to max', async () => {
      const o = opened[name];
      const marks = await chartMarks(o.page, 'latency');
      o.doc.runs.forEach((r, i) =>
        r.ops.filter((op) => op.count > 0).forEach((op) => {
          for (const [clock, s] of [['measured', op.measuredUs], ['modeled', op.modeledNs]] as const) {
            const p = marks.filter((x) => x['data-run'] === String(i) && x['data-op'] === op.op && x['data-clock'] === clock);
            expect(p.map((x) => x['data-percentile']), `${r.model} ${op.op} ${clock}`).toEqual(['p50', 'p90', 'p99', 'p99.9', 'max']);
            expect(p.map((x) => Number(x['data-value']))).toEqual([s.p50, s.p90, s.p99, s.p999, s.max]);
            // Percentiles grow, so the curve never goes down the page (y grows downwards).
            const cy = p.map((x) => Number(x['cy']));
            for (let j = 1; j < cy.length; j++) expect(cy[j] as number).toBeLessThanOrEqual((cy[j - 1] as number) + 0.01);
          }
        }),
      );
    });

    it('has a hop curve per run and link crossed', async () => {
      const o = opened[name];
      const marks = await chartMarks(o.page, 'hop-latency');
      const expected = o.doc.runs.flatMap((r, i) => r.hops.filter((h) => h.count > 0).map((h) => `${i} ${h.from}->${h.to}`));
      expect(expected.length).toBeGreaterThan(0);
      const drawn = marks.filter((m) => m['data-percentile'] === 'p50').map((m) => `${m['data-run']} ${m['data-from']}->${m['data-to']}`);
      expect(drawn.sort()).toEqual(expected.sort());
    });

    it('draws its charts: every chart has a size on the page', async () => {
      const sizes = await opened[name].page.$$eval('svg[data-chart]', (els) => els.map((e) => e.getBoundingClientRect()).map((r) => [r.width, r.height]));
      expect(sizes.length).toBeGreaterThan(2);
      for (const [w, h] of sizes) {
        expect(w).toBeGreaterThan(100);
        expect(h).toBeGreaterThan(50);
      }
    });
  });

  describe.each(['compare', 'sweep', 'contended'] as const)('the report of %s shows where the time goes', (name) => {
    it('has a bar per run and operation stacked by its breakdown, each segment as wide as its ns on one scale, adding up to the modeled mean', async () => {
      const o = opened[name];
      const marks = await chartMarks(o.page, 'breakdown');
      let rows = 0;
      o.doc.runs.forEach((r, i) =>
        r.ops.filter((op) => op.count > 0).forEach((op) => {
          rows += 1;
          const m = marks.filter((x) => x['data-run'] === String(i) && x['data-op'] === op.op);
          expect(m.map((x) => x['data-step']), `${r.model} ${op.op}`).toEqual(op.breakdown.map((e) => e.step));
          expect(m.map((x) => Number(x['data-value']))).toEqual(op.breakdown.map((e) => e.ns));
          const sum = m.reduce((n, x) => n + Number(x['data-value']), 0);
          expect(Math.abs(sum - op.modeledNs.mean), `${r.model} ${op.op} adds up`).toBeLessThanOrEqual(1);
          // Left to right, each segment starts where the one before it ends.
          for (let j = 1; j < m.length; j++) expect(Number(m[j]?.['x'])).toBeCloseTo(Number(m[j - 1]?.['x']) + Number(m[j - 1]?.['width']), 1);
        }),
      );
      expect(rows).toBeGreaterThan(0);
      const perUnit = marks.filter((m) => Number(m['data-value']) > 50).map((m) => Number(m['width']) / Number(m['data-value']));
      expect(perUnit.length).toBeGreaterThan(0);
      for (const k of perUnit) expect(k / (perUnit[0] as number)).toBeCloseTo(1, 1);
    });

    it('hatches and outlines the steps whose cost is an assumption, and says so in the legend', async () => {
      const o = opened[name];
      const marks = await chartMarks(o.page, 'breakdown');
      const assumed = marks.filter((m) => m['data-confidence'] === 'U' && m['data-wait'] === 'false');
      expect(assumed.length).toBeGreaterThan(0);
      for (const m of marks) {
        expect(m['data-assumed'], `${m['data-step']}`).toBe(String(m['data-confidence'] === 'U' && m['data-wait'] === 'false'));
        expect((m['class'] ?? '').split(' ').includes('hatched'), `${m['data-step']}`).toBe(m['data-assumed'] === 'true');
      }
      // Each hatched mark has its hatch drawn over it, with the pattern the chart defines.
      const overlays = await o.page.$$eval('svg[data-chart="breakdown"] rect.hatch', (els) => els.map((e) => ({ x: e.getAttribute('x'), width: e.getAttribute('width'), fill: e.getAttribute('fill'), stroke: e.getAttribute('stroke') })));
      expect(overlays.length).toBe(assumed.length);
      expect(overlays.map((h) => `${h.x} ${h.width}`).sort()).toEqual(assumed.map((m) => `${m['x']} ${m['width']}`).sort());
      for (const h of overlays) {
        expect(h.fill).toBe('url(#breakdown-assumed)');
        expect(h.stroke).toBe('#000');
      }
      expect(await o.page.$$eval('svg[data-chart="breakdown"] pattern#breakdown-assumed', (els) => els.length)).toBe(1);
      const legend = await o.page.$$eval('svg[data-chart="breakdown"] .legend-item text', (els) => els.map((e) => e.textContent ?? ''));
      expect(legend).toContain('hatched: cost is an assumption (U)');
    });
  });

  it('draws queueing waits as their own segments where operations contended', async () => {
    const o = opened.contended;
    const marks = await chartMarks(o.page, 'breakdown');
    const waits = marks.filter((m) => m['data-wait'] === 'true');
    expect(waits.every((m) => (m['data-step'] ?? '').startsWith('wait:'))).toBe(true);
    const waited = waits.filter((m) => Number(m['data-value']) > 0);
    expect(waited.length).toBeGreaterThan(0);
    for (const m of waited) expect(Number(m['width'])).toBeGreaterThan(0);
  });

  it('says which runs model what no upstream code runs, as results.json notes them', async () => {
    const o = opened.contended;
    // (The measured clock's notes, such as a busy machine, show in the measured section instead.)
    const codes = [...new Set(o.doc.runs.flatMap((r) => r.notes.map((n) => n.code)))].filter((c) => !c.startsWith('measured.')).sort();
    expect(codes).toEqual(['arch-mismatch', 'design.not-upstream', 'exploration.shared-vmid', 'exploration.single-vsmmu', 'exploration.step']);
    const shown = await o.page.$$eval('#run-notes li', (els) => els.map((e) => e.getAttribute('data-note') ?? ''));
    expect([...new Set(shown)].sort()).toEqual(codes);
    // The same notes under the terminal table.
    expect(o.stdout).toMatch(/^notes:$/m);
    expect(o.stdout).toMatch(/^ {2}exploration.single-vsmmu( \([^)]*\))?: /m);
    // Each note once, however many runs carry it.
    const distinct = new Set(opened.compare.doc.runs.flatMap((r) => r.notes.filter((n) => !n.code.startsWith('measured.')).map((n) => `${n.code} ${n.text}`))).size;
    expect(distinct).toBeGreaterThan(0);
    expect(await opened.compare.page.$$eval('#run-notes li', (els) => els.length)).toBe(distinct);
  });

  it('places every sweep run against the swept key, its throughput and p99 higher on the page where they are larger', async () => {
    const o = opened.sweep;
    const marks = await chartMarks(o.page, 'scaling');
    for (const metric of ['throughput-measured', 'throughput-modeled', 'p99-measured', 'p99-modeled']) {
      const p = marks.filter((m) => m['data-metric'] === metric && m['data-key'] === 'topology.psmmus');
      expect(p.map((m) => Number(m['data-run'])).sort((a, b) => a - b), metric).toEqual(o.doc.runs.map((_, i) => i));
      for (const m of p) {
        const run = o.doc.runs[Number(m['data-run'])] as ResultsDoc['runs'][number];
        expect(Number(m['data-x'])).toBe(run.point?.['topology.psmmus']);
        expect(m['data-curve']).toBe(run.model);
      }
      // One chart: a larger value is never lower on the page.
      const sorted = [...p].sort((a, b) => Number(a['data-value']) - Number(b['data-value']));
      for (let j = 1; j < sorted.length; j++) {
        if (Number(sorted[j]?.['data-value']) > Number(sorted[j - 1]?.['data-value'])) expect(Number(sorted[j]?.['cy'])).toBeLessThan(Number(sorted[j - 1]?.['cy']));
      }
      // The pSMMU axis: 2 to the right of 1.
      const x1 = p.filter((m) => m['data-x'] === '1').map((m) => Number(m['cx']));
      const x2 = p.filter((m) => m['data-x'] === '2').map((m) => Number(m['cx']));
      expect(Math.max(...x1)).toBeLessThan(Math.min(...x2));
    }
  });

  it('leaves no process of the commands behind', async () => {
    for (const o of Object.values(opened)) expect(await waitForNoProcesses(o.marker)).toEqual([]);
  });
});
