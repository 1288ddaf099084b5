import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HOP_BUCKETS_SECONDS } from '../../services/runtime/transport/link-metrics.js';
import { runCli, startCli, tempDir, type CliRun } from '../helpers/cli.js';
import { freePortRange, occupyPort } from '../helpers/ports.js';
import { killMarked, waitForNoProcesses } from '../helpers/processes.js';
import { parsePrometheus, select, value, type Sample } from '../helpers/prometheus.js';

/** `vmmsim: metrics: NAME URL` lines on stderr, by process name. */
function metricsUrls(stderr: string): Map<string, string> {
  return new Map([...stderr.matchAll(/^vmmsim: metrics: (\S+) (http:\/\/\S+\/metrics)/gm)].map((m) => [m[1] as string, m[2] as string]));
}

async function scrape(url: string): Promise<string | undefined> {
  try {
    const res = await fetch(url);
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

/** A hop histogram series: its buckets (by upper bound), count and sum. */
function hopSeries(samples: readonly Sample[], from: string, to: string): { buckets: [number, number][]; count: number | undefined; sum: number | undefined } {
  const buckets = select(samples, 'vmmsim_hop_latency_seconds_bucket', { from, to }).map((s): [number, number] => [Number(s.labels['le'] === '+Inf' ? Infinity : s.labels['le']), s.value]);
  return { buckets, count: value(samples, 'vmmsim_hop_latency_seconds_count', { from, to }), sum: value(samples, 'vmmsim_hop_latency_seconds_sum', { from, to }) };
}

/** Checks a hop histogram series is well formed: the declared buckets, cumulative, +Inf = count > 0. */
function expectConsistent(samples: readonly Sample[], from: string, to: string): number {
  const h = hopSeries(samples, from, to);
  expect(h.buckets.map(([le]) => le), `${from} -> ${to} buckets`).toEqual([...HOP_BUCKETS_SECONDS, Infinity]);
  for (let i = 1; i < h.buckets.length; i++) expect((h.buckets[i] as [number, number])[1]).toBeGreaterThanOrEqual((h.buckets[i - 1] as [number, number])[1]);
  const count = h.count ?? 0;
  expect(count, `${from} -> ${to} count`).toBeGreaterThan(0);
  expect(h.buckets.at(-1)?.[1]).toBe(count);
  // One-way hops between processes of one host: positive, and well under a second on average.
  expect(h.sum).toBeGreaterThan(0);
  expect((h.sum ?? 0) / count).toBeLessThan(1);
  return count;
}

/** The (from, to) pairs of the hop histograms a process serves. */
function hopPairs(samples: readonly Sample[]): string[] {
  return [...new Set(select(samples, 'vmmsim_hop_latency_seconds_count').map((s) => `${s.labels['from']}>${s.labels['to']}`))].sort();
}

describe('Prometheus metrics of a launched tree (--metrics-port)', () => {
  let running: CliRun | undefined;
  afterEach(() => {
    if (running) killMarked(running.marker);
    running = undefined;
  });

  it('serves per-link hop histograms, queue and command metrics while the run is up, and leaves nothing behind', async () => {
    // The controller and five processes (psmmu-0, vfio, qemu-0, kvm, guest-0).
    const base = await freePortRange(6);
    const out = tempDir();
    const run = startCli(['run', '--model', 'nested-smmuv3', '--duration', '10', '--metrics-port', String(base), '--out', out]);
    running = run;
    let stderr = '';
    run.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    let exited = false;
    void run.done.then(() => (exited = true));

    // Scrape while the workload runs, until every link and the pSMMU have seen traffic.
    const wanted = ['guest-0', 'kvm', 'qemu-0', 'vfio', 'psmmu-0', 'controller'];
    let scraped = new Map<string, Sample[]>();
    const ready = (): boolean => {
      const s = (n: string): Sample[] => scraped.get(n) ?? [];
      return (
        (value(s('guest-0'), 'vmmsim_hop_latency_seconds_count', { from: 'guest-0', to: 'kvm' }) ?? 0) > 0 &&
        (value(s('kvm'), 'vmmsim_hop_latency_seconds_count', { from: 'kvm', to: 'qemu-0' }) ?? 0) > 0 &&
        (value(s('qemu-0'), 'vmmsim_hop_latency_seconds_count', { from: 'qemu-0', to: 'vfio' }) ?? 0) > 0 &&
        (value(s('vfio'), 'vmmsim_hop_latency_seconds_count', { from: 'vfio', to: 'psmmu-0' }) ?? 0) > 0 &&
        (value(s('psmmu-0'), 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'TLBI_NH_VA' }) ?? 0) > 0 &&
        // An unmap completes only after its CONS read, a round trip after its TLBI reached the pSMMU.
        (value(s('guest-0'), 'vmmsim_guest_operations_total', { op: 'unmap' }) ?? 0) > 0 &&
        value(s('controller'), 'vmmsim_controller_processes') === 5
      );
    };
    const types = new Map<string, string>();
    while (!ready()) {
      expect(exited, `the run ended before every metric showed traffic; stderr:\n${stderr}`).toBe(false);
      const urls = metricsUrls(stderr);
      const next = new Map<string, Sample[]>();
      for (const name of wanted) {
        const url = urls.get(name);
        const text = url ? await scrape(url) : undefined;
        if (!text) continue;
        const parsed = parsePrometheus(text);
        next.set(name, parsed.samples);
        for (const [k, v] of parsed.types) types.set(k, v);
      }
      scraped = next;
      if (!ready()) await new Promise((r) => setTimeout(r, 200));
    }
    const at = (n: string): Sample[] => scraped.get(n) ?? [];

    expect(types.get('vmmsim_hop_latency_seconds')).toBe('histogram');
    expect(types.get('vmmsim_psmmu_commands_total')).toBe('counter');
    expect(types.get('vmmsim_link_outstanding_requests')).toBe('gauge');
    // Each process observes the two directions of the links it opened, and only those.
    const links: Record<string, [string, string][]> = {
      'guest-0': [['guest-0', 'kvm']],
      kvm: [['kvm', 'qemu-0']],
      'qemu-0': [['qemu-0', 'vfio']],
      vfio: [['vfio', 'psmmu-0']],
    };
    for (const [proc, pairs] of Object.entries(links)) {
      for (const [a, b] of pairs) {
        const up = expectConsistent(at(proc), a, b);
        const down = expectConsistent(at(proc), b, a);
        // Both crossings of a round trip are observed together when its reply is back.
        expect(down).toBe(up);
      }
      for (const pair of hopPairs(at(proc))) expect(pair.split('>')).toContain(proc);
      expect(select(at(proc), 'vmmsim_link_outstanding_requests').every((s) => s.labels['from'] === proc && s.value >= 0)).toBe(true);
    }
    expect(hopPairs(at('psmmu-0'))).toEqual([]);
    // Commands, invalidations, default process metrics, and who is who.
    expect(value(at('psmmu-0'), 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'CMD_SYNC' })).toBeGreaterThan(0);
    expect(value(at('psmmu-0'), 'vmmsim_psmmu_cmdq_entries')).toBe(0);
    expect(value(at('psmmu-0'), 'vmmsim_psmmu_cmdq_peak_entries')).toBeGreaterThanOrEqual(2);
    expect(value(at('guest-0'), 'vmmsim_guest_invalidations_total')).toBeGreaterThan(0);
    expect(value(at('guest-0'), 'vmmsim_guest_operations_total', { op: 'unmap' })).toBeGreaterThan(0);
    for (const name of wanted) {
      expect(value(at(name), 'process_cpu_user_seconds_total'), name).toBeGreaterThan(0);
      expect(select(at(name), 'vmmsim_process_info', { name })).toHaveLength(1);
    }

    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { runs: { processes: { name: string; metricsPort?: number }[]; hops: { from: string; to: string; count: number }[] }[] };
    const urls = metricsUrls(r.stderr);
    expect(urls.get('controller')).toBe(`http://127.0.0.1:${base}/metrics`);
    const processes = doc.runs[0]?.processes ?? [];
    expect(processes).toHaveLength(5);
    for (const p of processes) {
      expect(p.metricsPort).toBeGreaterThan(base);
      expect(p.metricsPort).toBeLessThanOrEqual(base + 5);
      expect(urls.get(p.name)).toBe(`http://127.0.0.1:${p.metricsPort}/metrics`);
    }
    expect(new Set(processes.map((p) => p.metricsPort)).size).toBe(5);
    // The run went on after the scrape: its final hop count is at least what was scraped.
    const final = doc.runs[0]?.hops.find((h) => h.from === 'guest-0' && h.to === 'kvm')?.count ?? 0;
    expect(final).toBeGreaterThanOrEqual(value(at('guest-0'), 'vmmsim_hop_latency_seconds_count', { from: 'guest-0', to: 'kvm' }) ?? Infinity);
    expect(await waitForNoProcesses(run.marker)).toEqual([]);
    for (const url of urls.values()) expect(await scrape(url)).toBeUndefined();
  }, 90_000);

  it('refuses a metrics port already in use with E_METRICS_PORT, for the controller and for a process it starts', async () => {
    const base = await freePortRange(6);
    // The controller's own port.
    const held = await occupyPort(base);
    try {
      const r = await runCli(['run', '--ops', '10', '--metrics-port', String(base), '--out', tempDir()]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^vmmsim: E_METRICS_PORT: controller: metrics port 127\\.0\\.0\\.1:${base} is already in use \\(fix: `, 'm'));
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(await waitForNoProcesses(r.marker)).toEqual([]);
    } finally {
      await held.release();
    }
    // psmmu-0, the first process the tree starts, gets base + 1.
    const heldChild = await occupyPort(base + 1);
    try {
      const r = await runCli(['run', '--ops', '10', '--metrics-port', String(base), '--out', tempDir()]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^vmmsim: E_METRICS_PORT: psmmu-0: metrics port 127\\.0\\.0\\.1:${base + 1} is already in use \\(fix: `, 'm'));
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(await waitForNoProcesses(r.marker)).toEqual([]);
    } finally {
      await heldChild.release();
    }
  }, 90_000);
});
