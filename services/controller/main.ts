/**
 * The CLI: one module per command in commands/, each with its help text and `command(argv)`; this
 * only dispatches. The shared parts (options, process tree, results and exit codes) are in cli/.
 */
import { failed } from './cli/outcome.js';
import { usageError } from './cli/options.js';
import { version } from './cli/version.js';
import * as decodeCmd from './commands/decode-cmd.js';
import * as explain from './commands/explain.js';
import * as report from './commands/report.js';
import * as run from './commands/run.js';
import * as saturate from './commands/saturate.js';
import * as scenarioKeys from './commands/scenario-keys.js';
import * as sensitivity from './commands/sensitivity.js';
import * as serve from './commands/serve.js';
import * as sweep from './commands/sweep.js';
import { settleStdout, watchStdStreams } from './stdout.js';

const USAGE = `vmmsim: a multi-process simulator of virtual-IOMMU architectures

usage: vmmsim <command> [options]

commands:
  run [scenario.yaml]       run one architecture on a scenario
  compare [scenario.yaml]   run several architectures on the same scenario, side by side
  sweep [scenario.yaml]     run the cross product of scenario values (--set key=v1,v2,...) and models
  saturate [scenario.yaml]  find each model's highest sustained open-loop rate under a p99 bound
  sensitivity [scenario.yaml]
                            run several architectures once, then re-price them across the cost ranges:
                            each comparison's ratio, its spread, and the steps it depends on
  explain --model NAME      print one operation as a call graph across the processes, step by step
  serve <role>              run one role process standalone, for run|compare|sweep|saturate --connect
  report results.json       write an HTML report (charts and every number) of a results.json
  decode-cmd W0 W1 [...]    decode SMMUv3 commands given as pairs of 64-bit hex words
  scenario-keys             list every scenario key with its default and allowed values
                            (--json-schema: the scenario format as a JSON Schema)
  help [command]            this text, or a command's options

Run \`vmmsim <command> --help\` for a command's options. Exit codes: 0 ok, 1 run failed, 2 bad input.`;

/** A command: its help (none: `vmmsim help NAME` prints the usage above) and what it does. */
interface Command {
  HELP?: string;
  command(argv: string[]): Promise<number>;
}

/** Every command by name, in the order the usage and the unknown-command message list them. */
const COMMANDS: Readonly<Record<string, Command>> = {
  run,
  compare: { HELP: run.HELP, command: run.compare },
  sweep,
  saturate,
  sensitivity,
  explain,
  serve,
  report,
  'decode-cmd': decodeCmd,
  'scenario-keys': scenarioKeys,
};

function commandOf(name: string | undefined): Command | undefined {
  return name !== undefined && Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
}

/**
 * The CLI: returns the process exit code. Output on stdout that could not be written (a full
 * device, a closed pipe) ends it with E_WRITE, exit 1, once the command is done: its results are
 * in their files by then.
 */
export async function main(argv: string[]): Promise<number> {
  watchStdStreams();
  const code = await runCommand(argv);
  const unwritten = await settleStdout();
  if (!unwritten) return code;
  process.stderr.write(unwritten.line() + '\n');
  return code === 0 ? unwritten.exitCode : code;
}

/** Runs one command: returns its exit code; bad input and failures are one line on stderr. */
async function runCommand(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  try {
    switch (name) {
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write((commandOf(rest[0])?.HELP ?? USAGE) + '\n');
        return 0;
      case '--version':
        process.stdout.write(version() + '\n');
        return 0;
    }
    const command = commandOf(name);
    if (!command) throw usageError(`unknown command "${name}"; commands: ${[...Object.keys(COMMANDS), 'help'].join(', ')}`);
    return await command.command(rest);
  } catch (err) {
    return failed(err);
  }
}
