import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { HOP_BUCKETS_SECONDS, linkMetrics } from '../../services/runtime/transport/link-metrics.js';
import { parsePrometheus, select, value } from '../helpers/prometheus.js';

const hop = (sentNs: number, receivedNs: number): { from: number; to: number; sentNs: number; receivedNs: number } => ({ from: 1, to: 2, sentNs, receivedNs });

describe('link instruments: hop histograms per direction and outstanding requests', () => {
  it('observes a reply\'s first hop as the request crossing and its last as the reply crossing, in seconds', async () => {
    const registry = new Registry();
    const m = linkMetrics(registry).forLink('guest-0', 'kvm');
    expect(linkMetrics(registry).forLink('guest-0', 'kvm')).toBe(m);
    // Request 40 us, hops below it (not this link's), reply 60 us.
    m.replied([hop(1_000_000, 1_040_000), hop(1_050_000, 1_070_000), hop(1_100_000, 1_160_000)]);
    m.replied([hop(2_000_000, 2_003_000), hop(2_100_000, 2_102_000)]);
    const { samples } = parsePrometheus(await registry.metrics());
    expect(value(samples, 'vmmsim_hop_latency_seconds_count', { from: 'guest-0', to: 'kvm' })).toBe(2);
    expect(value(samples, 'vmmsim_hop_latency_seconds_count', { from: 'kvm', to: 'guest-0' })).toBe(2);
    expect(value(samples, 'vmmsim_hop_latency_seconds_sum', { from: 'guest-0', to: 'kvm' })).toBeCloseTo(43e-6, 12);
    expect(value(samples, 'vmmsim_hop_latency_seconds_sum', { from: 'kvm', to: 'guest-0' })).toBeCloseTo(62e-6, 12);
    const buckets = select(samples, 'vmmsim_hop_latency_seconds_bucket', { from: 'guest-0', to: 'kvm' });
    expect(buckets.map((b) => b.labels['le'])).toEqual([...HOP_BUCKETS_SECONDS.map(String), '+Inf']);
    // 3 us falls in the first bucket (5 us), 40 us in the 50 us one.
    expect(value(samples, 'vmmsim_hop_latency_seconds_bucket', { from: 'guest-0', to: 'kvm', le: '0.000005' })).toBe(1);
    expect(value(samples, 'vmmsim_hop_latency_seconds_bucket', { from: 'guest-0', to: 'kvm', le: '0.000025' })).toBe(1);
    expect(value(samples, 'vmmsim_hop_latency_seconds_bucket', { from: 'guest-0', to: 'kvm', le: '0.00005' })).toBe(2);
  });

  it('skips a crossing without both stamps', async () => {
    const registry = new Registry();
    const m = linkMetrics(registry).forLink('vfio', 'psmmu-0');
    m.replied([hop(0, 5), hop(10, 0)]);
    m.replied([]);
    const { samples } = parsePrometheus(await registry.metrics());
    expect(select(samples, 'vmmsim_hop_latency_seconds_count')).toEqual([]);
  });

  it('reports the requests each open link waits for, and forgets a closed link', async () => {
    const registry = new Registry();
    const metrics = linkMetrics(registry);
    const a = { inFlight: 3 };
    const b = { inFlight: 1 };
    metrics.forLink('kvm', 'qemu-0').attach(a);
    metrics.forLink('kvm', 'vfio').attach(b);
    let { samples } = parsePrometheus(await registry.metrics());
    expect(value(samples, 'vmmsim_link_outstanding_requests', { from: 'kvm', to: 'qemu-0' })).toBe(3);
    expect(value(samples, 'vmmsim_link_outstanding_requests', { from: 'kvm', to: 'vfio' })).toBe(1);
    a.inFlight = 0;
    metrics.forLink('kvm', 'vfio').detach(b);
    ({ samples } = parsePrometheus(await registry.metrics()));
    expect(value(samples, 'vmmsim_link_outstanding_requests', { from: 'kvm', to: 'qemu-0' })).toBe(0);
    expect(value(samples, 'vmmsim_link_outstanding_requests', { from: 'kvm', to: 'vfio' })).toBeUndefined();
  });
});
