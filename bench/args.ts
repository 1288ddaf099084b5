import { parseArgs, type ParseArgsConfig } from 'node:util';
import { VmmsimError } from '../services/runtime/errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * The options of one bench: parsed strictly, with --help printing its usage (undefined is then
 * returned) and every mistake an E_USAGE error naming the bench's --help.
 */
export function benchArgs<O extends Options>(bench: string, usage: string, argv: string[], options: O): { values: ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>>['values']; number: (name: string, v: string, min: number, max?: number, integer?: boolean) => number } | undefined {
  const fail = (msg: string): VmmsimError => new VmmsimError('E_USAGE', msg, `run \`npm run bench -- ${bench} --help\` for the options`);
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw fail((err as Error).message);
  }
  if ((values as { help?: boolean }).help) {
    process.stdout.write(usage);
    return undefined;
  }
  const number = (name: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER, integer = true): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
      throw fail(`--${name} must be ${integer ? 'an integer' : 'a number'} ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in ${min}..${max}`} (got "${v}")`);
    }
    return n;
  };
  return { values, number };
}
