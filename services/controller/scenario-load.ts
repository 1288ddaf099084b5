import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import { VmmsimError } from '../runtime/errors.js';
import type { Scenario } from '../scenario/schema.js';
import { applySet, preview, resolveScenario } from '../scenario/validate.js';

/** The largest scenario file read (1 MiB): a scenario is a few dozen keys, a few KiB. */
export const MAX_SCENARIO_BYTES = 1024 * 1024;

/**
 * Aliases a YAML document may expand (the yaml library's own default, stated here because it is a
 * limit of ours): a "billion laughs" file of nested aliases expands exponentially.
 */
const MAX_ALIAS_COUNT = 100;

function fileError(path: string, why: string): VmmsimError {
  return new VmmsimError('E_SCENARIO_FILE', `cannot read scenario ${path}: ${why}`);
}

/**
 * The text of a scenario file: a regular file of at most MAX_SCENARIO_BYTES. A device (/dev/zero)
 * or a FIFO is refused before a byte is read; the open does not block on a FIFO with no writer.
 */
function readScenarioText(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw fileError(path, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw fileError(path, 'EISDIR');
    if (!st.isFile()) throw fileError(path, 'not a regular file');
    const tooLarge = (n: number): VmmsimError => fileError(path, `${n} bytes is more than the ${MAX_SCENARIO_BYTES / 1024} KiB a scenario file may have`);
    if (st.size > MAX_SCENARIO_BYTES) throw tooLarge(st.size);
    // One byte more than its size: a file that grew since fstat is caught too.
    const buf = Buffer.allocUnsafe(st.size + 1);
    let n = 0;
    for (let got = 1; got > 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    if (n > MAX_SCENARIO_BYTES) throw tooLarge(n);
    if (n === buf.length) throw fileError(path, 'it grew while it was read');
    return buf.toString('utf8', 0, n);
  } catch (err) {
    if (err instanceof VmmsimError) throw err;
    throw fileError(path, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  } finally {
    closeSync(fd);
  }
}

/** A YAML file of vmmsim's own (a scenario, a study) as plain data, read with a scenario's limits. */
export function loadYamlFile(path: string): unknown {
  const text = readScenarioText(path);
  if (text.trim() === '') throw new VmmsimError('E_SCENARIO_FILE', `${path} is empty`);
  return parseScenarioYaml(path, text);
}

/** Parses scenario YAML into plain data; any failure of the yaml library (syntax, alias bombs, nesting) is E_SCENARIO_YAML. */
function parseScenarioYaml(path: string, text: string): unknown {
  const lineCounter = new LineCounter();
  try {
    const parsed = parseDocument(text, { prettyErrors: false, uniqueKeys: true, lineCounter });
    const first = parsed.errors[0];
    if (first) {
      const pos = lineCounter.linePos(first.pos[0]);
      throw new VmmsimError('E_SCENARIO_YAML', `scenario ${path} is not valid YAML${pos ? ` at line ${pos.line}, column ${pos.col}` : ''}: ${first.message.split('\n')[0]}`);
    }
    return parsed.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    if (err instanceof VmmsimError) throw err;
    // The library throws a ReferenceError for too many aliases, a RangeError for too deep a nesting.
    const why = err instanceof RangeError ? 'it nests too deeply' : (err as Error).message.split('\n')[0];
    throw new VmmsimError('E_SCENARIO_YAML', `scenario ${path} is not usable YAML: ${why}`, 'write the scenario as plain keys and values; aliases (*name) may expand at most 100 times in all');
  }
}

/** Reads a scenario file (or none: all defaults), applies --set overrides, validates it. */
export function loadScenario(path: string | undefined, sets: readonly string[] = [], overrides: Record<string, unknown> = {}): Scenario {
  let doc: Record<string, unknown> = {};
  if (path !== undefined) {
    const text = readScenarioText(path);
    if (text.trim() === '') throw new VmmsimError('E_SCENARIO_FILE', `scenario ${path} is empty`, 'write at least `name: NAME`, or leave the file out to use every default');
    const value = parseScenarioYaml(path, text);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new VmmsimError('E_SCENARIO_FIELD', `scenario ${path} must be a mapping of keys (name, model, topology, workload...), got ${Array.isArray(value) ? 'a list' : preview(value)}`);
    }
    doc = value as Record<string, unknown>;
  }
  for (const s of sets) applySet(doc, s);
  for (const [k, v] of Object.entries(overrides)) applySet(doc, `${k}=${String(v)}`);
  return resolveScenario(doc);
}
