/** `vmmsim report results.json [--html FILE]`: the HTML report of a results document. */
import { dirname, join } from 'node:path';
import { parse, usageError } from '../cli/options.js';
import { MAX_RESULTS_BYTES, resultsFileSize } from '../report/read.js';
import { REPORT_FILE, checkReportFile, reportInWorker } from '../report/write.js';

export const HELP = `usage: vmmsim report results.json [--html FILE]

Writes an HTML report of a results document that run, compare, sweep or saturate wrote (each of
them also writes one beside its results.json). The page is a single file that opens offline: the
transitions each operation paid, stacked by kind; latency percentile curves (p50 to max) per
operation, measured and modeled, and per hop; for a sweep, throughput and p99 against each swept
key; for a saturation search, its steps and the saturation rates; and a table of every number.
Each chart mark carries its value and JSON Pointer into results.json as data-* attributes. A
failed or interrupted run gives a report of what it holds, with a note of what is missing.

results.json must be a regular file of at most ${MAX_RESULTS_BYTES / (1024 * 1024)} MiB, whose page fits in 64 MiB and 6 times
its size of memory (E_RESULTS_FILE otherwise). The page is written to a regular file only: a
device node, FIFO, socket, symbolic link or folder at FILE is refused (E_OUTPUT_PATH), never
replaced.

options:
  --html FILE           where to write the page (default: report.html beside results.json)
  -h, --help            this text`;

export const OPTIONS = { html: { type: 'string' }, help: { type: 'boolean', short: 'h' } } as const;

/** Returns the exit code; bad input throws a VmmsimError (exit 2). */
export async function command(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw usageError(`report takes one results file (results.json), got ${positionals.length}${positionals.length > 0 ? `: ${positionals.join(' ')}` : ''}`);
  const file = positionals[0] as string;
  if (values.html === '') throw usageError('--html needs a file path');
  const html = values.html ?? join(dirname(file), REPORT_FILE);
  // Both ends before any work: a refused --html or a device as input costs no read.
  checkReportFile(html);
  const bytes = resultsFileSize(file);
  const out = await reportInWorker(file, html, bytes);
  process.stdout.write(`report: ${out}\n`);
  return 0;
}
