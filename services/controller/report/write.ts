/**
 * Writing a report: the one every command writes beside its results.json, and the one `vmmsim
 * report` (../commands/report.ts) builds from a results file in a worker of bounded memory. The
 * page is built from the document alone, so a report written later from the same results.json is
 * the same file.
 */
import { readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { VmmsimError, type ErrorCode } from '../../runtime/errors.js';
import { checkOutputFile, writeRegularFile } from '../output-path.js';
import { writeResults, type ResultsDoc } from '../results.js';
import { reportData, type ReportData } from './data.js';
import { writeReportHtml } from './page.js';
import { readResultsFile } from './read.js';

export const REPORT_FILE = 'report.html';

const HTML_FIX = 'give --html a file path (a regular file, or none yet) in a folder you can write; device nodes, FIFOs, sockets, symbolic links and folders are refused';

/** Refuses FILE as the report's target unless it is absent or a regular file. */
export function checkReportFile(file: string): void {
  try {
    checkOutputFile(resolve(file), file);
  } catch (err) {
    if (err instanceof VmmsimError && err.code === 'E_OUTPUT_PATH') throw new VmmsimError(err.code, err.message, HTML_FIX);
    throw err;
  }
}

/**
 * The report of what reportData read from a results document, written to the regular file `file`
 * atomically, piece by piece as it is built; returns its path.
 */
function writeReportData(file: string, data: ReportData): string {
  checkReportFile(file);
  return writeRegularFile(resolve(file), (out) => writeReportHtml(data, out));
}

/** The report of a results document, written to the regular file `file`; returns its path. */
export function writeReport(file: string, doc: object): string {
  return writeReportData(file, reportData(doc));
}

/**
 * The report beside a results.json a command just wrote. A report that cannot be written costs a
 * line on stderr, never the run's results or its exit code.
 */
function writeReportBeside(resultsPath: string, doc: object): string | undefined {
  try {
    return writeReport(join(dirname(resultsPath), REPORT_FILE), doc);
  } catch (err) {
    process.stderr.write(`vmmsim: report not written: ${(err as Error).message}\n`);
    return undefined;
  }
}

/**
 * Writes DIR/results.json and the report beside it; gives the results path and the lines that
 * tell the user where both are (the report's first, so `results:` stays the last line).
 */
export function saveResults(dir: string, doc: ResultsDoc): { path: string; where: string } {
  const path = writeResults(dir, doc);
  const report = writeReportBeside(path, doc);
  return { path, where: `${report ? `report: ${report}\n` : ''}results: ${path}\n` };
}

/**
 * Reads a results file and writes its report to `html`; returns the report's path. The document is
 * dropped once read into the report's data: a large one need not stay while the page is written.
 */
export function buildReport(file: string, html: string): string {
  return writeReportData(html, reportData(readResultsFile(file)));
}

/** The message a report worker sends back: the report's path, or the VmmsimError that stopped it. */
export type WorkerReply = { path: string } | { error: { code: ErrorCode; message: string; fix: string } };

/**
 * The JavaScript heap a report may take: 64 MiB and 6 times its results file. The document, the
 * report's view of every number in it, and the garbage collector's headroom take about that; left
 * to its own heuristics V8 took twice as much and more, and a pathological document far more.
 */
export function reportHeapMb(bytes: number): number {
  return 64 + Math.ceil((6 * bytes) / (1024 * 1024));
}

/** Removes what a worker that stopped (out of memory) left of its page: DIR/.NAME.PID.*.tmp (output-path.ts names them). */
function removeTemporaries(html: string): void {
  const dir = dirname(resolve(html));
  const prefix = `.${basename(html)}.${process.pid}.`;
  try {
    for (const f of readdirSync(dir)) if (f.startsWith(prefix) && f.endsWith('.tmp')) rmSync(join(dir, f), { force: true });
  } catch {
    // The folder is gone or unreadable: nothing of ours to remove.
  }
}

/**
 * Builds the report in a worker thread whose heap is bounded by reportHeapMb: a results file whose
 * report would need more is refused (E_RESULTS_FILE) instead of taking the machine's memory.
 */
export function reportInWorker(file: string, html: string, bytes: number): Promise<string> {
  const heapMb = reportHeapMb(bytes);
  return new Promise((resolvePath, reject) => {
    const worker = new Worker(new URL('./report-worker.js', import.meta.url), {
      workerData: { file, html },
      resourceLimits: { maxOldGenerationSizeMb: heapMb },
      stdout: false,
      stderr: false,
    });
    let reply: WorkerReply | undefined;
    worker.on('message', (m: WorkerReply) => (reply = m));
    worker.on('error', (err: NodeJS.ErrnoException) => {
      removeTemporaries(html);
      if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
        reject(new VmmsimError('E_RESULTS_FILE', `cannot report ${file}: its page needs more than ${heapMb} MiB of memory (64 MiB and 6 times the file's ${bytes} bytes)`, 'report a smaller results file (a sweep of fewer runs), or one that vmmsim wrote: its own are far below this'));
      } else reject(err);
    });
    worker.on('exit', () => {
      if (!reply) return reject(new VmmsimError('E_RUN', `the report of ${file} stopped before it was written`));
      if ('path' in reply) resolvePath(reply.path);
      else reject(new VmmsimError(reply.error.code, reply.error.message, reply.error.fix));
    });
  });
}
