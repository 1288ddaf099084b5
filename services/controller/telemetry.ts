/**
 * The telemetry options of the commands that run scenarios (run, compare, sweep, saturate): the
 * controller's own metrics endpoint, the metrics ports and tracing of the processes it launches,
 * and the list of metrics URLs printed on stderr.
 */
import { Gauge } from 'prom-client';
import { VmmsimError } from '../runtime/errors.js';
import { metricsUrl, parseMetricsPort, startMetrics, DEFAULT_METRICS_HOST, type MetricsServer } from '../runtime/metrics.js';
import { TELEMETRY_OPTIONS } from '../runtime/role-telemetry.js';
import { tracingOptions, type TracingOptions } from '../runtime/tracing.js';

export { TELEMETRY_OPTIONS };

/** The help lines of the telemetry options. */
export const TELEMETRY_HELP = `  --metrics-port PORT   serve Prometheus metrics: the controller itself at http://HOST:PORT/metrics,
                        the processes it starts at PORT+1, PORT+2, ... in start order (each one's
                        port is in results.json processes[].metricsPort); the URLs are printed on
                        stderr (not with --json). 0: any free ports. With --connect, only the
                        controller's
  --metrics-host HOST   the address metrics bind (default ${DEFAULT_METRICS_HOST}: this host only)
  --otlp-endpoint URL   export sampled operations as OpenTelemetry traces (a span per hop) to this
                        OTLP/gRPC collector, http://HOST:4317 (or OTEL_EXPORTER_OTLP_ENDPOINT);
                        off by default
  --trace-sample R      share of operations traced, 0..1 (default 0.01 with an endpoint)`;

export interface TreeTelemetry {
  /** The controller's metrics port; its processes get the next ones. Undefined: no metrics. */
  metricsBase: number | undefined;
  metricsHost: string | undefined;
  tracing: TracingOptions | undefined;
  /** --json: nothing on stderr but errors, so no metrics URL lines (results.json has the ports). */
  quiet: boolean;
}

/** Most processes one tree starts (64 pSMMUs, 64 VMs of a guest and a qemu each, kvm, vfio). */
const MAX_TREE_PROCESSES = 64 + 2 * 64 + 2;

/** Reads the telemetry options of a command; bad values are E_USAGE errors. */
export function treeTelemetry(values: { 'metrics-port'?: string | undefined; 'metrics-host'?: string | undefined; 'otlp-endpoint'?: string | undefined; 'trace-sample'?: string | undefined; json?: boolean | undefined }): TreeTelemetry {
  const port = values['metrics-port'];
  if (values['metrics-host'] !== undefined && port === undefined) throw new VmmsimError('E_USAGE', '--metrics-host needs --metrics-port PORT');
  const base = port === undefined ? undefined : parseMetricsPort('--metrics-port', port);
  // The whole range must exist: the last process of the largest tree takes BASE + its count.
  if (base !== undefined && base > 0 && base + MAX_TREE_PROCESSES > 65535) {
    throw new VmmsimError('E_USAGE', `--metrics-port ${base} leaves no room for the processes' ports above it (up to ${MAX_TREE_PROCESSES}); give a port <= ${65535 - MAX_TREE_PROCESSES}`);
  }
  return { metricsBase: base, metricsHost: values['metrics-host'], tracing: tracingOptions(values['otlp-endpoint'], values['trace-sample']), quiet: values.json === true };
}

/** The processes of the tree now running, for the controller's gauge. */
let treeProcesses = 0;

/**
 * Runs a command with the controller's metrics endpoint up (when --metrics-port is given): default
 * process metrics and `vmmsim_controller_processes`. Its URL is printed on stderr at start (not
 * with --json); a port in use fails the command before any process starts.
 */
export async function withControllerMetrics<T>(telemetry: TreeTelemetry | undefined, body: () => Promise<T>): Promise<T> {
  if (telemetry?.metricsBase === undefined) return body();
  const server: MetricsServer = await startMetrics({ port: telemetry.metricsBase, ...(telemetry.metricsHost ? { host: telemetry.metricsHost } : {}), role: 'controller', name: 'controller' });
  new Gauge({
    name: 'vmmsim_controller_processes',
    help: 'Role processes of the tree the controller runs now (0 between trees).',
    registers: [server.registry],
    collect(this: Gauge) {
      this.set(treeProcesses);
    },
  });
  if (!telemetry.quiet) process.stderr.write(`vmmsim: metrics: controller ${server.url}\n`);
  try {
    return await body();
  } finally {
    await server.close();
  }
}

/** A launched tree is up: prints each process's metrics URL on stderr (not with --json). */
export function treeUp(telemetry: TreeTelemetry | undefined, processes: readonly { name: string; pid: number; metricsPort?: number }[]): void {
  treeProcesses = processes.length;
  if (telemetry?.metricsBase === undefined || telemetry.quiet) return;
  const host = telemetry.metricsHost ?? DEFAULT_METRICS_HOST;
  // In port order, which is start order (processes of one role get ready in any order).
  const serving = processes.filter((p) => p.metricsPort !== undefined).sort((a, b) => (a.metricsPort as number) - (b.metricsPort as number));
  const lines = serving.map((p) => `vmmsim: metrics: ${p.name} ${metricsUrl(host, p.metricsPort as number)} (pid ${p.pid})\n`);
  process.stderr.write(lines.join(''));
}

export function treeDown(): void {
  treeProcesses = 0;
}
