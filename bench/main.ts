/**
 * Entry of `npm run bench -- <name> [options]`. Each bench registers here under its name and gets
 * the arguments after it; it prints its results on stdout (progress and logs on stderr).
 */
import { VmmsimError } from '../services/runtime/errors.js';
import { broadcastBench } from './broadcast.js';
import { pathBench } from './path.js';
import { qemuBench } from './qemu.js';
import { scaleBench } from './scale.js';
import { repriceBench } from './reprice.js';
import { soakBench } from './soak.js';
import { transportBench } from './transport.js';
import { vcmdqBench } from './vcmdq.js';
import { walkBench } from './walk.js';

const benches: Record<string, (argv: string[]) => Promise<void>> = {
  broadcast: broadcastBench,
  path: pathBench,
  qemu: qemuBench,
  scale: scaleBench,
  reprice: repriceBench,
  soak: soakBench,
  transport: transportBench,
  vcmdq: vcmdqBench,
  walk: walkBench,
};

function usage(): string {
  return [
    'usage: npm run bench -- <name> [options]      (or: node dist/bench/main.js <name> [options])',
    '',
    'benches:',
    ...Object.keys(benches)
      .sort()
      .map((name) => `  ${name}`),
    '',
    '`npm run bench -- <name> --help` lists the options of one bench.',
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const bench = name === undefined ? undefined : benches[name];
  if (!bench) {
    if (name !== undefined && name !== '--help' && name !== '-h') process.stderr.write(`bench: unknown bench "${name}"\n`);
    process.stderr.write(usage());
    return 2;
  }
  try {
    await bench(rest);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof VmmsimError) {
      process.stderr.write(`bench ${name}: ${err.code}: ${err.message} (fix: ${err.fix})\n`);
      return err.exitCode;
    }
    process.stderr.write(`bench ${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}

// Exit explicitly: a bench's clients may keep timers (keepalive) that would hold the loop open.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${String(err)}\n`);
    process.exit(1);
  },
);
