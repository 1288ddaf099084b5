/**
 * What a command ends with: the files it writes in its --out folder (checked before it starts),
 * its results document, and its exit code, with a line on stderr for a failure.
 */
import type { CostProfile } from '../../cost/profile.js';
import { asVmmsimError, type VmmsimError } from '../../runtime/errors.js';
import type { Logger } from '../../runtime/logger.js';
import type { Scenario } from '../../scenario/schema.js';
import { withLoad } from '../load.js';
import { MEASURED_HOST } from '../measured-host.js';
import { checkOutDir } from '../output-path.js';
import { REPORT_FILE } from '../report/write.js';
import { RESULTS_SCHEMA, profileFile, type ResultsDoc, type RunResult } from '../results.js';
import { version } from './version.js';

/**
 * The files a command writes in its --out folder: checked before anything starts, so a folder that
 * is a file, or a results.json that is a FIFO, is bad input and not a failed run.
 */
export function checkOut(out: string, o: { measureHost: boolean; sweep?: boolean; saturation?: boolean }): void {
  const files = ['results.json', REPORT_FILE];
  if (o.sweep) files.push('results.csv');
  if (o.saturation) files.push('saturation.csv');
  if (o.measureHost) files.push(profileFile(MEASURED_HOST));
  checkOutDir(out, files);
}

export function resultsDoc(startedAt: string, scenario: Scenario, profile: CostProfile, runs: RunResult[], failure: VmmsimError | undefined, sweep?: ResultsDoc['sweep']): ResultsDoc {
  return {
    schema: RESULTS_SCHEMA,
    status: failure ? (failure.code === 'E_INTERRUPTED' ? 'interrupted' : 'failed') : 'ok',
    ...(failure ? { error: { code: failure.code, message: failure.message } } : {}),
    tool: { name: 'vmmsim', version: version() },
    startedAt,
    finishedAt: new Date().toISOString(),
    scenario,
    seed: scenario.seed,
    profile: { name: profile.name, path: profile.path, arch: profile.arch },
    ...(sweep ? { sweep } : {}),
    // An open-loop run carries its requested and achieved rates.
    runs: runs.map(withLoad),
  };
}

/** What writing a command's results gave: the files' lines for the user, or why they could not be written. */
export interface Saved {
  /** results.json, when it was written. */
  path: string | undefined;
  /** The lines that say where the files are (empty when none was written). */
  where: string;
  error: VmmsimError | undefined;
}

/**
 * Writes a command's results (`write` gives results.json's path and the lines naming each file). A
 * failure to write (E_WRITE, E_OUTPUT_PATH) is kept for finish(), after the run's own outcome and
 * its output on stdout, rather than thrown past them.
 */
export function save(write: () => { path: string; where: string }): Saved {
  try {
    return { ...write(), error: undefined };
  } catch (err) {
    return { path: undefined, where: '', error: asVmmsimError(err) };
  }
}

/**
 * The exit code of a command that ran: a failure's line on stderr, and where its partial results
 * are; then a failure to write them. The run's own failure sets the exit code when there is one.
 */
export function finish(failure: VmmsimError | undefined, json: boolean, saved: Saved): number {
  if (failure) {
    process.stderr.write(failure.line() + '\n');
    if (!json && saved.path) process.stderr.write(`vmmsim: partial results: ${saved.path}\n`);
  }
  if (saved.error) process.stderr.write(saved.error.line() + '\n');
  return failure?.exitCode ?? saved.error?.exitCode ?? 0;
}

/**
 * The exit code of a command that threw (bad input, or a failure before or after its runs): the
 * error's one line on stderr, and an unexpected one's (E_RUN) stack in `log` when the command has one.
 */
export function failed(err: unknown, log?: Logger): number {
  const e = asVmmsimError(err);
  process.stderr.write(e.line() + '\n');
  if (e.code === 'E_RUN') log?.error({ err }, 'unexpected failure');
  return e.exitCode;
}
