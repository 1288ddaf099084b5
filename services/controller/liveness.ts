/**
 * The controller's watch over the processes of a run. A process that stops answering (SIGSTOP, a
 * wedged event loop) never fails a link by itself: its peers' requests wait out their deadline one
 * by one, each failing one operation, and the guest goes on with the next. So while a tree is up,
 * the controller asks every process's gRPC health service in turn, and a process that does not
 * answer within a deadline shorter than the links' own, nor a second check right after, ends the
 * command with E_DEADLINE naming it. The second check keeps a controller that was itself busy
 * (decoding a long run's results) from blaming a process that answered in time. On this host /proc
 * tells more: a stopped process is named as such, and one that does not answer but keeps using CPU
 * is working (a guest encoding a long run's timeline can hold its event loop for seconds), not stuck.
 * Processes elsewhere (`--connect`) get longer deadlines and no /proc check. A controller that blocks
 * its own event loop (decoding a large StartReply, replaying a timeline) reads a reply that did
 * arrive only after the check's deadline fired: such a check proves nothing and is not counted.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { VmmsimError } from '../runtime/errors.js';
import { INSECURE, type Security } from '../runtime/transport/credentials.js';
import { healthClient, type HealthClient } from './health-check.js';

/** Under the links' deadline (Topology.deadlineMs, 10 s), so the watch names a stopped process before its peers' requests time out. */
export const LIVENESS_DEADLINE_MS = 5_000;
/** How long the second check may take. */
export const CONFIRM_DEADLINE_MS = 2_000;
export const LIVENESS_PERIOD_MS = 1_000;
/**
 * Processes the controller did not start (--connect): a network between them, no /proc to tell a
 * stopped process from a busy one, so more time before one is named.
 */
export const REMOTE_DEADLINE_MS = 10_000;
export const REMOTE_CONFIRM_DEADLINE_MS = 5_000;
/**
 * A check whose outcome comes this much after its deadline, or an event-loop stall of the
 * controller this long while a process was being checked, says the controller was blocked: the
 * reply may have been waiting unread, so the check is inconclusive and the process is checked again.
 */
export const CONTROLLER_STALL_MS = 250;
/**
 * How often the watch measures the controller's event loop. (Its own timer rather than
 * perf_hooks.monitorEventLoopDelay: resetting that histogram for a new window drops a stall that
 * begins before its next sample.)
 */
const LOOP_SAMPLE_MS = 50;

export interface WatchedProcess {
  name: string;
  pid: number;
  address: string;
  /** Where it runs, when not on this host (named in the error). */
  host?: string | undefined;
}

export interface LivenessOptions {
  /** Called once, with the E_DEADLINE of the first process that stopped answering. */
  onFailure: (err: VmmsimError) => void;
  security?: Security;
  deadlineMs?: number;
  confirmDeadlineMs?: number;
  periodMs?: number;
  /**
   * The processes run on this host (launched trees), so /proc can tell a stopped process from a
   * busy one. Required: the deadlines' defaults follow it (REMOTE_* when false).
   */
  local: boolean;
}

/** The state letter of /proc/PID/stat (R, S, D, T stopped, t traced, Z zombie), or undefined when gone. */
export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name sits in parentheses and may hold spaces: the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) || undefined;
  } catch {
    return undefined;
  }
}

/** CPU time a process has used (utime + stime, in clock ticks), or undefined when it is gone. */
export function cpuTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return undefined;
  }
}

const STATE_NAMES: Record<string, string> = { T: 'stopped (SIGSTOP or SIGTSTP)', t: 'stopped by a debugger', D: 'in uninterruptible sleep', Z: 'dead (not yet reaped)' };

interface Watched extends WatchedProcess {
  client: HealthClient;
  busy: boolean;
  /** The check in flight, cancelled by stop(): one to a stopped process would hold the controller until its deadline. */
  call?: grpc.ClientUnaryCall | undefined;
}

export class LivenessWatch {
  private readonly watched: Watched[];
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  private readonly deadlineMs: number;
  private readonly confirmMs: number;
  /** The controller's event loop: its sampling timer, its last turn and when its last stall ended (performance.now()). */
  private loopTimer: NodeJS.Timeout | undefined;
  private lastTurn = 0;
  private lastStallEnd = Number.NEGATIVE_INFINITY;

  constructor(
    processes: readonly WatchedProcess[],
    private readonly opts: LivenessOptions,
  ) {
    const security = opts.security ?? INSECURE;
    this.deadlineMs = opts.deadlineMs ?? (opts.local ? LIVENESS_DEADLINE_MS : REMOTE_DEADLINE_MS);
    this.confirmMs = opts.confirmDeadlineMs ?? (opts.local ? CONFIRM_DEADLINE_MS : REMOTE_CONFIRM_DEADLINE_MS);
    // A channel of its own per process: a probe never queues behind a run's control calls.
    this.watched = processes.map((p) => ({ name: p.name, pid: p.pid, address: p.address, host: p.host, busy: false, client: healthClient(p.address, security) }));
  }

  start(): void {
    if (this.timer || this.done) return;
    this.lastTurn = performance.now();
    this.loopTimer = setInterval(() => this.turn(), LOOP_SAMPLE_MS);
    this.timer = setInterval(() => this.tick(), this.opts.periodMs ?? LIVENESS_PERIOD_MS);
    // The watch never keeps the controller alive by itself.
    this.loopTimer.unref();
    this.timer.unref();
  }

  stop(): void {
    this.done = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.loopTimer) clearInterval(this.loopTimer);
    this.loopTimer = undefined;
    for (const w of this.watched) {
      w.call?.cancel();
      w.client.close();
    }
  }

  /** One sample of the event loop: a turn this late ends a stall of the controller. */
  private turn(): void {
    const now = performance.now();
    if (now - this.lastTurn > LOOP_SAMPLE_MS + CONTROLLER_STALL_MS) this.lastStallEnd = now;
    this.lastTurn = now;
  }

  /**
   * Whether the controller's event loop stalled since `since`. First lets the sampling timer run
   * once more, so a stall that just ended is seen (after a stall it is overdue, and fires first).
   */
  private async stalledSince(since: number): Promise<boolean> {
    await new Promise((r) => setTimeout(r, 2 * LOOP_SAMPLE_MS));
    return this.lastStallEnd >= since;
  }

  private tick(): void {
    for (const w of this.watched) {
      if (w.busy || this.done) continue;
      w.busy = true;
      void this.probe(w).finally(() => {
        w.busy = false;
      });
    }
  }

  /**
   * One check, and a second one when the first ran out of time; a failure of both is reported,
   * unless the controller itself stalled meanwhile (the checks prove nothing), or the process kept
   * using CPU (it is working). Either way it is checked again next time.
   */
  private async probe(w: Watched): Promise<void> {
    const since = performance.now();
    const cpu = this.opts.local ? cpuTicks(w.pid) : undefined;
    if ((await this.check(w, this.deadlineMs)) !== 'late' || this.done) return;
    if ((await this.check(w, this.confirmMs)) !== 'late' || this.done) return;
    if ((await this.stalledSince(since)) || this.done) return;
    const state = this.opts.local ? processState(w.pid) : undefined;
    // A process that died is reported by whoever started it or by the links that lost it.
    if (this.opts.local && (state === undefined || state === 'Z')) return;
    const stopped = state === 'T' || state === 't';
    if (!stopped && cpu !== undefined && (cpuTicks(w.pid) ?? cpu) > cpu) return;
    this.done = true;
    const how = state && STATE_NAMES[state] ? `; it is ${STATE_NAMES[state]}` : '';
    const where = w.host === undefined ? '' : ` on ${w.host}, at ${w.address}`;
    this.opts.onFailure(new VmmsimError('E_DEADLINE', `${w.name} (pid ${w.pid}${where}) stopped answering: no reply to its health check within ${this.deadlineMs} ms, nor to a second within ${this.confirmMs} ms${how}`));
  }

  /**
   * 'late' when the process did not answer in time; 'inconclusive' when the deadline's callback
   * itself ran well after the deadline (the controller was blocked, and the reply may be waiting
   * unread). Any other outcome (an answer, a refused connection) is not this watch's to report: a
   * process that died is reported by whoever started it or by the links that lost it.
   */
  private check(w: Watched, deadlineMs: number): Promise<'answered' | 'late' | 'inconclusive' | 'unreachable'> {
    const sentAt = performance.now();
    return new Promise((resolve) => {
      w.call = w.client.Check({ service: '' }, { deadline: Date.now() + deadlineMs }, (err) => {
        w.call = undefined;
        if (!err) resolve('answered');
        else if (err.code !== grpc.status.DEADLINE_EXCEEDED) resolve('unreachable');
        else resolve(performance.now() - sentAt - deadlineMs > CONTROLLER_STALL_MS ? 'inconclusive' : 'late');
      });
    });
  }
}
