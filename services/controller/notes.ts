/**
 * Notes a run's results carry about how far to trust them (runs[].notes[]), and their lines under
 * the terminal tables. Here: a design priced by a profile of another architecture; the measured
 * clock's notes (a busy machine, trials that disagree) come from measured-notes.ts.
 */
import { loadProfile, profileNames, type Arch, type CostProfile } from '../cost/profile.js';
import { designOf } from '../designs/registry.js';
import { SCENARIO_SCHEMA, type ModelName } from '../scenario/schema.js';
import type { RunNote } from './results.js';
import { MACHINE_NOTE_CODES } from './measured-notes.js';
import { wrap } from './wrap.js';

export type { RunNote };

/** A shipped profile of each architecture to name in a note, the default one first (read once). */
let shippedByArch: Map<Arch, string> | undefined;
function shippedProfileFor(arch: Arch): string | undefined {
  if (!shippedByArch) {
    shippedByArch = new Map();
    const byDefault = String((SCENARIO_SCHEMA.fields['profile'] as { default?: unknown } | undefined)?.default ?? '');
    const names = profileNames();
    for (const name of [...names.filter((n) => n === byDefault), ...names.filter((n) => n !== byDefault)]) {
      try {
        const a = loadProfile(name).arch;
        if (!shippedByArch.has(a)) shippedByArch.set(a, name);
      } catch {
        // A broken file in profiles/ is reported when it is used, not here.
      }
    }
  }
  return shippedByArch.get(arch);
}

/**
 * 'arch-mismatch' when the design models another architecture than the profile's host: its steps
 * are then priced with the costs of a machine it does not run on.
 */
export function archNotes(model: ModelName, profile: CostProfile): RunNote[] {
  const arch = designOf(model).traits.arch;
  if (arch === profile.arch) return [];
  const other = shippedProfileFor(arch);
  return [
    {
      code: 'arch-mismatch',
      text: `${model} models ${arch} hardware but profile ${profile.name} prices ${profile.arch}: its modeled figures use another architecture's costs${other ? ` (for ${arch}: --profile ${other})` : ''}`,
    },
  ];
}

/**
 * The notes of a set of runs as lines for the terminal, each distinct note once, wrapped to the
 * tables' 120 columns (continuation lines indented); '' when none. A note about the machine is said
 * once for a command; in a comparison, a note about one run's figures that does not name its model
 * is prefixed with it.
 */
export function notesBlock(runs: readonly { model: string; notes?: readonly RunNote[] | undefined }[]): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  const models = new Set(runs.map((r) => r.model));
  for (const run of runs) {
    for (const n of run.notes ?? []) {
      const perRun = !MACHINE_NOTE_CODES.has(n.code);
      const named = perRun && models.size > 1 && !n.text.startsWith(`${run.model} `);
      const text = named ? `${run.model}: ${n.text}` : n.text;
      const key = perRun ? `${n.code}\u0000${text}` : n.code;
      if (seen.has(key)) continue;
      seen.add(key);
      lines.push(wrap(`${n.code}: ${text}`, 116).split('\n').map((l, i) => (i === 0 ? `  ${l}` : `    ${l}`)).join('\n'));
    }
  }
  return lines.length > 0 ? `\nnotes:\n${lines.join('\n')}\n` : '';
}
