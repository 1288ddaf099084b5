import * as grpc from '@grpc/grpc-js';
import { chmodSync, rmSync, rmdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, isAbsolute, join } from 'node:path';
import { parseArgs } from 'node:util';
import { CostTable } from '../cost/steps.js';
import { ERROR_CODE_METADATA, ERROR_FIX_METADATA, Errno, VmmsimError, type ErrorCode } from './errors.js';
import type { ControlHandlers } from './generated/vmmsim/v1/Control.js';
import type { Envelope__Output } from './generated/vmmsim/v1/Envelope.js';
import type { StartReply } from './generated/vmmsim/v1/StartReply.js';
import type { Topology__Output } from './generated/vmmsim/v1/Topology.js';
import { createLogger, resolveLogLevel, type Logger } from './logger.js';
import type { Registry } from './metrics.js';
import { OpContext } from './op-context.js';
import { runFolderProblem } from '../machine/run-folder.js';
import { checkConfigure } from '../scenario/configure-check.js';
import { loadPeersFile, type PeersFile } from './peers.js';
import { controlServiceDefinition } from './control-service.js';
import { EMPTY, type RoleFactory, type RoleInstance } from './role-api.js';
import { TELEMETRY_OPTIONS, startRoleTelemetry, telemetryArgs, type TelemetryArgs } from './role-telemetry.js';
import { DOWNSTREAM, EndpointTable, endpointName, isRole, type Endpoint, type Role } from './topology.js';
import type { OpTracing } from './tracing.js';
import { CONTROLLER, TOKEN_ENV, RunToken, admit, loadTokenFile, type CallerCheck } from './transport/auth.js';
import { INSECURE, TLS_OPTIONS, mutualTls, tlsFiles, withToken, type Security, type TlsFiles } from './transport/credentials.js';
import { FLOOR_SERVICE, FloorProbe, floorHandlers } from './transport/floor.js';
import { LinkClient, LinkServer, linkServiceDefinition, type MemoryRange, type ReplyBody } from './transport/link.js';
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
  /** The peers whose requests this process serves: endpoints of the roles that link to this one, by name. */
  upstream: Map<string, Endpoint>;
  /** Topology.floor_peer on a guest: its bare echo stream to that peer (transport/floor.ts). */
  floor: FloorProbe | undefined;
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
  /** The controller's memory-file folder, given at birth (--ram-dir): the only one a launched role maps, or removes (orphaned()). */
  private readonly birthRamDir: string;
  /** What a caller must prove (the run's token, or a certificate) before it is served. */
  private readonly callers: CallerCheck;
  private readonly linkServer: LinkServer;
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
    this.birthRamDir = ramDir ?? '';
    this.opLogs = log.isLevelEnabled('debug');
    this.callers = { token: net.security?.token, tls: net.security?.tls ?? false };
    this.linkServer = new LinkServer({
      selfId: () => this.configured?.self.id ?? 0,
      admit: (call) => admit(this.callers, call.metadata, () => call.getAuthContext()?.sslPeerCertificate),
      handle: this.handleRequest,
      onError: (err) => this.log.error({ err }, 'link handler failed'),
    });
  }

  /** Per-request log lines (with a child logger per opId) only at debug level or below. */
  private readonly opLogs: boolean;

  get name(): string {
    return endpointName(this.role, this.index);
  }

  private async configure(sent: Topology__Output): Promise<void> {
    // Every field against its bounds, and the folder against the launcher's marker, before any work.
    checkConfigure(sent, this.name);
    const local = this.net.peers?.ramDir;
    const ramDir = local ?? sent.ramDir;
    if (!local && this.birthRamDir && ramDir !== this.birthRamDir) {
      throw new VmmsimError('E_RAM_DIR', `${this.name} was started for the memory folder ${this.birthRamDir} and maps no other (Configure named ${ramDir})`);
    }
    const why = runFolderProblem(ramDir, local === undefined);
    if (why) {
      // Not created here: a late Configure would bring back a folder its controller just removed.
      const host = hostname();
      const where = why === 'does not exist' ? `does not exist on ${host} (${this.name})` : `on ${host} (${this.name}) ${why}`;
      throw new VmmsimError('E_RAM_DIR', `the memory folder ${ramDir} ${where}: every role must see the controller's folder, or the ramDir of its --peers file`, `create or mount ${ramDir} on ${host}, or set ramDir in the --peers file`);
    }
    // The sent paths, seen at this host's path of the folder (the trace sits directly in it).
    const w = sent.workload;
    const trace = w && w.trace !== '' ? join(ramDir, basename(w.trace)) : undefined;
    const topology: Topology__Output = ramDir === sent.ramDir && !trace ? sent : { ...sent, ramDir, ...(w && trace ? { workload: { ...w, trace } } : {}) };
    await this.teardown();
    const endpoints = new EndpointTable(topology.endpoints);
    const self = endpoints.name(this.name);
    if (!self) throw new VmmsimError('E_CONFIGURE', `${this.name} is not in the topology`);
    const upstream = new Map<string, Endpoint>();
    for (const role of Object.keys(DOWNSTREAM) as Role[]) {
      if (DOWNSTREAM[role].includes(this.role)) for (const e of endpoints.ofRole(role)) upstream.set(e.name, e);
    }
    const costs = new CostTable(topology.costsNs);
    const links = new Map<string, LinkClient>();
    const deadlineMs = topology.deadlineMs || 10_000;
    const downstream: Endpoint[] = [];
    for (const role of DOWNSTREAM[this.role]) downstream.push(...endpoints.ofRole(role));
    const peers = this.factory.linkPeers ? this.factory.linkPeers(topology, downstream) : downstream;
    let floor: FloorProbe | undefined;
    const closeAll = (): void => {
      for (const l of links.values()) l.close();
      floor?.close();
    };
    // The link instruments, with prom-client, only in a process that serves metrics.
    const registry = this.telemetry.metrics;
    const instruments = registry ? (await import('./transport/link-metrics.js')).linkMetrics(registry) : undefined;
    try {
      await Promise.all(
        peers.map(async (peer) => {
          const address = this.net.peers?.endpoints.find((e) => e.name === peer.name)?.address ?? peer.address;
          const link = new LinkClient({ selfId: self.id, selfName: self.name, peerId: peer.id, peerName: peer.name }, address, deadlineMs, this.net.security);
          links.set(peer.name, link);
          if (instruments) link.observeWith(instruments.forLink(self.name, peer.name));
          await link.open();
        }),
      );
      floor = await this.openFloor(topology, self, endpoints);
    } catch (err) {
      closeAll();
      throw err;
    }
    const log = this.log;
    let instance: RoleInstance;
    try {
      instance = await this.factory({
        self,
        topology,
        endpoints,
        costs,
        log,
        peers: [...links.keys()],
        newContext: (opId, modeledNs) => new OpContext(opId, modeledNs, costs, links),
        metrics: this.telemetry.metrics,
        tracing: this.telemetry.tracing,
        ...(floor ? { floorRoundTrip: () => (floor as FloorProbe).roundTrip() } : {}),
      });
    } catch (err) {
      closeAll();
      throw err;
    }
    try {
      await instance.init?.();
    } catch (err) {
      closeAll();
      await instance.close?.();
      throw err;
    }
    this.configured = { topology, self, endpoints, costs, instance, links, upstream, floor };
    log.debug({ model: topology.model, peers: [...links.keys()] }, 'configured');
  }

  /**
   * Topology.floor_peer: a guest opens a bare echo stream to that peer (the same address and
   * credentials as its link), which it times between operations. Other roles ignore it.
   */
  private async openFloor(topology: Topology__Output, self: Endpoint, endpoints: EndpointTable): Promise<FloorProbe | undefined> {
    if (this.role !== 'guest' || topology.floorPeer === '') return undefined;
    const peer = endpoints.name(topology.floorPeer);
    if (!peer) throw new VmmsimError('E_CONFIGURE', `floor_peer ${topology.floorPeer} is not in the topology`);
    const address = this.net.peers?.endpoints.find((e) => e.name === peer.name)?.address ?? peer.address;
    return FloorProbe.open(self.name, peer.name, address, this.net.security);
  }

  private async teardown(): Promise<void> {
    const c = this.configured;
    this.configured = undefined;
    // The streams of the last run go with it: its peers open new ones for the next.
    this.linkServer.closeAll();
    if (!c) return;
    c.floor?.close();
    for (const l of c.links.values()) l.close();
    try {
      await c.instance.close?.();
    } catch (err) {
      this.log.warn({ err }, 'closing the run failed');
    }
  }

  /**
   * Serves one link request from `peer`, the name its stream proved at open. Never rejects: a
   * failure becomes an errno status. Only the roles that link to this one are served, whatever the
   * request's hop records say.
   */
  private readonly handleRequest = async (env: Envelope__Output, peer: string): Promise<ReplyBody> => {
    // ECHO times a bare hop: the runtime answers it itself, with no model in the way; a relay ECHO
    // (the path bench) goes on down its route through the runtime's links first.
    if (env.kind === 'ECHO') return this.echo(env);
    const c = this.configured;
    if (!c) return { status: -Errno.ENODEV, payload: EMPTY, modeledNs: env.modeledNs, hops: [] };
    const from = c.upstream.get(peer);
    if (!from) return { status: -Errno.EPERM, payload: EMPTY, modeledNs: env.modeledNs, hops: [] };
    const ctx = new OpContext(env.opId, env.modeledNs, c.costs, c.links);
    if (env.explain) ctx.explain();
    if (this.opLogs) this.log.child({ opId: env.opId }).debug({ kind: env.kind, from: from.name }, 'request');
    let r: { status: number; payload: Buffer; guestMemory?: MemoryRange[] };
    try {
      r = await c.instance.handle(env, ctx, from);
    } catch (err) {
      this.log.error({ err, kind: env.kind, opId: env.opId }, 'request failed');
      r = { status: -Errno.EIO, payload: EMPTY };
    }
    return {
      status: r.status,
      payload: r.payload,
      guestMemory: r.guestMemory ?? [],
      modeledNs: ctx.modeledNs,
      hops: ctx.trace,
      holds: ctx.holds,
      // What modeledNs and the holds are made of since the request arrived (the caller adds its own counts).
      provenance: ctx.provenance(),
      branched: ctx.branched,
      ...(ctx.explaining ? { explained: ctx.explained() } : {}),
    };
  };

  /**
   * ECHO: the payload back. A payload `relay:NAME[,NAME...]` (at most RELAY_MAX names) is first
   * sent on down the route, each name a peer this process links to, through the same context and
   * links a model's calls use: a path's hops with no model in them (`npm run bench -- path`).
   */
  private async echo(env: Envelope__Output): Promise<ReplyBody> {
    const route = relayRoute(env.payload);
    if (route === undefined) return { status: 0, payload: env.payload, modeledNs: env.modeledNs, hops: [] };
    const c = this.configured;
    if (!c || route.next === undefined || !c.links.has(route.next)) return { status: -Errno.EINVAL, payload: EMPTY, modeledNs: env.modeledNs, hops: [] };
    const ctx = new OpContext(env.opId, env.modeledNs, c.costs, c.links);
    const r = await ctx.call(route.next, 'ECHO', route.rest);
    return { status: r.status, payload: env.payload, modeledNs: ctx.modeledNs, hops: ctx.trace, holds: ctx.holds };
  }

  /** The status that refuses a control call from anyone but the controller, or undefined to serve it. */
  private controlRefusal(call: grpc.ServerUnaryCall<unknown, unknown>): grpc.ServiceError | undefined {
    const a = admit(this.callers, call.metadata, () => call.getAuthContext()?.sslPeerCertificate);
    if (!('code' in a) && a.name === CONTROLLER) return undefined;
    const code = 'code' in a ? a.code : grpc.status.PERMISSION_DENIED;
    const details = 'code' in a ? a.details : `${a.name} is not the controller: only the controller configures, starts, reads and stops ${this.name}`;
    return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
  }

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
        const refused = this.controlRefusal(call);
        if (refused) return cb(refused);
        this.configure(call.request).then(
          () => cb(null, { name: this.name }),
          (err: unknown) => cb(unaryError(err)),
        );
      },
      Start: (call, cb) => {
        const refused = this.controlRefusal(call);
        if (refused) return cb(refused);
        const c = this.configured;
        if (!c) return cb(unaryError(new Error(`${this.name} is not configured`)));
        if (!c.instance.start) return cb(null, this.emptyStart);
        c.instance.start().then(
          (r) => cb(null, r),
          (err: unknown) => cb(unaryError(err)),
        );
      },
      Stats: (call, cb) => {
        const refused = this.controlRefusal(call);
        if (refused) return cb(refused);
        cb(null, { name: this.name, counters: this.configured?.instance.stats() ?? {}, pid: process.pid, host: hostname() });
      },
      Stop: (call, cb) => {
        const refused = this.controlRefusal(call);
        if (refused) return cb(refused);
        void this.teardown().then(() => cb(null, {}));
      },
    };
  }

  /** The Link service: replies are stamped with this process's endpoint id in the current topology. */
  linkHandlers(): ReturnType<LinkServer['handlers']> {
    return this.linkServer.handlers();
  }

  /** The bare echo stream the transport floor is timed on (transport/floor.ts), for proved callers only. */
  floorHandlers(): ReturnType<typeof floorHandlers> {
    return floorHandlers((call) => admit(this.callers, call.metadata, () => call.getAuthContext()?.sslPeerCertificate));
  }

  /**
   * The controller died without stopping the run (SIGKILL): nobody else will remove the run's
   * memory files, which live on tmpfs and hold RAM, so every orphaned role removes the folder
   * (they race harmlessly; files still mapped by a sibling vanish when it exits).
   */
  orphaned(): void {
    // Only the folder the launcher named at birth: a Configure never chooses what is removed.
    if (!this.birthRamDir) return;
    try {
      // A sibling may still be closing its files in there: retry on ENOTEMPTY/EBUSY.
      rmSync(this.birthRamDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
    } catch (err) {
      // Whatever is left, the process must still stop.
      this.log.warn({ err, ramDir: this.birthRamDir }, 'could not remove the run\'s memory files');
    }
  }

  close(): Promise<void> {
    return this.teardown();
  }
}

/** An ECHO payload that asks to be relayed: `relay:` and the names of the processes still to cross. */
export const RELAY_PREFIX = 'relay:';
/** Names a relay route may hold: a path crosses at most a handful of processes. */
const RELAY_MAX = 8;

/** A relay ECHO's next hop and the payload it passes on (the names after it). */
interface RelayStep {
  next: string | undefined;
  rest: Buffer;
}

/** Routes already parsed, by payload: a relay sends the same one every time (bounded: a peer cannot grow it). */
const relayRoutes = new Map<string, RelayStep>();
const RELAY_ROUTES_MAX = 64;

/** The route of a relay ECHO, or undefined for a plain one. */
function relayRoute(payload: Buffer): RelayStep | undefined {
  if (payload.length > 256 || payload.toString('latin1', 0, RELAY_PREFIX.length) !== RELAY_PREFIX) return undefined;
  const key = payload.toString('latin1', RELAY_PREFIX.length);
  const known = relayRoutes.get(key);
  if (known) return known;
  const names = key.split(',');
  const [next, ...rest] = names.length <= RELAY_MAX ? names : [];
  const step: RelayStep = { next, rest: rest.length > 0 ? Buffer.from(`${RELAY_PREFIX}${rest.join(',')}`) : EMPTY };
  if (relayRoutes.size < RELAY_ROUTES_MAX) relayRoutes.set(key, step);
  return step;
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
  /** --token-file FILE: the run's shared secret every caller proves its name with. */
  tokenFile: string | undefined;
  /** --insecure: serve TCP callers with neither a token nor TLS (they are taken at their word). */
  insecure: boolean;
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
      'token-file': { type: 'string' },
      insecure: { type: 'boolean' },
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
  if (values['ram-dir'] !== undefined && !isAbsolute(values['ram-dir'])) throw new Error(`--ram-dir must be an absolute path (got "${values['ram-dir']}")`);
  if (values.insecure && values['token-file'] !== undefined) throw new Error('--insecure and --token-file contradict each other: give one');
  return {
    role, index, listen, logLevel: values['log-level'], ramDir: values['ram-dir'], peers: values.peers, tls: tlsFiles(values),
    tokenFile: values['token-file'], insecure: values.insecure ?? false, telemetry: telemetryArgs(values),
  };
}

/**
 * The run's token: a launched role's from its environment (removed at once, so nothing it starts
 * inherits it), a standalone role's from --token-file.
 */
function runToken(args: RoleArgs): RunToken | undefined {
  const fromEnv = process.env[TOKEN_ENV];
  delete process.env[TOKEN_ENV];
  if (fromEnv !== undefined) return RunToken.fromText(fromEnv, `the ${TOKEN_ENV} environment variable`);
  return args.tokenFile === undefined ? undefined : loadTokenFile(args.tokenFile);
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
  const security = withToken(args.tls ? mutualTls(args.tls) : INSECURE, runToken(args));
  const peers = args.peers === undefined ? undefined : loadPeersFile(args.peers);
  if (!security.token && !security.tls && args.listen.kind === 'tcp') {
    if (!args.insecure) {
      throw new VmmsimError('E_INSECURE', `${name} would serve ${args.listen.host}:${args.listen.port} to anyone who can reach it: it needs --token-file FILE or mutual TLS (or --insecure to allow that)`);
    }
    // Said on stderr whatever the log level: the operator chose to trust the network.
    process.stderr.write(`vmmsim: WARNING: ${name} runs with --insecure: anyone who can reach ${args.listen.host}:${args.listen.port} can configure it, run workloads on it and act as any role it serves; use --token-file or mutual TLS beyond a private network (docs/security.md)\n`);
  }
  const proc = new RoleProcess(args.role, args.index, factory, log, args.ramDir, { security, ...(peers ? { peers } : {}) }, { metrics: telemetry.registry, tracing: telemetry.tracing });
  const served = await serve(args.listen, (server) => {
    server.addService(controlServiceDefinition(), proc.controlService() as unknown as grpc.UntypedServiceImplementation);
    server.addService(linkServiceDefinition(), proc.linkHandlers());
    server.addService(FLOOR_SERVICE, proc.floorHandlers());
  }, security);
  // A socket file a user named is private to this user, as the launcher's 0700 folder makes its own.
  if (args.listen.kind === 'path') chmodSync(args.listen.path, 0o600);

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
