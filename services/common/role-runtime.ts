import * as grpc from '@grpc/grpc-js';
import { existsSync, rmSync, rmdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { parseArgs } from 'node:util';
import { CostTable } from './cost/steps.js';
import { ERROR_CODE_METADATA, ERROR_FIX_METADATA, Errno, VmmsimError, type ErrorCode } from './errors.js';
import type { ControlHandlers } from './generated/vmmsim/v1/Control.js';
import type { Envelope__Output } from './generated/vmmsim/v1/Envelope.js';
import type { StartReply } from './generated/vmmsim/v1/StartReply.js';
import type { Topology__Output } from './generated/vmmsim/v1/Topology.js';
import { createLogger, resolveLogLevel, type Logger } from './logger.js';
import type { Registry } from './metrics.js';
import { OpContext } from './op-context.js';
import { loadPeersFile, type PeersFile } from './peers.js';
import { protos } from './proto.js';
import { EMPTY, type RoleFactory, type RoleInstance } from './role-api.js';
import { TELEMETRY_OPTIONS, startRoleTelemetry, telemetryArgs, type TelemetryArgs } from './role-telemetry.js';
import { DOWNSTREAM, EndpointTable, endpointName, isRole, type Endpoint, type Role } from './topology.js';
import type { OpTracing } from './tracing.js';
import { INSECURE, TLS_OPTIONS, mutualTls, tlsFiles, type Security, type TlsFiles } from './transport/credentials.js';
import { LinkClient, linkService, type ReplyBody } from './transport/link.js';
import { linkMetrics } from './transport/link-metrics.js';
import { serve, shutdown, type Listen } from './transport/server.js';

/** Messages a child sends its parent over the IPC channel: ready (with its metrics port, if any), or why it could not start. */
export type ChildMessage =
  | { type: 'ready'; address: string; pid: number; name: string; metricsPort?: number }
  | { type: 'failed'; code: ErrorCode; message: string; fix: string };

async function loadRole(role: Role): Promise<RoleFactory> {
  const mod = (await import(`../${role}/index.js`)) as { createRole: RoleFactory };
  return mod.createRole;
}

/** The state of one configured run inside a role process. */
interface Configured {
  topology: Topology__Output;
  self: Endpoint;
  endpoints: EndpointTable;
  costs: CostTable;
  instance: RoleInstance;
  links: Map<string, LinkClient>;
}

/**
 * How a role reaches its peers: its credentials, and (`vmmsim serve --peers`) the addresses and
 * memory folder of its own network and filesystem, which win over those the controller sent.
 */
export interface RoleNet {
  security?: Security;
  peers?: PeersFile;
}

/** One role process: its server, its links, its model, and its lifecycle. */
export class RoleProcess {
  private configured: Configured | undefined;
  /** The controller's memory-file folder (given at birth, or by the last run configured; see orphaned()). */
  private ramDir: string;
  private readonly emptyStart: StartReply = { ops: [], hops: [], elapsedSec: 0, modeledElapsedNs: 0, guestCommands: 0 };

  constructor(
    readonly role: Role,
    readonly index: number,
    private readonly factory: RoleFactory,
    readonly log: Logger,
    ramDir?: string,
    private readonly net: RoleNet = {},
    private readonly telemetry: { metrics?: Registry | undefined; tracing?: OpTracing | undefined } = {},
  ) {
    this.ramDir = ramDir ?? '';
    this.opLogs = log.isLevelEnabled('debug');
  }

  /** Per-request log lines (with a child logger per opId) only at debug level or below. */
  private readonly opLogs: boolean;

  get name(): string {
    return endpointName(this.role, this.index);
  }

  private async configure(sent: Topology__Output): Promise<void> {
    await this.teardown();
    const ramDir = this.net.peers?.ramDir ?? sent.ramDir;
    const topology = ramDir === sent.ramDir ? sent : { ...sent, ramDir };
    // Not created here: a late Configure would bring back a folder its controller just removed.
    if (ramDir && !existsSync(ramDir)) {
      throw new VmmsimError(
        'E_RAM_DIR',
        `the memory folder ${ramDir} does not exist on ${hostname()} (${this.name}): every role must see the controller's folder, or the ramDir of its --peers file`,
        `create or mount ${ramDir} on ${hostname()}, or set ramDir in the --peers file`,
      );
    }
    const endpoints = new EndpointTable(topology.endpoints);
    const self = endpoints.name(this.name);
    if (!self) throw new Error(`${this.name} is not in the topology`);
    const costs = new CostTable(topology.costsNs);
    const links = new Map<string, LinkClient>();
    const deadlineMs = topology.deadlineMs || 10_000;
    const peers: Endpoint[] = [];
    for (const role of DOWNSTREAM[this.role]) peers.push(...endpoints.ofRole(role));
    try {
      await Promise.all(
        peers.map(async (peer) => {
          const address = this.net.peers?.endpoints.find((e) => e.name === peer.name)?.address ?? peer.address;
          const link = new LinkClient({ selfId: self.id, selfName: self.name, peerId: peer.id, peerName: peer.name }, address, deadlineMs, this.net.security);
          links.set(peer.name, link);
          if (this.telemetry.metrics) link.observeWith(linkMetrics(this.telemetry.metrics).forLink(self.name, peer.name));
          await link.open();
        }),
      );
    } catch (err) {
      for (const l of links.values()) l.close();
      throw err;
    }
    const log = this.log;
    const instance = this.factory({
      self,
      topology,
      endpoints,
      costs,
      log,
      peers: [...links.keys()],
      newContext: (opId, modeledNs) => new OpContext(opId, modeledNs, costs, links),
      metrics: this.telemetry.metrics,
      tracing: this.telemetry.tracing,
    });
    try {
      await instance.init?.();
    } catch (err) {
      for (const l of links.values()) l.close();
      await instance.close?.();
      throw err;
    }
    this.configured = { topology, self, endpoints, costs, instance, links };
    this.ramDir = topology.ramDir;
    log.debug({ model: topology.model, peers: [...links.keys()] }, 'configured');
  }

  private async teardown(): Promise<void> {
    const c = this.configured;
    this.configured = undefined;
    if (!c) return;
    for (const l of c.links.values()) l.close();
    try {
      await c.instance.close?.();
    } catch (err) {
      this.log.warn({ err }, 'closing the run failed');
    }
  }

  /** Serves one link request. Never rejects: a failure becomes an errno status. */
  private readonly handleRequest = async (env: Envelope__Output): Promise<ReplyBody> => {
    // ECHO times a bare hop: the runtime answers it itself, with no model in the way.
    if (env.kind === 'ECHO') return { status: 0, payload: env.payload, modeledNs: env.modeledNs, hops: [] };
    const c = this.configured;
    if (!c) return { status: -Errno.ENODEV, payload: EMPTY, modeledNs: env.modeledNs, hops: [] };
    const inbound = env.hops[env.hops.length - 1];
    const from = (inbound && c.endpoints.id(inbound.from)) ?? c.self;
    const ctx = new OpContext(env.opId, env.modeledNs, c.costs, c.links);
    if (this.opLogs) this.log.child({ opId: env.opId }).debug({ kind: env.kind, from: from.name }, 'request');
    try {
      const r = await c.instance.handle(env, ctx, from);
      return { status: r.status, payload: r.payload, guestMemory: r.guestMemory ?? [], modeledNs: ctx.modeledNs, hops: ctx.trace, holds: ctx.holds };
    } catch (err) {
      this.log.error({ err, kind: env.kind, opId: env.opId }, 'request failed');
      return { status: -Errno.EIO, payload: EMPTY, modeledNs: ctx.modeledNs, hops: ctx.trace, holds: ctx.holds };
    }
  };

  controlService(): ControlHandlers {
    const unaryError = (err: unknown): grpc.ServiceError => {
      const e = err instanceof Error ? err : new Error(String(err));
      const metadata = new grpc.Metadata();
      // The controller reports a vmmsim error under its own code and fix, not as a bare E_RUN.
      if (e instanceof VmmsimError) {
        metadata.set(ERROR_CODE_METADATA, e.code);
        // Binary: a fix may name a path or host outside printable ASCII.
        metadata.set(ERROR_FIX_METADATA, Buffer.from(e.fix, 'utf8'));
      }
      return Object.assign(new Error(e.message), { code: grpc.status.INTERNAL, details: e.message, metadata });
    };
    return {
      Configure: (call, cb) => {
        this.configure(call.request).then(
          () => cb(null, { name: this.name }),
          (err: unknown) => cb(unaryError(err)),
        );
      },
      Start: (_call, cb) => {
        const c = this.configured;
        if (!c) return cb(unaryError(new Error(`${this.name} is not configured`)));
        if (!c.instance.start) return cb(null, this.emptyStart);
        c.instance.start().then(
          (r) => cb(null, r),
          (err: unknown) => cb(unaryError(err)),
        );
      },
      Stats: (_call, cb) => {
        cb(null, { name: this.name, counters: this.configured?.instance.stats() ?? {}, pid: process.pid, host: hostname() });
      },
      Stop: (_call, cb) => {
        void this.teardown().then(() => cb(null, {}));
      },
    };
  }

  /** The Link service: replies are stamped with this process's endpoint id in the current topology. */
  linkHandlers(): ReturnType<typeof linkService> {
    return linkService(() => this.configured?.self.id ?? 0, this.handleRequest, (err) => this.log.error({ err }, 'link handler failed'));
  }

  /**
   * The controller died without stopping the run (SIGKILL): nobody else will remove the run's
   * memory files, which live on tmpfs and hold RAM, so every orphaned role removes the folder
   * (they race harmlessly; files still mapped by a sibling vanish when it exits).
   */
  orphaned(): void {
    if (!this.ramDir) return;
    try {
      // A sibling may still be closing its files in there: retry on ENOTEMPTY/EBUSY.
      rmSync(this.ramDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
    } catch (err) {
      // Whatever is left, the process must still stop.
      this.log.warn({ err, ramDir: this.ramDir }, 'could not remove the run\'s memory files');
    }
  }

  close(): Promise<void> {
    return this.teardown();
  }
}

/**
 * Removes this process's socket file and, if it was the last, the private socket folder: when the
 * controller was killed outright nobody else is left to clean up.
 */
function removeSocket(listen: Listen): void {
  // A socket file a user named is ours to remove, its folder is not.
  if (listen.kind === 'path') rmSync(listen.path, { force: true });
  if (listen.kind !== 'unix') return;
  rmSync(join(listen.dir, `${listen.name}.sock`), { force: true });
  try {
    rmdirSync(listen.dir);
  } catch {
    // not empty yet (a sibling is still up) or already gone
  }
}

export interface RoleArgs {
  role: Role;
  index: number;
  listen: Listen;
  logLevel: string | undefined;
  /** The controller's memory-file folder for this tree, removed if the controller dies. */
  ramDir: string | undefined;
  /** --peers FILE: addresses (and memory folder) to use instead of those the controller sends. */
  peers: string | undefined;
  tls: TlsFiles | undefined;
  /** --metrics-port, --metrics-host, --otlp-endpoint, --trace-sample. */
  telemetry: TelemetryArgs;
}

export function parseRoleArgs(argv: string[]): RoleArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      role: { type: 'string' },
      index: { type: 'string', default: '0' },
      'socket-dir': { type: 'string' },
      listen: { type: 'string' },
      'log-level': { type: 'string' },
      'ram-dir': { type: 'string' },
      peers: { type: 'string' },
      ...TLS_OPTIONS,
      ...TELEMETRY_OPTIONS,
    },
    strict: true,
  });
  const role = values.role ?? '';
  if (!isRole(role)) throw new Error(`--role must be one of guest, kvm, qemu, vfio, psmmu (got "${role}")`);
  const index = Number(values.index);
  if (!Number.isInteger(index) || index < 0) throw new Error(`--index must be an integer >= 0 (got "${values.index}")`);
  let listen: Listen;
  if (values.listen?.startsWith('unix:')) {
    const path = values.listen.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    if (!isAbsolute(path)) throw new Error(`--listen unix:PATH needs an absolute path (got "${values.listen}")`);
    listen = { kind: 'path', path };
  } else if (values.listen) {
    const m = /^(.+):(\d{1,5})$/.exec(values.listen);
    if (!m || m[1] === undefined || m[2] === undefined || Number(m[2]) > 65535) throw new Error(`--listen must be HOST:PORT or unix:/abs/path.sock (got "${values.listen}")`);
    listen = { kind: 'tcp', host: m[1], port: Number(m[2]) };
  } else if (values['socket-dir']) {
    listen = { kind: 'unix', dir: values['socket-dir'], name: endpointName(role, index) };
  } else {
    throw new Error('one of --socket-dir DIR or --listen HOST:PORT is required');
  }
  return { role, index, listen, logLevel: values['log-level'], ramDir: values['ram-dir'], peers: values.peers, tls: tlsFiles(values), telemetry: telemetryArgs(values) };
}

/**
 * Runs a role process until it is told to stop. Started by a controller, it reports ready over
 * the IPC channel and exits as soon as that channel closes (the controller is gone, however it
 * died), so no role process outlives its controller.
 */
export async function runRoleProcess(argv: string[]): Promise<void> {
  return startRole(parseRoleArgs(argv));
}

/**
 * Starts a role process from its arguments. With no parent (`vmmsim serve`) it prints its ready
 * line on stdout and runs until SIGTERM or SIGINT.
 */
export async function startRole(args: RoleArgs): Promise<void> {
  const name = endpointName(args.role, args.index);
  const log = createLogger({ role: args.role, name }, resolveLogLevel(args.logLevel));
  // First: a metrics port already in use fails the start before anything else is set up.
  const telemetry = await startRoleTelemetry(args.role, name, args.telemetry, log);
  const factory = await loadRole(args.role);
  const security = args.tls ? mutualTls(args.tls) : INSECURE;
  const peers = args.peers === undefined ? undefined : loadPeersFile(args.peers);
  const proc = new RoleProcess(args.role, args.index, factory, log, args.ramDir, { security, ...(peers ? { peers } : {}) }, { metrics: telemetry.registry, tracing: telemetry.tracing });
  const p = protos();
  const served = await serve(args.listen, (server) => {
    server.addService(p.control.vmmsim.v1.Control.service, proc.controlService());
    server.addService(p.link.vmmsim.v1.Link.service, proc.linkHandlers());
  }, security);

  let stopping = false;
  const stop = (code: number, why: string): void => {
    if (stopping) return;
    stopping = true;
    log.debug({ why }, 'stopping');
    served.health.setStatus('', 'NOT_SERVING');
    void Promise.all([proc.close().then(() => telemetry.close()), shutdown(served.server)]).finally(() => {
      removeSocket(args.listen);
      process.exit(code);
    });
    setTimeout(() => process.exit(code), 1500).unref();
  };
  process.on('SIGTERM', () => stop(0, 'SIGTERM'));
  if (process.send) {
    // The controller owns the run: a terminal's Ctrl-C reaches the whole process group, and the
    // controller decides the order of shutdown, so a child ignores SIGINT while it has a parent.
    process.on('SIGINT', () => undefined);
    const orphaned = (): void => {
      if (stopping) return;
      proc.orphaned();
      stop(0, 'parent gone');
    };
    process.on('disconnect', orphaned);
    const parent = process.ppid;
    // A second guard in case the IPC channel is not noticed: reparenting means the parent died.
    setInterval(() => {
      if (process.ppid !== parent) orphaned();
    }, 500).unref();
  } else {
    process.on('SIGINT', () => stop(0, 'SIGINT'));
  }
  served.health.setStatus('', 'SERVING');
  const ready: ChildMessage = { type: 'ready', address: served.address, pid: process.pid, name, ...(telemetry.metrics ? { metricsPort: telemetry.metrics.port } : {}) };
  if (process.send) process.send(ready);
  // The same facts for whoever started `vmmsim serve`; the metrics port only when metrics are on.
  else process.stdout.write(JSON.stringify({ name, address: served.address, pid: process.pid, ...(telemetry.metrics ? { metricsPort: telemetry.metrics.port } : {}) }) + '\n');
  log.debug({ address: served.address }, 'ready');
}
