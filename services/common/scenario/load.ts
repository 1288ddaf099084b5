import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import { VmmsimError } from '../errors.js';
import type { Scenario } from './schema.js';
import { applySet, resolveScenario } from './validate.js';

/** Reads a scenario file (or none: all defaults), applies --set overrides, validates it. */
export function loadScenario(path: string | undefined, sets: readonly string[] = [], overrides: Record<string, unknown> = {}): Scenario {
  let doc: Record<string, unknown> = {};
  if (path !== undefined) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new VmmsimError('E_SCENARIO_FILE', `cannot read scenario ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (text.trim() === '') throw new VmmsimError('E_SCENARIO_FILE', `scenario ${path} is empty`, 'write at least `name: NAME`, or leave the file out to use every default');
    const lineCounter = new LineCounter();
    const parsed = parseDocument(text, { prettyErrors: false, uniqueKeys: true, lineCounter });
    const first = parsed.errors[0];
    if (first) {
      const pos = lineCounter.linePos(first.pos[0]);
      throw new VmmsimError('E_SCENARIO_YAML', `scenario ${path} is not valid YAML${pos ? ` at line ${pos.line}, column ${pos.col}` : ''}: ${first.message.split('\n')[0]}`);
    }
    const value: unknown = parsed.toJS();
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new VmmsimError('E_SCENARIO_FIELD', `scenario ${path} must be a mapping of keys (name, model, topology, workload...), got ${Array.isArray(value) ? 'a list' : JSON.stringify(value)}`);
    }
    doc = value as Record<string, unknown>;
  }
  for (const s of sets) applySet(doc, s);
  for (const [k, v] of Object.entries(overrides)) applySet(doc, `${k}=${String(v)}`);
  return resolveScenario(doc);
}
