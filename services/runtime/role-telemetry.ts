/**
 * A role process's telemetry: its metrics endpoint (--metrics-port, --metrics-host) and, on a guest,
 * its operation traces (--otlp-endpoint, --trace-sample). The launcher passes these options to the
 * processes it starts; `vmmsim serve` takes them from its own command line.
 */
import { VmmsimError } from './errors.js';
import type { Logger } from './logger.js';
import type { MetricsServer, Registry } from './metrics.js';
import { parseMetricsPort } from './metrics-options.js';
import type { Role } from './topology.js';
import type { OpTracing } from './tracing.js';
import { tracingOptions, type TracingOptions } from './tracing-options.js';

/** The role process options of this file, for node:util parseArgs. */
export const TELEMETRY_OPTIONS = {
  'metrics-port': { type: 'string' },
  'metrics-host': { type: 'string' },
  'otlp-endpoint': { type: 'string' },
  'trace-sample': { type: 'string' },
} as const;

export interface TelemetryArgs {
  /** Port of the metrics endpoint (0: any free one); undefined: no metrics. */
  metricsPort: number | undefined;
  metricsHost: string | undefined;
  tracing: TracingOptions | undefined;
}

/** Reads the telemetry options; a bad value is an E_USAGE error. */
export function telemetryArgs(values: { 'metrics-port'?: string; 'metrics-host'?: string; 'otlp-endpoint'?: string; 'trace-sample'?: string }): TelemetryArgs {
  const port = values['metrics-port'];
  if (values['metrics-host'] !== undefined && port === undefined) throw new VmmsimError('E_USAGE', '--metrics-host needs --metrics-port PORT');
  return {
    metricsPort: port === undefined ? undefined : parseMetricsPort('--metrics-port', port),
    metricsHost: values['metrics-host'],
    tracing: tracingOptions(values['otlp-endpoint'], values['trace-sample']),
  };
}

/** The options that give a child process the same telemetry, with its own metrics port. */
export function telemetryArgv(t: { metricsPort?: number | undefined; metricsHost?: string | undefined; tracing?: TracingOptions | undefined }): string[] {
  const out: string[] = [];
  if (t.metricsPort !== undefined) out.push('--metrics-port', String(t.metricsPort));
  if (t.metricsPort !== undefined && t.metricsHost !== undefined) out.push('--metrics-host', t.metricsHost);
  if (t.tracing) out.push('--otlp-endpoint', t.tracing.endpoint, '--trace-sample', String(t.tracing.sample));
  return out;
}

export interface RoleTelemetry {
  metrics: MetricsServer | undefined;
  /** The registry role instruments register in; undefined when metrics are off. */
  registry: Registry | undefined;
  /** Operation traces: only a guest sees whole operations, so only a guest exports them. */
  tracing: OpTracing | undefined;
  close(): Promise<void>;
}

/**
 * Starts what the arguments ask for; a metrics port that cannot be bound throws E_METRICS_PORT.
 * prom-client and OpenTelemetry are loaded only when asked for: a role without them starts and
 * runs without their modules in memory.
 */
export async function startRoleTelemetry(role: Role, name: string, args: TelemetryArgs, log: Logger): Promise<RoleTelemetry> {
  const port = args.metricsPort;
  const metrics = port === undefined ? undefined : await (await import('./metrics.js')).startMetrics({ port, ...(args.metricsHost ? { host: args.metricsHost } : {}), role, name });
  const tracingArgs = args.tracing;
  const tracing = tracingArgs && role === 'guest' ? (await import('./tracing.js')).startTracing(tracingArgs, { role, name }, log) : undefined;
  if (metrics) log.debug({ url: metrics.url }, 'metrics');
  return {
    metrics,
    registry: metrics?.registry,
    tracing,
    close: async () => {
      await Promise.all([tracing?.shutdown(), metrics?.close()]);
    },
  };
}
