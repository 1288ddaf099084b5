/**
 * `vmmsim scenario-keys [--json-schema]`: every scenario key with its default and allowed values, or
 * the scenario format as a JSON Schema (what scenarios/scenario.schema.json holds). It has no help
 * of its own: `vmmsim help scenario-keys` prints the top-level usage.
 */
import { scenarioJsonSchema } from '../../scenario/json-schema.js';
import { describeSchema } from '../../scenario/schema.js';
import { parse } from '../cli/options.js';

export async function command(argv: string[] = []): Promise<number> {
  const { values } = parse(argv, { 'json-schema': { type: 'boolean' } });
  if (values['json-schema']) {
    process.stdout.write(JSON.stringify(scenarioJsonSchema(), null, 2) + '\n');
    return 0;
  }
  process.stdout.write(`${'key'.padEnd(26)} ${'default'.padEnd(18)} allowed\n${describeSchema()}\n`);
  return 0;
}
