/**
 * Optional OpenTelemetry tracing, off unless an OTLP endpoint is given (--otlp-endpoint URL or
 * OTEL_EXPORTER_OTLP_ENDPOINT). An operation's hops are all known in the guest when it completes,
 * each with its send and receive stamps, so a sampled operation becomes one trace after the fact:
 * a span for the operation and a child span per hop, timed from the stamps. Nothing travels with
 * the messages and an operation that is not sampled costs one random draw.
 */
import { DiagLogLevel, ROOT_CONTEXT, SpanKind, diag, trace, type HrTime, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { nowNs } from './clock.js';
import type { Logger } from './logger.js';
import type { TracingOptions } from './tracing-options.js';

export { DEFAULT_TRACE_SAMPLE, tracingOptions, type TracingOptions } from './tracing-options.js';

/** How long flushing the spans of a run may take before they are given up. */
const FLUSH_TIMEOUT_MS = 3000;

/** One hop of an operation, named and stamped on the host's monotonic clock (ns). */
export interface HopSpan {
  from: string;
  to: string;
  /** The context transition the crossing pays (exit, user, ioctl, hw, direct), if any. */
  transition: string | undefined;
  sentNs: number;
  receivedNs: number;
}

/**
 * Turns the monotonic clock of the hop stamps into wall-clock span times. The offset is taken once
 * as whole seconds and nanoseconds, so a stamp converts with integer arithmetic and keeps its
 * nanoseconds (a double of epoch nanoseconds would not).
 */
class EpochClock {
  private readonly monoRef = nowNs();
  private readonly sec: number;
  private readonly ns: number;

  constructor() {
    const ms = Date.now();
    this.sec = Math.floor(ms / 1000);
    this.ns = (ms % 1000) * 1e6;
  }

  at(monoNs: number): HrTime {
    const t = this.ns + Math.round(monoNs - this.monoRef);
    const carry = Math.floor(t / 1e9);
    return [this.sec + carry, t - carry * 1e9];
  }
}

/** Sampled operation traces of one process, exported over OTLP/gRPC in batches. */
export class OpTracing {
  private readonly clock = new EpochClock();
  private readonly tracer: Tracer;
  /** Operations traced and spans made, for the process's log and tests. */
  traced = 0;
  spans = 0;

  constructor(
    private readonly provider: TracerProvider,
    readonly sample: number,
    private readonly log: Logger,
  ) {
    this.tracer = provider.getTracer('vmmsim');
  }

  /** Whether the next operation is traced. */
  sampled(): boolean {
    return this.sample >= 1 || (this.sample > 0 && Math.random() < this.sample);
  }

  /**
   * Exports one operation as a trace: its span from `startNs` to `endNs` and a child span per hop
   * from its send to its receive stamp (monotonic ns).
   */
  exportOp(op: string, opId: number, startNs: number, endNs: number, hops: readonly HopSpan[]): void {
    const root = this.tracer.startSpan(op, { root: true, kind: SpanKind.INTERNAL, startTime: this.clock.at(startNs), attributes: { 'vmmsim.op': op, 'vmmsim.op_id': opId, 'vmmsim.hops': hops.length } });
    const parent = trace.setSpan(ROOT_CONTEXT, root);
    for (const h of hops) {
      const attributes: Record<string, string> = { 'vmmsim.from': h.from, 'vmmsim.to': h.to };
      if (h.transition) attributes['vmmsim.transition'] = h.transition;
      this.tracer.startSpan(`${h.from} -> ${h.to}`, { kind: SpanKind.INTERNAL, startTime: this.clock.at(h.sentNs), attributes }, parent).end(this.clock.at(h.receivedNs));
    }
    root.end(this.clock.at(endNs));
    this.traced += 1;
    this.spans += 1 + hops.length;
  }

  /** Sends every span made so far; gives up after a few seconds (an unreachable collector). */
  async flush(): Promise<void> {
    try {
      await this.provider.forceFlush({ timeoutMillis: FLUSH_TIMEOUT_MS });
    } catch (err) {
      this.log.warn({ err }, 'exporting trace spans failed');
    }
  }

  async shutdown(): Promise<void> {
    await this.flush();
    try {
      await this.provider.shutdown();
    } catch (err) {
      this.log.warn({ err }, 'stopping the trace exporter failed');
    }
  }
}

/**
 * Starts the exporter of one process. Spans leave in batches every second; the queue holds a
 * sampled run's spans between exports (a span beyond it is dropped, as OpenTelemetry does). The
 * SDK's own complaints (an unreachable collector) go to the process's log as warnings.
 */
export function startTracing(opts: TracingOptions, self: { role: string; name: string }, log: Logger): OpTracing {
  diag.setLogger(
    {
      error: (message, ...args) => log.warn({ otel: args }, message),
      warn: (message, ...args) => log.warn({ otel: args }, message),
      info: () => undefined,
      debug: () => undefined,
      verbose: () => undefined,
    },
    DiagLogLevel.WARN,
  );
  const exporter = new OTLPTraceExporter({ url: opts.endpoint, timeoutMillis: 5000 });
  const provider = new TracerProvider({
    // The sampling decision is made per operation before any span exists (OpTracing.sampled).
    sampler: new AlwaysOnSampler(),
    resource: resourceFromAttributes({ 'service.name': 'vmmsim', 'service.instance.id': self.name, 'vmmsim.role': self.role }),
    spanProcessors: [new BatchSpanProcessor({ exporter, maxQueueSize: 65_536, maxExportBatchSize: 2048, scheduledDelayMillis: 1000 })],
  });
  return new OpTracing(provider, opts.sample, log);
}
