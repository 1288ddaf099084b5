/**
 * `vmmsim scenario-keys`: every scenario key with its default and allowed values. It reads no
 * arguments (any given are ignored) and has no help of its own: `vmmsim help scenario-keys`
 * prints the top-level usage.
 */
import { describeSchema } from '../../scenario/schema.js';

export async function command(): Promise<number> {
  process.stdout.write(`${'key'.padEnd(26)} ${'default'.padEnd(18)} allowed\n${describeSchema()}\n`);
  return 0;
}
