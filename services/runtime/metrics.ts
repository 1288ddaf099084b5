/**
 * Prometheus metrics of one vmmsim process (a role or the controller): a registry of its own with
 * prom-client's default process metrics, served as text at http://HOST:PORT/metrics.
 *
 * Two kinds of instruments keep the data path cheap. What only the hot path knows (a hop's
 * latency) goes to prom-client children made once per label set. What a role already counts in
 * plain numbers (commands, invalidations, events) is read when Prometheus scrapes
 * (`totalsCounter`), so a message costs no prom-client call for it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { VmmsimError } from './errors.js';
import { DEFAULT_METRICS_HOST, metricsUrl } from './metrics-options.js';

export { DEFAULT_METRICS_HOST, metricsUrl, parseMetricsPort } from './metrics-options.js';

export type { Registry };

export interface MetricsOptions {
  /** TCP port; 0 lets the system pick a free one. */
  port: number;
  /** Address to bind; default 127.0.0.1. */
  host?: string;
  role: string;
  /** The process's name (psmmu-0, controller...), for `vmmsim_process_info` and messages. */
  name: string;
}

export interface MetricsServer {
  readonly registry: Registry;
  readonly host: string;
  /** The port bound (the one asked for, or the one picked for port 0). */
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

function bindError(err: NodeJS.ErrnoException, name: string, host: string, port: number): VmmsimError {
  const where = `${host}:${port}`;
  if (err.code === 'EADDRINUSE') return new VmmsimError('E_METRICS_PORT', `${name}: metrics port ${where} is already in use`);
  if (err.code === 'EACCES') return new VmmsimError('E_METRICS_PORT', `${name}: metrics port ${where} needs privileges this process has not`);
  if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') {
    return new VmmsimError('E_METRICS_PORT', `${name}: ${host} is not an address of this host (--metrics-host)`);
  }
  return new VmmsimError('E_METRICS_PORT', `${name}: cannot serve metrics on ${where}: ${err.message}`);
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Starts the process's registry (default process metrics and `vmmsim_process_info`) and its HTTP
 * endpoint. A port that cannot be bound is an E_METRICS_PORT VmmsimError naming it. The server
 * never keeps the process alive on its own.
 */
export async function startMetrics(opts: MetricsOptions): Promise<MetricsServer> {
  const host = opts.host ?? DEFAULT_METRICS_HOST;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({ name: 'vmmsim_process_info', help: 'This vmmsim process: its role and name (always 1).', labelNames: ['role', 'name'], registers: [registry] })
    .labels(opts.role, opts.name)
    .set(1);
  const server = createServer((req, res) => answer(registry, req, res));
  try {
    await listen(server, host, opts.port);
  } catch (err) {
    throw bindError(err as NodeJS.ErrnoException, opts.name, host, opts.port);
  }
  server.unref();
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    registry,
    host,
    port,
    url: metricsUrl(host, port),
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        // A scraper's keep-alive connection would hold close() open until it times out.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function answer(registry: Registry, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/metrics') {
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('vmmsim serves its metrics at /metrics\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('GET /metrics\n');
    return;
  }
  registry.metrics().then(
    (text) => {
      res.writeHead(200, { 'Content-Type': registry.contentType });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    (err: unknown) => {
      res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`collecting metrics failed: ${err instanceof Error ? err.message : String(err)}\n`);
    },
  );
}

/** Emits each label set's total so far. */
export type TotalsReader = (emit: (labels: readonly string[], total: number) => void) => void;

/**
 * A counter family fed from totals the process keeps in plain numbers, read at scrape time: the
 * hot path only increments a number. Each scrape adds what each label set's total grew by since
 * the previous scrape; totals must never go down (RunTotals keeps them across runs).
 */
export function totalsCounter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[], read: TotalsReader): Counter<L> {
  const seen = new Map<string, { total: number; child: Counter.Internal }>();
  return new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect(this: Counter<L>) {
      read((labels, total) => {
        const key = labels.join('\u0000');
        let s = seen.get(key);
        if (!s) {
          s = { total: 0, child: this.labels(...labels) };
          seen.set(key, s);
          // A label set shows from its first scrape, at 0 if nothing happened yet.
          s.child.inc(0);
        }
        if (total > s.total) {
          s.child.inc(total - s.total);
          s.total = total;
        }
      });
    },
  });
}

/**
 * A process's totals over the runs it serves. Each run (a configured role instance) keeps its own
 * counts from zero; the run in progress is read live through `read`, and a run that ends is added
 * to the base, so the totals never go back when the next run starts.
 */
export class RunTotals<S> {
  private readonly base = new Map<string, number>();
  private source: S | undefined;

  constructor(private readonly read: (source: S, emit: (key: string, value: number) => void) => void) {}

  /** The source of the run now in progress; a source still attached is folded in first. */
  attach(source: S): void {
    if (this.source !== undefined && this.source !== source) this.fold(this.source);
    this.source = source;
  }

  /** The run ended: its final counts join the base. */
  detach(source: S): void {
    if (this.source !== source) return;
    this.fold(source);
    this.source = undefined;
  }

  private fold(source: S): void {
    this.read(source, (k, v) => this.base.set(k, (this.base.get(k) ?? 0) + v));
  }

  /** Every key's total: the ended runs plus the live one. */
  totals(): Map<string, number> {
    const out = new Map(this.base);
    if (this.source !== undefined) this.read(this.source, (k, v) => out.set(k, (out.get(k) ?? 0) + v));
    return out;
  }
}

/**
 * One instrument set per registry, made on first use: role instances come and go with each run,
 * but a registry refuses a second metric of the same name.
 */
export function perRegistry<T>(make: (registry: Registry) => T): (registry: Registry) => T {
  const made = new WeakMap<Registry, T>();
  return (registry) => {
    let m = made.get(registry);
    if (m === undefined) {
      m = make(registry);
      made.set(registry, m);
    }
    return m;
  };
}
