import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../helpers/cli.js';
import { startCollector, type Collector, type ReceivedSpan } from '../helpers/otlp-collector.js';
import { waitForNoProcesses } from '../helpers/processes.js';

interface Doc {
  runs: { ops: { op: string; count: number }[]; hops: { from: string; to: string; count: number }[] }[];
}

describe('OpenTelemetry traces of sampled operations (--otlp-endpoint, --trace-sample)', () => {
  let collector: Collector;
  beforeAll(async () => {
    collector = await startCollector();
  });
  afterAll(async () => {
    await collector.close();
  });

  it('with sample 1.0 exports one trace per operation with a span per hop, timed by the hop stamps', async () => {
    const out = tempDir();
    // No OTel variable of the environment may steer the run: the flags alone.
    const r = await runCli(['run', '--model', 'nested-smmuv3', '--ops', '30', '--otlp-endpoint', collector.url, '--trace-sample', '1', '--out', out], { env: { OTEL_EXPORTER_OTLP_ENDPOINT: '' } });
    expect(r.code, r.stderr).toBe(0);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
    const run = (JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Doc).runs[0];
    if (!run) throw new Error('no run in results.json');
    const ops = run.ops.reduce((n, o) => n + o.count, 0);
    const hops = run.hops.reduce((n, h) => n + h.count, 0);
    expect(ops).toBe(60);
    // Strict unmaps trap all the way down and back (8 crossings), then poll CONS with a read that
    // traps to the VMM and back (4 more); maps pay none.
    expect(hops).toBe(30 * 12);

    const spans = collector.spans;
    const roots = spans.filter((s) => s.parentSpanId === '');
    const children = spans.filter((s) => s.parentSpanId !== '');
    expect(roots).toHaveLength(ops);
    expect(children).toHaveLength(hops);
    expect(new Set(spans.map((s) => s.spanId)).size).toBe(spans.length);
    expect(new Set(roots.map((s) => s.traceId)).size).toBe(ops);
    expect(roots.filter((s) => s.name === 'unmap')).toHaveLength(30);
    expect(roots.filter((s) => s.name === 'map')).toHaveLength(30);

    const byId = new Map<string, ReceivedSpan>(roots.map((s) => [s.spanId, s]));
    const kids = new Map<string, ReceivedSpan[]>();
    for (const c of children) {
      const parent = byId.get(c.parentSpanId);
      if (!parent) throw new Error(`span ${c.name} has no operation span as parent`);
      expect(c.traceId).toBe(parent.traceId);
      // The hop lies inside its operation, on the one clock both were stamped with.
      expect(c.startNs).toBeGreaterThanOrEqual(parent.startNs);
      expect(c.endNs).toBeLessThanOrEqual(parent.endNs);
      expect(c.endNs).toBeGreaterThanOrEqual(c.startNs);
      expect(c.name).toBe(`${c.attributes['vmmsim.from']} -> ${c.attributes['vmmsim.to']}`);
      kids.set(parent.spanId, [...(kids.get(parent.spanId) ?? []), c]);
    }
    for (const root of roots) {
      const mine = kids.get(root.spanId) ?? [];
      expect(root.attributes['vmmsim.hops']).toBe(mine.length);
      expect(mine.length).toBe(root.name === 'unmap' ? 12 : 0);
      expect(root.resource['service.instance.id']).toBe('guest-0');
      expect(root.resource['vmmsim.role']).toBe('guest');
    }
    // The crossings of the hop table, with the transition each request pays.
    const count = (from: string, to: string, transition?: string): number =>
      children.filter((c) => c.attributes['vmmsim.from'] === from && c.attributes['vmmsim.to'] === to && c.attributes['vmmsim.transition'] === transition).length;
    // Two exits per unmap (the PROD write and the CONS read), one ioctl and one pSMMU sync.
    expect(count('guest-0', 'kvm', 'exit')).toBe(60);
    expect(count('kvm', 'qemu-0', 'user')).toBe(60);
    expect(count('qemu-0', 'vfio', 'ioctl')).toBe(30);
    expect(count('vfio', 'psmmu-0', 'hw')).toBe(30);
    expect(count('kvm', 'guest-0')).toBe(60);
    for (const h of run.hops) expect(children.filter((c) => c.attributes['vmmsim.from'] === h.from && c.attributes['vmmsim.to'] === h.to)).toHaveLength(h.count);
  }, 90_000);

  it('exports nothing when tracing is off, even with the exporter\'s own variable pointing at a collector', async () => {
    const before = { exports: collector.exports, spans: collector.spans.length };
    // An exporter made by default would read OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and reach this collector.
    const r = await runCli(['run', '--model', 'nested-smmuv3', '--ops', '30', '--out', tempDir()], { env: { OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: collector.url } });
    expect(r.code, r.stderr).toBe(0);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
    expect({ exports: collector.exports, spans: collector.spans.length }).toEqual(before);
  }, 90_000);
});
