/**
 * Entry point of every role process: `node role-main.js --role psmmu --index 3 ...`. The role and
 * index stay on the command line so `ps` shows which process is which.
 */
import { VmmsimError } from './errors.js';
import { runRoleProcess, type ChildMessage } from './role-runtime.js';

runRoleProcess(process.argv.slice(2)).catch((err: unknown) => {
  // A failure the user can fix (a metrics port in use) goes to the controller, which reports it as its own.
  if (err instanceof VmmsimError && process.send) {
    const failed: ChildMessage = { type: 'failed', code: err.code, message: err.message, fix: err.fix };
    process.send(failed, () => process.exit(1));
    return;
  }
  process.stderr.write(`vmmsim role process failed to start: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
