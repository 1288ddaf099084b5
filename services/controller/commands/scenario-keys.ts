/**
 * `vmmsim scenario-keys [--json-schema]`: every scenario key with its default and allowed values, or
 * the scenario format as a JSON Schema (what scenarios/scenario.schema.json holds). It has no help
 * of its own: `vmmsim help scenario-keys` prints the top-level usage.
 */
import { allDesigns } from '../../designs/registry.js';
import { scenarioJsonSchema } from '../../scenario/json-schema.js';
import { describeSchema } from '../../scenario/schema.js';
import { parse } from '../cli/options.js';
import { designStatusText } from '../notes.js';

export async function command(argv: string[] = []): Promise<number> {
  const { values } = parse(argv, { 'json-schema': { type: 'boolean' } });
  if (values['json-schema']) {
    process.stdout.write(JSON.stringify(scenarioJsonSchema(), null, 2) + '\n');
    return 0;
  }
  // The designs that are not upstream, as their descriptors say (services/designs/*/index.ts).
  const designs = allDesigns().filter((d) => d.status !== 'upstream').map((d) => `${d.name} is ${designStatusText(d)}`);
  const upstream: Record<string, string> = designs.length > 0 ? { model: `${designs.join('; ')} (results.json runs[].notes says so for each run)` } : {};
  process.stdout.write(`${'key'.padEnd(26)} ${'default'.padEnd(18)} allowed\n${describeSchema(upstream)}\n`);
  return 0;
}
