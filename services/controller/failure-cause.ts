/**
 * What made a run fail, when several things fail at once. A process killed mid-run fails the
 * controller's call that was waiting on its neighbour ("Start on guest-0 failed: link guest-0 ->
 * kvm failed") at about the moment the launcher hears of its exit; which of the two arrives first
 * is chance. The dead (or stopped) process is the cause the user can act on, so it wins: the
 * launcher's exit error once it arrives, or E_DEADLINE for a process found stopped.
 */
import { VmmsimError, asVmmsimError } from '../runtime/errors.js';
import { processState } from './liveness.js';

export interface TreeMember {
  name: string;
  pid: number;
}

/** How long to wait for the launcher's exit error of a process the OS already shows dead. */
export const EXIT_NOTICE_MS = 2_000;

/**
 * The error a failed run reports: `err` itself when it is already a process's exit, an interrupt
 * or a deadline; else the exit error of a process of the tree that died (waiting up to `waitMs`
 * for the launcher to hear of a death the OS already shows), else E_DEADLINE for a process that is
 * stopped, else `err`. `exits` fills as the launcher reports exits.
 */
export async function failureCause(err: unknown, members: readonly TreeMember[], exits: readonly VmmsimError[], waitMs = EXIT_NOTICE_MS): Promise<VmmsimError> {
  const e = asVmmsimError(err);
  if (e.code === 'E_PROCESS_EXITED' || e.code === 'E_INTERRUPTED' || e.code === 'E_DEADLINE') return e;
  const states = members.map((m) => ({ m, state: processState(m.pid) }));
  const dead = states.filter((s) => s.state === undefined || s.state === 'Z');
  if (exits.length === 0 && dead.length > 0) {
    const until = Date.now() + waitMs;
    while (exits.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  }
  const exited = exits[0];
  if (exited) return exited;
  const stopped = states.find((s) => s.state === 'T' || s.state === 't');
  if (stopped) return new VmmsimError('E_DEADLINE', `${stopped.m.name} (pid ${stopped.m.pid}) is stopped (SIGSTOP or SIGTSTP) and stopped answering; the run failed on it: ${e.message}`);
  return e;
}
