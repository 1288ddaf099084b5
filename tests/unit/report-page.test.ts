/**
 * The report page built from results documents of every kind: self-contained (no script, no fetch,
 * a policy that forbids both), every chart mark and table cell holding the document's value at the
 * pointer it names, a mark for every datum the charts promise, and every string from the document
 * escaped.
 */
import { describe, expect, it } from 'vitest';
import { TRANSITION_KINDS } from '../../services/runtime/topology.js';
import { reportData } from '../../services/controller/report/data.js';
import { reportHtml } from '../../services/controller/report/page.js';
import type { ResultsDoc } from '../../services/controller/results.js';
import { dataInHtml, mismatches } from '../helpers/report-check.js';
import { fixtureDoc, fixtureRun, mapUnmap, saturation } from '../helpers/results-fixture.js';

const hops = [
  { from: 'guest-0', to: 'kvm', p50Us: 300 },
  { from: 'kvm', to: 'qemu-0', p50Us: 250 },
];

const docs: Record<string, ResultsDoc> = {
  compare: fixtureDoc([
    fixtureRun({ model: 'none', ops: mapUnmap(50, {}, 0.001) }),
    fixtureRun({ model: 'nested-smmuv3', ops: mapUnmap(50, { exit: 1, user: 1, ioctl: 1, hw: 1 }), hops }),
    fixtureRun({ model: 'nested-smmuv3-vcmdq', ops: [...mapUnmap(50, { direct: 1 }, 0.3), { op: 'flush', count: 0, measuredP50Us: 0, modeledP50Ns: 0 }] }),
  ]),
  sweep: fixtureDoc(
    [1, 2, 4].flatMap((psmmus) =>
      ['single', 'per-psmmu'].flatMap((vsmmu) =>
        ['nested-smmuv3', 'none'].map((model) =>
          fixtureRun({ model, point: { 'topology.psmmus': psmmus, 'topology.vsmmu': vsmmu }, psmmus, ops: mapUnmap(30, model === 'none' ? {} : { exit: 1, user: 1, ioctl: vsmmu === 'single' ? psmmus : 1, hw: vsmmu === 'single' ? psmmus : 1 }, psmmus), opsPerSecModeled: 480000 / psmmus, hops }),
        ),
      ),
    ),
    { sweep: { keys: ['topology.psmmus', 'topology.vsmmu'], points: 6 } },
  ),
  saturate: fixtureDoc(
    ['nested-smmuv3', 'none'].flatMap((model) => [1000, 2000, 4000].map((rate) => fixtureRun({ model, point: { 'workload.rate': rate }, rate, ops: mapUnmap(20, { exit: 1 }) }))),
    { saturation: [saturation('nested-smmuv3', 4000), saturation('none', null)] },
  ),
  'sweep-saturate': fixtureDoc(
    [1, 2].flatMap((psmmus) => [1000, 2000].map((rate) => fixtureRun({ model: 'nested-smmuv3', point: { 'topology.psmmus': psmmus, 'workload.rate': rate }, rate, ops: mapUnmap(20, { exit: 1 }) }))),
    { sweep: { keys: ['topology.psmmus'], points: 2 }, saturation: [{ ...saturation('nested-smmuv3', 2000), point: { 'topology.psmmus': 1 } }, { ...saturation('nested-smmuv3', null), point: { 'topology.psmmus': 2 } }] },
  ),
  failed: fixtureDoc([], { status: 'failed', error: { code: 'E_PROCESS_EXITED', message: 'psmmu-0 exited with code 1' } }),
};

/** Marks of a chart with their data-* attributes, read from the page text. */
function marks(html: string, chart: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const m of html.matchAll(/<(?:rect|circle)\b([^>]*)>/g)) {
    const a: Record<string, string> = {};
    for (const x of (m[1] ?? '').matchAll(/([\w-]+)="([^"]*)"/g)) a[x[1] as string] = x[2] as string;
    if (a['class']?.startsWith('mark') && a['data-chart'] === chart) out.push(a);
  }
  return out;
}

/** Curve points (circles) inside the curves of one chart: each curve group's data merged onto its points. */
function curvePoints(html: string, chart: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const g of html.matchAll(/<g class="curve"([^>]*)>(.*?)<\/g>/g)) {
    const ga: Record<string, string> = {};
    for (const x of (g[1] ?? '').matchAll(/([\w-]+)="([^"]*)"/g)) ga[x[1] as string] = x[2] as string;
    if (ga['data-chart'] !== chart) continue;
    for (const c of (g[2] ?? '').matchAll(/<circle\b([^>]*)>/g)) {
      const a: Record<string, string> = { ...ga };
      for (const x of (c[1] ?? '').matchAll(/([\w-]+)="([^"]*)"/g)) a[x[1] as string] = x[2] as string;
      out.push(a);
    }
  }
  return out;
}

describe.each(Object.entries(docs))('the report of a %s', (kind, doc) => {
  const html = reportHtml(reportData(doc));

  it('is one self-contained page: no script, nothing fetched, a policy that forbids both', () => {
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).toContain(`<body data-kind="${kind === 'failed' ? 'run' : kind}">`);
    expect(html).toContain(`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`);
    expect(html).not.toMatch(/<script|<iframe|<object|<embed|<img|@import|url\(/i);
    expect([...html.matchAll(/\b(?:src|href)="([^"]*)"/g)].map((m) => m[1]).filter((u) => !(u?.startsWith('#') || u === 'data:,'))).toEqual([]);
  });

  it('holds the document\'s value at every pointer a mark or cell names', () => {
    const data = dataInHtml(html);
    if (doc.runs.length > 0) expect(data.length).toBeGreaterThan(doc.runs.length);
    expect(mismatches(doc, data)).toEqual([]);
  });

  it('has a transitions mark for every run, operation and kind', () => {
    const t = marks(html, 'transitions');
    expect(t).toHaveLength(doc.runs.reduce((n, r) => n + r.ops.length * TRANSITION_KINDS.length, 0));
    doc.runs.forEach((r, i) =>
      r.ops.forEach((o) => {
        for (const k of TRANSITION_KINDS) {
          const m = t.filter((x) => x['data-run'] === String(i) && x['data-op'] === o.op && x['data-kind'] === k);
          expect(m.map((x) => Number(x['data-value'])), `${i} ${o.op} ${k}`).toEqual([o.transitions[k]]);
        }
      }),
    );
  });

  it('has a latency curve per run and operation that ran, in both clocks, p50 to max', () => {
    const points = curvePoints(html, 'latency');
    let expected = 0;
    doc.runs.forEach((r, i) =>
      r.ops.filter((o) => o.count > 0).forEach((o) => {
        for (const [clock, s] of [['measured', o.measuredUs], ['modeled', o.modeledNs]] as const) {
          const p = points.filter((x) => x['data-run'] === String(i) && x['data-op'] === o.op && x['data-clock'] === clock);
          expect(p.map((x) => x['data-percentile'])).toEqual(['p50', 'p90', 'p99', 'p99.9', 'max']);
          expect(p.map((x) => Number(x['data-value']))).toEqual([s.p50, s.p90, s.p99, s.p999, s.max]);
          expected += 5;
        }
      }),
    );
    expect(points).toHaveLength(expected);
    // An operation that never ran has no curve.
    expect(points.some((x) => x['data-op'] === 'flush')).toBe(false);
  });

  it('has a hop curve per run and link crossed', () => {
    const points = curvePoints(html, 'hop-latency');
    expect(points).toHaveLength(doc.runs.reduce((n, r) => n + r.hops.filter((h) => h.count > 0).length * 5, 0));
  });

  it('has a table cell for every summary figure of every operation', () => {
    const cells = dataInHtml(html).filter((d) => d.where === 'td');
    for (const [i, r] of doc.runs.entries()) {
      for (const [j, o] of r.ops.entries()) {
        for (const f of ['count', 'p50', 'p99', 'p999', 'max'] as const) {
          expect(cells.some((c) => c.pointer === `/runs/${i}/ops/${j}/measuredUs/${f}`)).toBe(true);
          expect(cells.some((c) => c.pointer === `/runs/${i}/ops/${j}/modeledNs/${f}`)).toBe(true);
        }
        expect(cells.some((c) => c.pointer === `/runs/${i}/ops/${j}/count` && Number(c.value) === o.count)).toBe(true);
      }
    }
  });
});

describe('sweep scaling and saturation charts', () => {
  it('places every sweep run on a curve against each swept key, with its point as x', () => {
    const doc = docs['sweep'] as ResultsDoc;
    const html = reportHtml(reportData(doc));
    for (const key of ['topology.psmmus', 'topology.vsmmu']) {
      for (const metric of ['throughput-measured', 'throughput-modeled', 'p99-measured', 'p99-modeled']) {
        const p = curvePoints(html, 'scaling').filter((x) => x['data-key'] === key && x['data-metric'] === metric);
        expect(p.map((x) => Number(x['data-run'])).sort((a, b) => a - b), `${key} ${metric}`).toEqual(doc.runs.map((_, i) => i));
        for (const x of p) expect(x['data-x']).toBe(String(doc.runs[Number(x['data-run'])]?.point?.[key]));
      }
      // One curve per model and value of the other key.
      const curves = new Set(curvePoints(html, 'scaling').filter((x) => x['data-key'] === key).map((x) => x['data-curve']));
      expect(curves.size).toBe(key === 'topology.psmmus' ? 4 : 6);
    }
    expect(html).toContain('data-curve="nested-smmuv3 vsmmu=single"');
  });

  it('draws each saturation rate, a search that found none as an empty mark, and the steps against the rate', () => {
    for (const kind of ['saturate', 'sweep-saturate']) {
      const doc = docs[kind] as ResultsDoc;
      const html = reportHtml(reportData(doc));
      const bars = marks(html, 'saturation');
      expect(bars.map((b) => b['data-value'])).toEqual((doc.saturation ?? []).map((s) => (s.ratePerSec === null ? 'null' : String(s.ratePerSec))));
      const steps = curvePoints(html, 'scaling').filter((x) => x['data-key'] === 'workload.rate' && x['data-metric'] === 'achieved-modeled');
      expect(steps).toHaveLength(doc.runs.length);
    }
    const sweepSat = reportHtml(reportData(docs['sweep-saturate'] as ResultsDoc));
    expect(curvePoints(sweepSat, 'saturation-curve').map((x) => [x['data-x'], x['data-value']])).toEqual([['1', '2000'], ['2', 'null']]);
  });

  it('says what a failed run lacks', () => {
    const html = reportHtml(reportData(docs['failed'] as ResultsDoc));
    expect(html).toContain('data-error-code="E_PROCESS_EXITED"');
    expect(html).toContain('No run finished before the command failed: there is nothing to chart.');
    expect(html).toContain('No operations in these results: no transitions to chart.');
  });
});

describe('where the time goes', () => {
  it('stacks each operation by its breakdown, hatching the steps whose cost is an assumption, and lists the runs\' notes', () => {
    const run = fixtureRun({ model: 'nested-smmuv3', ops: mapUnmap(10, { exit: 1 }) });
    const unmap = run.ops[1] as ResultsDoc['runs'][number]['ops'][number];
    unmap.breakdown = [
      { step: 'guest.cmdq_write', perOp: 2, ns: 40, functions: ['linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: arm_smmu_cmdq_issue_cmdlist'], confidence: 'U' },
      { step: 'exit.mmio_trap', perOp: 1, ns: 638, functions: ['linux arch/arm64/kvm/mmio.c: io_mem_abort'], confidence: 'C' },
      { step: 'wait:qemu-0.bql', perOp: 1, ns: 120.5, functions: [], confidence: 'U' },
    ];
    run.notes = [{ code: 'exploration.single-vsmmu', text: 'one vSMMU over <two> pSMMUs' }];
    const doc = fixtureDoc([run]);
    const html = reportHtml(reportData(doc));
    const m = marks(html, 'breakdown');
    expect(m.map((x) => [x['data-step'], x['data-value'], x['data-assumed'], x['class']])).toEqual([
      ['guest.cmdq_write', '40', 'true', 'mark hatched'],
      ['exit.mmio_trap', '638', 'false', 'mark'],
      ['wait:qemu-0.bql', '120.5', 'false', 'mark'],
    ]);
    expect(html.match(/class="hatch"/g)).toHaveLength(1);
    expect(html).toContain('hatched: cost is an assumption (U)');
    expect(html).toContain('<li data-note="exploration.single-vsmmu"><code>exploration.single-vsmmu</code> (nested-smmuv3): one vSMMU over &lt;two&gt; pSMMUs</li>');
    expect(mismatches(doc, dataInHtml(html))).toEqual([]);
  });

  it('says so when the document has no breakdown (results written before it existed)', () => {
    const html = reportHtml(reportData(docs['compare'] as ResultsDoc));
    expect(html).toContain('No operation in these results carries a breakdown of its modeled time.');
    expect(html).not.toContain('id="run-notes"');
  });
});

describe('escaping', () => {
  it('escapes every string that comes from the document', () => {
    const evil = '<img src=x onerror=alert(1)>';
    const run = fixtureRun({ model: evil, point: { [`k"${evil}`]: `v'${evil}` }, ops: [{ op: '"><script>alert(2)</script>', count: 3, measuredP50Us: 1, modeledP50Ns: 1 }], hops: [{ from: evil, to: '</text><script>', p50Us: 1 }] });
    run.counters = { [evil]: { ['</td><script>']: 1 } };
    run.modeledResources[0] = { ...(run.modeledResources[0] as ResultsDoc['runs'][number]['modeledResources'][number]), resource: evil };
    const doc = fixtureDoc([run], { status: 'failed', error: { code: 'E_RUN', message: '</div><script>alert(3)</script>' }, sweep: { keys: [`k"${evil}`], points: 1 } });
    doc.scenario.name = `</title><script>alert(4)</script>`;
    const html = reportHtml(reportData(doc));
    expect(html).not.toMatch(/<script|<img/i);
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(html).toContain('&lt;/title&gt;&lt;script&gt;alert(4)&lt;/script&gt;');
    expect(mismatches(doc, dataInHtml(html))).toEqual([]);
  });
});
