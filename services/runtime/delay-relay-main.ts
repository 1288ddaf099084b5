/**
 * Entry point of a delay relay: `node delay-relay-main.js --listen HOST:PORT --to HOST:PORT
 * --delay 2ms`. deploy/netns/run.sh starts one in a role's network namespace for each delayed link
 * when the kernel has no sch_netem. Prints one JSON ready line on stdout; runs until SIGTERM/SIGINT.
 */
import { parseArgs } from 'node:util';
import { VmmsimError, asVmmsimError } from './errors.js';
import { DelayRelay, parseDelay, parseHostPort } from './transport/delay-relay.js';

async function main(argv: string[]): Promise<void> {
  let values: { listen?: string | undefined; to?: string | undefined; delay?: string | undefined };
  try {
    values = parseArgs({ args: argv, options: { listen: { type: 'string' }, to: { type: 'string' }, delay: { type: 'string' } }, strict: true }).values;
  } catch (err) {
    throw new VmmsimError('E_USAGE', (err as Error).message);
  }
  if (!values.listen || !values.to || !values.delay) throw new VmmsimError('E_USAGE', 'usage: delay-relay-main.js --listen HOST:PORT --to HOST:PORT --delay TIME');
  const relay = new DelayRelay(parseHostPort(values.listen, '--listen'), parseHostPort(values.to, '--to'), parseDelay(values.delay));
  const bound = await relay.start();
  const stop = (): void => void relay.close().finally(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(JSON.stringify({ listen: `${bound.host}:${bound.port}`, to: values.to, delayMs: relay.delayMs }) + '\n');
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(asVmmsimError(err).line() + '\n');
  process.exit(asVmmsimError(err).exitCode);
});
