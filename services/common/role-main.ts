/**
 * Entry point of every role process: `node role-main.js --role psmmu --index 3 ...`. The role and
 * index stay on the command line so `ps` shows which process is which.
 */
import { runRoleProcess } from './role-runtime.js';

runRoleProcess(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`vmmsim role process failed to start: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
