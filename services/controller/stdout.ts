/**
 * Failed writes on the CLI's standard streams. Node reports a failed write on stdout (ENOSPC on
 * `> /dev/full`, EPIPE when the reader of a pipe went away, EBADF when it was closed) as an 'error'
 * event, which with no listener kills the process with a stack trace. The CLI listens from its
 * first line: a stdout failure is kept and ends the command with E_WRITE (exit 1) once its output
 * has settled; a stderr failure is dropped, as there is nowhere left to say anything.
 */
import { VmmsimError } from '../runtime/errors.js';
import { writeError } from './output-path.js';

let stdoutFailure: unknown;
let watching = false;

/** Starts listening for write errors on stdout and stderr (once per process). */
export function watchStdStreams(): void {
  if (watching) return;
  watching = true;
  process.stdout.on('error', (err) => {
    stdoutFailure ??= err;
  });
  process.stderr.on('error', () => undefined);
}

/**
 * Waits until every write queued on stdout so far has gone through or failed (an EPIPE is
 * reported a tick after the write), then gives the first failure as E_WRITE, or undefined.
 */
export async function settleStdout(): Promise<VmmsimError | undefined> {
  if (stdoutFailure === undefined && !process.stdout.destroyed) {
    // An empty write's callback runs after every write queued before it, failed or not; a turn of
    // the event loop more lets the stream's own 'error' (the errno, not "destroyed") arrive first.
    const late = await new Promise<Error | null | undefined>((resolve) => {
      try {
        process.stdout.write('', (err) => setImmediate(() => resolve(err)));
      } catch (err) {
        resolve(err as Error);
      }
    });
    stdoutFailure ??= late ?? undefined;
  }
  return stdoutFailure === undefined ? undefined : writeError('stdout', stdoutFailure);
}
