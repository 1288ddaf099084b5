import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { VmmsimError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { roleEntry } from '../common/paths.js';
import type { ChildMessage } from '../common/role-runtime.js';
import { START_ORDER, endpointName, type Role } from '../common/topology.js';

export interface ProcessSpec {
  role: Role;
  index: number;
}

export interface StartedProcess extends ProcessSpec {
  name: string;
  pid: number;
  address: string;
  child: ChildProcess;
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

  constructor(private readonly opts: LaunchOptions) {
    super();
  }

  get processes(): readonly StartedProcess[] {
    return this.started;
  }

  async start(specs: readonly ProcessSpec[]): Promise<StartedProcess[]> {
    for (const role of START_ORDER) {
      const group = specs.filter((s) => s.role === role);
      await Promise.all(group.map((s) => this.startOne(s)));
      if (this.stopping) throw new VmmsimError('E_INTERRUPTED', 'stopped while starting processes');
    }
    return this.started;
  }

  private startOne(spec: ProcessSpec): Promise<StartedProcess> {
    const name = endpointName(spec.role, spec.index);
    const listen = this.opts.transport === 'unix' ? ['--socket-dir', this.opts.socketDir] : ['--listen', '127.0.0.1:0'];
    const args = [roleEntry(), '--role', spec.role, '--index', String(spec.index), ...listen, '--log-level', this.opts.logLevel, ...(this.opts.ramDir ? ['--ram-dir', this.opts.ramDir] : [])];
    return new Promise<StartedProcess>((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
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
        if (m.type !== 'ready' || ready) return;
        ready = true;
        clearTimeout(timer);
        const p: StartedProcess = { ...spec, name, pid: child.pid ?? m.pid, address: m.address, child };
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
        if (!ready) reject(err);
        else if (!this.stopping) this.emit('exit', err);
      });
    });
  }

  /** Stops every process, last started first: SIGTERM, then SIGKILL for any still there after a grace period. */
  async stop(graceMs = 2000): Promise<void> {
    this.stopping = true;
    const order = [...this.started.map((p) => p.child)].reverse();
    for (const c of this.children) if (!order.includes(c)) order.unshift(c);
    for (const child of order) await stopChild(child, graceMs);
  }

  /** Last resort on the way out of the controller: SIGKILL everything still alive, synchronously. */
  killAll(): void {
    this.stopping = true;
    for (const c of this.children) if (alive(c)) c.kill('SIGKILL');
  }
}

function alive(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (!alive(child)) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timeout = new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), graceMs).unref());
  if ((await Promise.race([gone, timeout])) === 'late' && alive(child)) {
    child.kill('SIGKILL');
    await gone;
  }
}
