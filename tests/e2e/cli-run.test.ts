/**
 * `vmmsim run` and `vmmsim compare` end to end: the built CLI starts its real process tree, runs a
 * small workload and writes results.json; these tests read what a user reads (stdout, the file,
 * the exit code) and ask the OS which processes are left.
 */
import { MODELS } from '../../services/scenario/schema.js';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TRANSITION_KINDS } from '../../services/runtime/topology.js';
import { leafFields } from '../../services/scenario/schema.js';
import type { ResultsDoc, RunResult } from '../../services/controller/results.js';
import type { CliResult } from '../helpers/cli.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { ROLE_NAMES, Runs, entries, lines, parseResults, readResults, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

const SUMMARY_KEYS = ['mean', 'p50', 'p90', 'p99', 'p999', 'max'] as const;

function expectSummary(s: unknown, what: string): void {
  expect(s, what).toBeTypeOf('object');
  for (const k of SUMMARY_KEYS) {
    const v = (s as Record<string, unknown>)[k];
    expect(v, `${what}.${k}`).toBeTypeOf('number');
    expect(Number.isFinite(v) && (v as number) >= 0, `${what}.${k} = ${String(v)} is a finite number >= 0`).toBe(true);
  }
}

function op(run: RunResult, name: string): RunResult['ops'][number] {
  const found = run.ops.find((o) => o.op === name);
  expect(found, `op ${name} in ${run.model}`).toBeDefined();
  return found as RunResult['ops'][number];
}

function valueAt(doc: Record<string, unknown>, path: string): unknown {
  let node: unknown = doc;
  for (const part of path.split('.')) node = (node as Record<string, unknown> | undefined)?.[part];
  return node;
}

describe('vmmsim run --model nested-smmuv3 --ops 100 --json --out DIR', () => {
  let out: string;
  let result: CliResult & { spawned: { pid: number; cmdline: string }[]; tmp: string };
  let doc: ResultsDoc;
  let run: RunResult;

  beforeAll(async () => {
    out = join(runs.folder(), 'out');
    result = await runWatched(runs, ['run', '--model', 'nested-smmuv3', '--ops', '100', '--json', '--out', out]);
    doc = parseResults(result.stdout);
    run = doc.runs[0] as RunResult;
  });

  it('exits 0 and prints on stdout exactly the document it wrote to DIR/results.json', () => {
    expect(result.code, result.stderr).toBe(0);
    expect(doc).toEqual(readResults(out));
    expect(doc.schema).toBe('vmmsim/results/v1');
    expect(doc.status).toBe('ok');
    expect(doc.error).toBeUndefined();
    expect(doc.runs).toHaveLength(1);
  });

  it('records the resolved scenario, every default filled in, and its seed', () => {
    const s = doc.scenario as unknown as Record<string, unknown>;
    const overridden: Record<string, unknown> = { model: 'nested-smmuv3', 'workload.ops': 100 };
    for (const [path, field] of leafFields()) {
      expect(valueAt(s, path), `scenario.${path}`).toEqual(path in overridden ? overridden[path] : field.default);
    }
    expect(doc.scenario.topology.psmmus).toBe(1);
    expect(doc.scenario.workload.ops).toBe(100);
    expect(doc.seed).toBe(doc.scenario.seed);
    expect(Number.isInteger(doc.seed)).toBe(true);
    expect(run.model).toBe('nested-smmuv3');
    // run.dma holds the DMA API mode and the device DMA the physical SMMUs saw.
    expect(run.dma.mode).toBe(doc.scenario.dma);
    expect(run.dma).toMatchObject({ translations: expect.any(Number), iotlbHitRate: expect.any(Number), faults: expect.any(Number), staleTranslations: 0 });
    expect(run.workload).toEqual(doc.scenario.workload);
    expect(run.topology).toEqual(doc.scenario.topology);
  });

  it('lists the five role processes, one each, with distinct real pids', () => {
    const names = run.processes.map((p) => p.name).sort();
    expect(names).toEqual([...ROLE_NAMES].sort());
    for (const p of run.processes) {
      expect(p.name.startsWith(p.role), `${p.name} has role ${p.role}`).toBe(true);
      expect(Number.isInteger(p.pid) && p.pid > 0, `${p.name} pid ${p.pid}`).toBe(true);
      expect(p.host, `${p.name} host`).toMatch(/\S/);
    }
    expect(new Set(run.processes.map((p) => p.pid)).size).toBe(5);
    // They are the processes the controller really started (seen in /proc while the run lasted).
    const seen = new Set(result.spawned.map((p) => p.pid));
    for (const p of run.processes) expect(seen.has(p.pid), `${p.name} pid ${p.pid} was a real child`).toBe(true);
  });

  it('counts 100 maps and 100 unmaps with the transitions of the nested path', () => {
    const map = op(run, 'map');
    const unmap = op(run, 'unmap');
    expect(map.count).toBe(100);
    expect(unmap.count).toBe(100);
    expect(map.failed).toBe(0);
    expect(unmap.failed).toBe(0);
    expect(map.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
    expect(unmap.transitions).toEqual({ exit: 2, user: 2, ioctl: 1, hw: 1, direct: 0 });
    for (const o of [map, unmap]) {
      expectSummary(o.measuredUs, `${o.op}.measuredUs`);
      expectSummary(o.modeledNs, `${o.op}.modeledNs`);
      expect(o.modeledNs.mean, `${o.op} costs modeled time`).toBeGreaterThan(0);
    }
    // An unmap crosses four transitions and the pSMMU; a map crosses none.
    expect(unmap.modeledNs.mean).toBeGreaterThan(map.modeledNs.mean);
  });

  it('times every hop of the unmap path, there and back, once per unmap', () => {
    const path = ['guest-0', 'kvm', 'qemu-0', 'vfio', 'psmmu-0'];
    const expected: string[] = [];
    for (let i = 0; i + 1 < path.length; i++) expected.push(`${path[i]}->${path[i + 1]}`, `${path[i + 1]}->${path[i]}`);
    const hops = new Map(run.hops.map((h) => [`${h.from}->${h.to}`, h]));
    for (const name of expected) {
      const h = hops.get(name);
      expect(h, `hop ${name}`).toBeDefined();
      // The guest-kvm-qemu hops carry the PROD write and the CONS read of every unmap.
      expect(h?.count, `hop ${name} count`).toBe(/vfio|psmmu/.test(name) ? 100 : 200);
      expectSummary(h?.measuredUs, `hop ${name}.measuredUs`);
    }
  });

  it('reports throughput and one delivered invalidation per guest command', () => {
    expect(run.throughput.opsPerSecMeasured).toBeGreaterThan(0);
    expect(run.throughput.opsPerSecModeled).toBeGreaterThan(0);
    expect(run.invalidations).toEqual({ guestCommands: 100, guestCommandsFailed: 0, deliveredPerPsmmu: { 'psmmu-0': 100 }, fanout: 1, wasted: 0, hostStage2: { unmaps: 0, deliveredPerPsmmu: { 'psmmu-0': 0 } } });
  });

  it('leaves no process and no socket folder behind', async () => {
    expect(await waitForNoProcesses(result.marker)).toEqual([]);
    expect(entries(result.tmp)).toEqual([]);
  });

  it('gives summaries that are internally consistent (min <= p50 <= p90 <= p99 <= p999 <= max)', () => {
    const summaries: [string, RunResult['ops'][number]['measuredUs']][] = [];
    for (const o of run.ops) summaries.push([`${o.op}.measuredUs`, o.measuredUs], [`${o.op}.modeledNs`, o.modeledNs]);
    for (const h of run.hops) summaries.push([`hop ${h.from}->${h.to}`, h.measuredUs]);
    const broken = summaries
      .filter(([, s]) => !(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max))
      .map(([what, s]) => `${what}: min ${s.min} p50 ${s.p50} p90 ${s.p90} p99 ${s.p99} p999 ${s.p999} max ${s.max}`);
    expect(broken).toEqual([]);
  });
});

describe('vmmsim compare --ops 100 --set vmm.hwptInvalidate=per-batch', () => {
  it('compares the default models in a table that ends with the path of results.json', async () => {
    const cwd = runs.folder();
    // per-batch changes no modeled figure when every guest batch holds one command: a note says so.
    const r = await runWatched(runs, ['compare', '--ops', '100', '--set', 'vmm.hwptInvalidate=per-batch'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout);
    const tableModels = new Set(out.map((l) => l.split(/\s+/)[0]));
    expect(tableModels.has('none'), r.stdout).toBe(true);
    expect(tableModels.has('nested-smmuv3'), r.stdout).toBe(true);
    expect(tableModels.has('nested-smmuv3-vcmdq'), r.stdout).toBe(true);
    const last = out[out.length - 1] ?? '';
    const m = /^results: (.+)$/.exec(last);
    expect(m, `last line "${last}"`).not.toBeNull();
    const path = resolve(cwd, m?.[1] ?? '');
    // Without --out, results go under results/ in the working directory.
    expect(path.startsWith(join(cwd, 'results') + '/'), path).toBe(true);
    expect(existsSync(path)).toBe(true);

    const doc = parseResults(readFileSync(path, 'utf8'));
    expect(doc.status).toBe('ok');
    // The default models are every architecture this build supports.
    expect(doc.runs.map((x) => x.model).sort()).toEqual([...MODELS].sort());
    const none = doc.runs.find((x) => x.model === 'none') as RunResult;
    expect(none.ops.map((o) => o.op).sort()).toEqual(['map', 'unmap']);
    for (const o of none.ops) {
      expect(o.count).toBe(100);
      for (const k of TRANSITION_KINDS) expect(o.transitions[k], `none ${o.op} ${k}`).toBe(0);
    }
    expect(none.invalidations.guestCommands).toBe(0);
    const nested = doc.runs.find((x) => x.model === 'nested-smmuv3') as RunResult;
    expect(op(nested, 'unmap').transitions.exit).toBe(2);
    // The default profile prices an arm64 host: the sPAPR designs and intel-cm say so, in
    // results.json and under the table; the arm64 designs have nothing to say.
    expect(doc.profile.arch).toBe('arm64');
    const mismatched = doc.runs.filter((x) => x.notes.some((n) => n.code === 'arch-mismatch')).map((x) => x.model).sort();
    expect(mismatched).toEqual(['intel-cm', 'spapr-tce', 'spapr-tce-kvm']);
    // A strict unmap is one TLBI per batch: per-batch made one ioctl per command, as per-command does.
    const ioctls = nested.counters['vfio']?.['hwptInvalidate'] ?? 0;
    expect(ioctls).toBeGreaterThan(0);
    expect(nested.counters['vfio']?.['commands']).toBe(ioctls);
    // (Notes of the measured clock, such as a busy machine, may come on a shared machine: not about the model.)
    expect(nested.notes.filter((n) => !n.code.startsWith('measured.'))).toEqual([{
      code: 'no-effect.vmm.hwptInvalidate',
      text: expect.stringMatching(new RegExp(`^vmm\\.hwptInvalidate=per-batch had no effect on this run: every guest batch held one command \\(${ioctls} IOMMU_HWPT_INVALIDATE ioctls for ${ioctls} commands\\).* It matters only when`)),
    }]);
    // A design whose invalidations never reach IOMMU_HWPT_INVALIDATE says so too.
    expect(none.notes.map((n) => n.text)).toContainEqual(expect.stringMatching(/^vmm\.hwptInvalidate=per-batch had no effect on this run: no IOMMU_HWPT_INVALIDATE ran\./));
    // Each note starts a line; a long one continues on lines indented further.
    const notesText = out.slice(out.indexOf('notes:') + 1).filter((l) => l.startsWith('  ')).join('\n').replace(/\n {4}/g, ' ');
    const noteLines = notesText.split('\n').filter((l) => l.startsWith('  arch-mismatch: '));
    expect(noteLines.map((l) => l.split(' ')[3]).sort(), r.stdout).toEqual(['intel-cm', 'spapr-tce', 'spapr-tce-kvm']);
    expect(noteLines.find((l) => l.includes('spapr-tce models ppc64 hardware')), r.stdout).toMatch(/profile arm64-kunpeng920 prices arm64: .*--profile power9\)$/);
    // Not every run carries either note, whose text names no model: the models follow the code.
    const noEffect = notesText.split('\n').filter((l) => l.startsWith('  no-effect.vmm.hwptInvalidate')).sort();
    expect(noEffect, r.stdout).toEqual([
      expect.stringMatching(new RegExp(`^  no-effect\\.vmm\\.hwptInvalidate \\(nested-smmuv3\\): vmm\\.hwptInvalidate=per-batch had no effect on this run: every guest batch held one command \\(${ioctls} IOMMU_HWPT_INVALIDATE`)),
      expect.stringMatching(/^ {2}no-effect\.vmm\.hwptInvalidate \(none, .*\): vmm\.hwptInvalidate=per-batch had no effect on this run: no IOMMU_HWPT_INVALIDATE ran\./),
    ]);
    for (const l of out) expect(l.length, l).toBeLessThanOrEqual(120);
    expect(out.indexOf('notes:')).toBeGreaterThan(out.findIndex((l) => l.startsWith('nested-smmuv3-vcmdq')));

    expect(await waitForNoProcesses(r.marker)).toEqual([]);
    expect(entries(r.tmp)).toEqual([]);
  });
});

describe('determinism', () => {
  it('gives identical modeled results for two runs with the same seed', async () => {
    const args = ['run', '--ops', '100', '--seed', '42', '--json'];
    const a = await runWatched(runs, [...args, '--out', runs.folder()]);
    const b = await runWatched(runs, [...args, '--out', runs.folder()]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const ra = parseResults(a.stdout).runs[0] as RunResult;
    const rb = parseResults(b.stdout).runs[0] as RunResult;
    expect(parseResults(a.stdout).seed).toBe(42);
    expect(ra.ops.map((o) => o.op)).toEqual(['map', 'unmap']);
    expect(rb.ops.map((o) => ({ op: o.op, modeledNs: o.modeledNs }))).toEqual(ra.ops.map((o) => ({ op: o.op, modeledNs: o.modeledNs })));
    expect(rb.throughput.opsPerSecModeled).toBe(ra.throughput.opsPerSecModeled);
    expect(rb.modeledElapsedNs).toBe(ra.modeledElapsedNs);
    expect(await waitForNoProcesses(a.marker)).toEqual([]);
    expect(await waitForNoProcesses(b.marker)).toEqual([]);
  });
});
