/**
 * Reading a results document for `vmmsim report`: the file must be readable JSON with the results
 * schema. What is inside is checked later, field by field (data.ts), so a partial document still
 * gives a report that says what is missing.
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { VmmsimError } from '../../runtime/errors.js';
import { kindOf } from '../output-path.js';
import { RESULTS_SCHEMA } from '../results.js';

/**
 * The largest results file `vmmsim report` reads (64 MiB). The biggest document a command writes, a
 * 256-run sweep, is a few MiB; the page of a 64 MiB document is several hundred MiB already.
 */
export const MAX_RESULTS_BYTES = 64 * 1024 * 1024;

/** Parses results text, refusing anything that is not a vmmsim results document. `file` names it in messages. */
export function parseResultsText(text: string, file: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new VmmsimError('E_RESULTS_FILE', `${file} is not JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new VmmsimError('E_RESULTS_FILE', `${file} is not a vmmsim results document (not a JSON object)`);
  const schema = (doc as Record<string, unknown>)['schema'];
  if (schema !== RESULTS_SCHEMA) {
    const got = typeof schema === 'string' ? `schema "${schema.slice(0, 80)}"` : 'no schema field';
    throw new VmmsimError('E_RESULTS_FILE', `${file} is not a vmmsim results document (${got}; this vmmsim reads ${RESULTS_SCHEMA})`);
  }
  return doc as Record<string, unknown>;
}

function cannotRead(file: string, err: unknown): VmmsimError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : code === 'EACCES' ? 'permission denied' : (code ?? (err as Error).message);
  return new VmmsimError('E_RESULTS_FILE', `cannot read ${file}: ${why}`);
}

/**
 * The size of a results file, checked as readResultsBytes checks it (a regular file within the
 * limit) without reading it: the report's memory is sized from it before the read.
 */
export function resultsFileSize(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw cannotRead(file, err);
  }
  try {
    return checkedSize(file, fstatSync(fd));
  } finally {
    closeSync(fd);
  }
}

/** A results file's size, refused when it is not a regular file or over the limit. */
function checkedSize(file: string, st: Stats): number {
  if (st.isDirectory()) throw new VmmsimError('E_RESULTS_FILE', `cannot read ${file}: it is a folder`);
  if (!st.isFile()) throw new VmmsimError('E_RESULTS_FILE', `cannot read ${file}: it is ${kindOf(st)}, not a regular file`);
  if (st.size > MAX_RESULTS_BYTES) throw tooLarge(file, st.size);
  return st.size;
}

/**
 * Reads a results file whole: a regular file of at most MAX_RESULTS_BYTES. A device (/dev/zero), a
 * FIFO or a socket is refused before a byte is read: read to its end, it never ends. The open does
 * not block (O_NONBLOCK), so a FIFO with no writer is refused too, not waited on.
 */
export function readResultsBytes(file: string): Buffer {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw cannotRead(file, err);
  }
  try {
    const size = checkedSize(file, fstatSync(fd));
    // One byte more than its size: a file that grew since fstat is caught.
    const buf = Buffer.allocUnsafe(size + 1);
    let n = 0;
    for (let got = 1; got > 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    if (n > MAX_RESULTS_BYTES) throw tooLarge(file, n);
    if (n === buf.length) throw new VmmsimError('E_RESULTS_FILE', `cannot read ${file}: it grew while it was read`);
    return buf.subarray(0, n);
  } catch (err) {
    if (err instanceof VmmsimError) throw err;
    throw cannotRead(file, err);
  } finally {
    closeSync(fd);
  }
}

function tooLarge(file: string, size: number): VmmsimError {
  return new VmmsimError('E_RESULTS_FILE', `cannot read ${file}: ${size} bytes is more than the ${MAX_RESULTS_BYTES / (1024 * 1024)} MiB a results file may have`);
}

/** Reads and parses a results file; a missing, unreadable, non-regular or too large file is refused. */
export function readResultsFile(file: string): Record<string, unknown> {
  return parseResultsText(readResultsBytes(file).toString('utf8'), file);
}
