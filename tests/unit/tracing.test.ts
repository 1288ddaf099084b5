import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { nowNs } from '../../services/runtime/clock.js';
import { VmmsimError } from '../../services/runtime/errors.js';
import { createLogger } from '../../services/runtime/logger.js';
import { DEFAULT_TRACE_SAMPLE, OpTracing, tracingOptions } from '../../services/runtime/tracing.js';

const log = createLogger({ role: 'test' }, 'silent');

function usage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VmmsimError);
    expect((err as VmmsimError).code).toBe('E_USAGE');
    return (err as VmmsimError).message;
  }
  throw new Error('expected an E_USAGE error');
}

describe('tracingOptions: off unless an OTLP endpoint is given', () => {
  it('is off with no flag and no OTEL_EXPORTER_OTLP_ENDPOINT (an empty one counts as none)', () => {
    expect(tracingOptions(undefined, undefined, {})).toBeUndefined();
    expect(tracingOptions(undefined, undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: '' })).toBeUndefined();
  });

  it('takes the flag over the environment, and samples 1% unless told', () => {
    expect(tracingOptions('http://127.0.0.1:4317', undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://other:4317' })).toEqual({ endpoint: 'http://127.0.0.1:4317', sample: DEFAULT_TRACE_SAMPLE });
    expect(tracingOptions(undefined, '0.5', { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector:4317' })).toEqual({ endpoint: 'https://collector:4317', sample: 0.5 });
    expect(DEFAULT_TRACE_SAMPLE).toBe(0.01);
  });

  it('refuses a bad URL, a bad ratio, and a ratio with no endpoint', () => {
    expect(usage(() => tracingOptions('127.0.0.1:4317', undefined, {}))).toMatch(/--otlp-endpoint must be/);
    expect(usage(() => tracingOptions('grpc://h:1', undefined, {}))).toMatch(/http:\/\/HOST:PORT/);
    expect(usage(() => tracingOptions(undefined, undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'nope' }))).toMatch(/^OTEL_EXPORTER_OTLP_ENDPOINT must be/);
    for (const bad of ['2', '-0.1', 'x', '']) expect(usage(() => tracingOptions('http://h:1', bad, {}))).toMatch(/--trace-sample must be a ratio 0..1/);
    expect(usage(() => tracingOptions(undefined, '1', {}))).toMatch(/--trace-sample needs --otlp-endpoint/);
  });
});

describe('OpTracing: an operation and its hops as one trace', () => {
  function tracing(sample = 1): { t: OpTracing; exporter: InMemorySpanExporter } {
    const exporter = new InMemorySpanExporter();
    const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    return { t: new OpTracing(provider, sample, log), exporter };
  }

  it('makes a root span for the operation and a child per hop, timed to the nanosecond from the stamps', () => {
    const { t, exporter } = tracing();
    const t0 = nowNs();
    t.exportOp('unmap', 42, t0, t0 + 90_000, [
      { from: 'guest-0', to: 'kvm', transition: 'exit', sentNs: t0 + 1_000, receivedNs: t0 + 31_234 },
      { from: 'kvm', to: 'guest-0', transition: undefined, sentNs: t0 + 60_000, receivedNs: t0 + 88_001 },
    ]);
    const spans = exporter.getFinishedSpans();
    expect(spans).toHaveLength(3);
    const root = spans.find((s) => s.name === 'unmap');
    if (!root) throw new Error('no operation span');
    expect(root.parentSpanContext).toBeUndefined();
    expect(root.attributes).toEqual({ 'vmmsim.op': 'unmap', 'vmmsim.op_id': 42, 'vmmsim.hops': 2 });
    // Differences of [s, ns] pairs: epoch nanoseconds as one double would lose the last digits.
    const diff = (a: [number, number], b: [number, number]): number => (a[0] - b[0]) * 1e9 + (a[1] - b[1]);
    const hops = spans.filter((s) => s !== root);
    for (const h of hops) {
      expect(h.parentSpanContext?.spanId).toBe(root.spanContext().spanId);
      expect(h.spanContext().traceId).toBe(root.spanContext().traceId);
    }
    const out = hops.find((h) => h.name === 'guest-0 -> kvm');
    const back = hops.find((h) => h.name === 'kvm -> guest-0');
    expect(out?.attributes).toEqual({ 'vmmsim.from': 'guest-0', 'vmmsim.to': 'kvm', 'vmmsim.transition': 'exit' });
    expect(back?.attributes).toEqual({ 'vmmsim.from': 'kvm', 'vmmsim.to': 'guest-0' });
    // Durations are exact; offsets within the operation too (integer arithmetic on [s, ns]).
    expect(out?.duration).toEqual([0, 30_234]);
    expect(back?.duration).toEqual([0, 28_001]);
    expect(root.duration).toEqual([0, 90_000]);
    expect(diff(out?.startTime as [number, number], root.startTime as [number, number])).toBe(1_000);
    expect(diff(back?.endTime as [number, number], root.startTime as [number, number])).toBe(88_001);
    // On the wall clock: now, give or take the test's own run time.
    const [s, n] = root.startTime as [number, number];
    expect(Math.abs(s * 1000 + n / 1e6 - Date.now())).toBeLessThan(60_000);
    expect([t.traced, t.spans]).toEqual([1, 3]);
  });

  it('samples every operation at 1, none at 0, and about the ratio between', () => {
    expect(Array.from({ length: 100 }, () => tracing(1).t.sampled()).every(Boolean)).toBe(true);
    const none = tracing(0).t;
    expect(Array.from({ length: 1000 }, () => none.sampled()).some(Boolean)).toBe(false);
    const half = tracing(0.5).t;
    const n = Array.from({ length: 4000 }, () => half.sampled()).filter(Boolean).length;
    expect(n).toBeGreaterThan(1700);
    expect(n).toBeLessThan(2300);
  });
});
