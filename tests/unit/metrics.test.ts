import { afterEach, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { VmmsimError } from '../../services/runtime/errors.js';
import { RunTotals, metricsUrl, parseMetricsPort, perRegistry, startMetrics, totalsCounter, type MetricsServer } from '../../services/runtime/metrics.js';
import { parsePrometheus, value } from '../helpers/prometheus.js';

describe('startMetrics: a process registry served at /metrics', () => {
  const servers: MetricsServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  it('serves default process metrics and vmmsim_process_info on a free port, and only at /metrics', async () => {
    const m = await startMetrics({ port: 0, role: 'psmmu', name: 'psmmu-3' });
    servers.push(m);
    expect(m.host).toBe('127.0.0.1');
    expect(m.port).toBeGreaterThan(0);
    expect(m.url).toBe(`http://127.0.0.1:${m.port}/metrics`);
    const res = await fetch(m.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const { samples, types } = parsePrometheus(await res.text());
    expect(value(samples, 'vmmsim_process_info', { role: 'psmmu', name: 'psmmu-3' })).toBe(1);
    expect(types.get('process_cpu_user_seconds_total')).toBe('counter');
    expect(types.get('nodejs_eventloop_lag_seconds')).toBe('gauge');
    expect((await fetch(`http://127.0.0.1:${m.port}/`)).status).toBe(404);
    expect((await fetch(m.url, { method: 'POST' })).status).toBe(405);
  });

  it('refuses a port in use with E_METRICS_PORT naming the process and the address', async () => {
    const first = await startMetrics({ port: 0, role: 'kvm', name: 'kvm' });
    servers.push(first);
    const err = await startMetrics({ port: first.port, role: 'vfio', name: 'vfio' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmmsimError);
    expect((err as VmmsimError).code).toBe('E_METRICS_PORT');
    expect((err as VmmsimError).message).toBe(`vfio: metrics port 127.0.0.1:${first.port} is already in use`);
    expect((err as VmmsimError).exitCode).toBe(2);
  });

  it('frees its port on close, even with a scraper\'s keep-alive connection open', async () => {
    const m = await startMetrics({ port: 0, role: 'guest', name: 'guest-0' });
    await fetch(m.url, { keepalive: true }).then((r) => r.text());
    await m.close();
    const again = await startMetrics({ port: m.port, role: 'guest', name: 'guest-0' });
    servers.push(again);
    expect(again.port).toBe(m.port);
  });

  it('names a host that is not this machine\'s', async () => {
    const err = await startMetrics({ port: 0, host: '192.0.2.1', role: 'kvm', name: 'kvm' }).catch((e: unknown) => e);
    expect((err as VmmsimError).code).toBe('E_METRICS_PORT');
    expect((err as VmmsimError).message).toContain('192.0.2.1 is not an address of this host');
  });
});

describe('metrics helpers', () => {
  it('parseMetricsPort takes 0..65535 and nothing else', () => {
    expect(parseMetricsPort('--metrics-port', '9400')).toBe(9400);
    expect(parseMetricsPort('--metrics-port', '0')).toBe(0);
    for (const bad of ['-1', '65536', 'abc', '', '94.5']) expect(() => parseMetricsPort('--metrics-port', bad)).toThrow(/--metrics-port must be a TCP port/);
  });

  it('metricsUrl brackets an IPv6 host', () => {
    expect(metricsUrl('::1', 9400)).toBe('http://[::1]:9400/metrics');
    expect(metricsUrl('10.0.0.2', 9400)).toBe('http://10.0.0.2:9400/metrics');
  });

  it('totalsCounter adds what each total grew by since the last scrape, from 0, and never goes back', async () => {
    const registry = new Registry();
    const totals = new Map<string, number>([['a', 0]]);
    totalsCounter(registry, 'x_total', 'x', ['k'], (emit) => {
      for (const [k, n] of totals) emit([k], n);
    });
    const read = async (): Promise<Record<string, number | undefined>> => {
      const { samples } = parsePrometheus(await registry.metrics());
      return { a: value(samples, 'x_total', { k: 'a' }), b: value(samples, 'x_total', { k: 'b' }) };
    };
    expect(await read()).toEqual({ a: 0, b: undefined });
    totals.set('a', 5).set('b', 2);
    expect(await read()).toEqual({ a: 5, b: 2 });
    totals.set('a', 3);
    expect(await read()).toEqual({ a: 5, b: 2 });
    totals.set('a', 9);
    expect(await read()).toEqual({ a: 9, b: 2 });
  });

  it('RunTotals keeps the counts of ended runs and adds the live one', () => {
    const t = new RunTotals<{ n: number }>((s, emit) => emit('n', s.n));
    const run1 = { n: 4 };
    t.attach(run1);
    run1.n = 7;
    expect(t.totals().get('n')).toBe(7);
    t.detach(run1);
    run1.n = 100; // a detached run no longer counts
    expect(t.totals().get('n')).toBe(7);
    const run2 = { n: 2 };
    t.attach(run2);
    expect(t.totals().get('n')).toBe(9);
    // A new run while another is still attached folds the old one in.
    const run3 = { n: 1 };
    t.attach(run3);
    expect(t.totals().get('n')).toBe(10);
    t.detach(run2); // not the live one: nothing changes
    expect(t.totals().get('n')).toBe(10);
  });

  it('perRegistry makes one instrument set per registry', () => {
    let made = 0;
    const of = perRegistry(() => ++made);
    const a = new Registry();
    const b = new Registry();
    expect([of(a), of(a), of(b), of(b)]).toEqual([1, 1, 2, 2]);
  });
});
