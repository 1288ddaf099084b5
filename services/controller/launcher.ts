import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { VmmsimError } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import { roleEntry } from '../runtime/paths.js';
import type { ChildMessage } from '../runtime/role-runtime.js';
import { telemetryArgv } from '../runtime/role-telemetry.js';
import type { TracingOptions } from '../runtime/tracing.js';
import { RunToken, TOKEN_ENV } from '../runtime/transport/auth.js';
import { tlsArgs, type TlsFiles } from '../runtime/transport/credentials.js';
import { START_ORDER, endpointName, type Role } from '../runtime/topology.js';

export interface ProcessSpec {
  role: Role;
  index: number;
}

export interface StartedProcess extends ProcessSpec {
  name: string;
  pid: number;
  address: string;
  child: ChildProcess;
  /** Its Prometheus metrics port, when the tree serves metrics. */
  metricsPort?: number;
}

export interface LaunchOptions {
  socketDir: string;
  /**
   * The run's memory-file folder (on tmpfs). The roles are told at birth so that, if the
   * controller is killed outright, they remove it themselves even before any run was configured.
   */
  ramDir?: string;
  transport: 'unix' | 'tcp';
  logLevel: string;
  startTimeoutMs: number;
  log: Logger;
  /** Mutual TLS: every role serves and dials with these files. */
  tls?: TlsFiles | undefined;
  /**
   * Metrics and tracing of the roles: the i-th process of start()'s list serves its metrics on
   * metricsBase + 1 + i (the controller itself has metricsBase; 0 gives everyone a free port).
   */
  telemetry?: LaunchTelemetry | undefined;
  /** Options for node itself before the role's entry (`--cpu-prof`, for the benches). */
  nodeArgs?: readonly string[] | undefined;
  /** --pin: the CPU each process runs on (by name), set with taskset (util-linux) before node starts. */
  cpuOf?: ((name: string) => number | undefined) | undefined;
}

export interface LaunchTelemetry {
  metricsBase?: number | undefined;
  metricsHost?: string | undefined;
  tracing?: TracingOptions | undefined;
}

/**
 * The controller's process tree: starts role processes in dependency order, each reporting ready
 * with its address over IPC; notices any that dies; stops them in reverse order and, failing that,
 * kills them. A child that exits while the tree is up emits 'exit' with a VmmsimError naming it.
 */
export class ProcessTree extends EventEmitter<{ exit: [VmmsimError] }> {
  private readonly started: StartedProcess[] = [];
  /** Every child spawned, ready or not, so none escapes a stop. */
  private readonly children: ChildProcess[] = [];
  private stopping = false;
  /**
   * The tree's run token: every process proves its name with it, and serves only callers that do
   * (auth.ts). Handed to each child in its environment, never on its command line.
   */
  readonly token = RunToken.generate();

  constructor(private readonly opts: LaunchOptions) {
    super();
  }

  get processes(): readonly StartedProcess[] {
    return this.started;
  }

  /**
   * Starts every process at once: a process only serves until it is configured (links are opened
   * at Configure, downstream first), so nothing in a start waits for another process, and the
   * cores stay busy while each loads its modules. The list keeps the start order (START_ORDER, then
   * the order given), whatever order they became ready in.
   */
  async start(specs: readonly ProcessSpec[]): Promise<StartedProcess[]> {
    const order = (p: ProcessSpec): number => specs.findIndex((s) => s.role === p.role && s.index === p.index);
    const rank = (p: ProcessSpec): number => START_ORDER.indexOf(p.role) * specs.length + order(p);
    await Promise.all(specs.map((s, i) => this.startOne(s, i)));
    if (this.stopping) throw new VmmsimError('E_INTERRUPTED', 'stopped while starting processes');
    this.started.sort((a, b) => rank(a) - rank(b));
    return this.started;
  }

  private startOne(spec: ProcessSpec, ordinal: number): Promise<StartedProcess> {
    const name = endpointName(spec.role, spec.index);
    const listen = this.opts.transport === 'unix' ? ['--socket-dir', this.opts.socketDir] : ['--listen', '127.0.0.1:0'];
    const args = [...ROLE_NODE_ARGS, ...(this.opts.nodeArgs ?? []), roleEntry(), '--role', spec.role, '--index', String(spec.index), ...listen, '--log-level', this.opts.logLevel, ...(this.opts.ramDir ? ['--ram-dir', this.opts.ramDir] : []), ...tlsArgs(this.opts.tls), ...this.telemetryArgs(ordinal)];
    const [file, argv] = pinnedCommand(this.opts.cpuOf?.(name), process.execPath, args);
    return new Promise<StartedProcess>((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn(file, argv, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env: { ...process.env, [TOKEN_ENV]: this.token.toText() } });
        this.children.push(child);
      } catch (err) {
        reject(new VmmsimError('E_SPAWN', `cannot start ${name}: ${(err as Error).message}`));
        return;
      }
      let ready = false;
      const timer = setTimeout(() => {
        reject(new VmmsimError('E_START_TIMEOUT', `${name} (pid ${child.pid ?? '?'}) did not report ready within ${this.opts.startTimeoutMs} ms`));
      }, this.opts.startTimeoutMs);
      child.on('message', (m: ChildMessage) => {
        if (m.type === 'failed' && !ready) {
          clearTimeout(timer);
          reject(new VmmsimError(m.code, m.message, m.fix));
        }
        if (m.type !== 'ready' || ready) return;
        ready = true;
        clearTimeout(timer);
        const p: StartedProcess = { ...spec, name, pid: child.pid ?? m.pid, address: m.address, child, ...(m.metricsPort !== undefined ? { metricsPort: m.metricsPort } : {}) };
        this.started.push(p);
        this.opts.log.debug({ name, pid: p.pid, address: p.address }, 'process ready');
        resolve(p);
      });
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(new VmmsimError('E_SPAWN', `cannot start ${name}: ${err.message}`));
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        const err = new VmmsimError('E_PROCESS_EXITED', `${name} (pid ${child.pid}) ${how}`);
        // A child that could not start says why over IPC just before it exits: the channel closes
        // after that message is read, so its reason wins over this generic one.
        if (!ready && child.connected) child.once('disconnect', () => reject(err));
        else if (!ready) reject(err);
        else if (!this.stopping) this.emit('exit', err);
      });
    });
  }

  private telemetryArgs(ordinal: number): string[] {
    const t = this.opts.telemetry;
    if (!t) return [];
    // A base of 0 asks for any free ports, for the controller and every process alike.
    const metricsPort = t.metricsBase === undefined ? undefined : t.metricsBase === 0 ? 0 : t.metricsBase + 1 + ordinal;
    return telemetryArgv({ metricsPort, metricsHost: t.metricsHost, tracing: t.tracing });
  }

  /**
   * Stops every process: SIGTERM to all of them, last started first, then one grace period for
   * all, then SIGKILL for any still there. One shared grace keeps a stop within it however many
   * processes are stopped or wedged, where one grace each would add up.
   */
  async stop(graceMs = 2000): Promise<void> {
    this.stopping = true;
    const order = [...this.started.map((p) => p.child)].reverse();
    for (const c of this.children) if (!order.includes(c)) order.unshift(c);
    // A child that never got a pid (a failed spawn) has no exit to wait for.
    const live = order.filter((c) => alive(c) && c.pid !== undefined);
    const gone = live.map((c) => new Promise<void>((resolve) => c.once('exit', () => resolve())));
    for (const c of live) c.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([Promise.all(gone), late]);
    clearTimeout(timer);
    for (const c of live) if (alive(c)) c.kill('SIGKILL');
    await Promise.all(gone);
  }

  /** Last resort on the way out of the controller: SIGKILL everything still alive, synchronously. */
  killAll(): void {
    this.stopping = true;
    for (const c of this.children) if (alive(c)) c.kill('SIGKILL');
  }
}

/**
 * Node and V8 options of every launched role. A role's young generation may otherwise grow to 16
 * MiB per semi-space while a run allocates its short-lived messages, which took each of the 26
 * processes of a large tree from about 65 to 85 MB of RSS; at 2 MiB its scavenges stay short and
 * its RSS near 70 MB. One V8 helper thread (compiler, GC) instead of four: a role is one event loop,
 * and on a machine of a few cores shared by tens of processes more helpers only hold more memory
 * (\`npm run bench -- scale\`, docs/benchmarks.md).
 */
export const ROLE_NODE_ARGS: readonly string[] = ['--max-semi-space-size=2', '--v8-pool-size=1'];

/**
 * The command that starts `file args` on one CPU: taskset (util-linux) sets the affinity and execs
 * it, so the child keeps its pid and every thread it starts inherits the CPU. Unpinned: as given.
 */
export function pinnedCommand(cpu: number | undefined, file: string, args: readonly string[]): [string, string[]] {
  return cpu === undefined ? [file, [...args]] : ['taskset', ['-c', String(cpu), file, ...args]];
}

function alive(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}
