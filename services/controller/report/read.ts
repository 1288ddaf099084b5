/**
 * Reading a results document for `vmmsim report`: the file must be readable JSON with the results
 * schema. What is inside is checked later, field by field (data.ts), so a partial document still
 * gives a report that says what is missing.
 */
import { readFileSync } from 'node:fs';
import { VmmsimError } from '../../common/errors.js';
import { RESULTS_SCHEMA } from '../results.js';

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

/** Reads and parses a results file; a missing or unreadable file is refused with its errno. */
export function readResultsFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : code === 'EACCES' ? 'permission denied' : (code ?? (err as Error).message);
    throw new VmmsimError('E_RESULTS_FILE', `cannot read ${file}: ${why}`);
  }
  return parseResultsText(text, file);
}
