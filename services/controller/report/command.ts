/**
 * `vmmsim report results.json [--html FILE]`, and the report every command writes beside its
 * results.json. The page is built from the document alone, so a report written later from the same
 * results.json is the same file.
 */
import { statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { VmmsimError } from '../../common/errors.js';
import { writeFileAtomic, writeResults, type ResultsDoc } from '../results.js';
import { reportData } from './data.js';
import { reportHtml } from './page.js';
import { readResultsFile } from './read.js';

export const REPORT_FILE = 'report.html';

export const REPORT_HELP = `usage: vmmsim report results.json [--html FILE]

Writes an HTML report of a results document that run, compare, sweep or saturate wrote (each of
them also writes one beside its results.json). The page is a single file that opens offline: the
transitions each operation paid, stacked by kind; latency percentile curves (p50 to max) per
operation, measured and modeled, and per hop; for a sweep, throughput and p99 against each swept
key; for a saturation search, its steps and the saturation rates; and a table of every number.
Each chart mark carries its value and JSON Pointer into results.json as data-* attributes. A
failed or interrupted run gives a report of what it holds, with a note of what is missing.

options:
  --html FILE           where to write the page (default: report.html beside results.json)
  -h, --help            this text`;

const OPTIONS = { html: { type: 'string' }, help: { type: 'boolean', short: 'h' } } as const;

/** The report of a results document, written to `file` atomically; returns its path. */
export function writeReport(file: string, doc: object): string {
  const html = reportHtml(reportData(doc));
  const path = resolve(file);
  try {
    if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) throw new VmmsimError('E_REPORT_FILE', `cannot write the report to ${file}: it is a folder`);
    return writeFileAtomic(dirname(path), basename(path), html);
  } catch (err) {
    if (err instanceof VmmsimError) throw err;
    throw new VmmsimError('E_REPORT_FILE', `cannot write the report to ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
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

/** `vmmsim report`: returns the exit code; bad input throws a VmmsimError (exit 2). */
export function reportCommand(argv: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new VmmsimError('E_USAGE', (err as Error).message.replace(/\s*\n\s*/g, ' ').trim());
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(REPORT_HELP + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw new VmmsimError('E_USAGE', `report takes one results file (results.json), got ${positionals.length}${positionals.length > 0 ? `: ${positionals.join(' ')}` : ''}`);
  const file = positionals[0] as string;
  if (values.html === '') throw new VmmsimError('E_USAGE', '--html needs a file path');
  const doc = readResultsFile(file);
  const out = writeReport(values.html ?? join(dirname(file), REPORT_FILE), doc);
  process.stdout.write(`report: ${out}\n`);
  return 0;
}
