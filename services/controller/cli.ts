import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MEASURED_HOST, MEASURED_HOST_BASE } from '../common/cost/measured-host.js';
import { loadProfile, type CostProfile } from '../common/cost/profile.js';
import { VmmsimError, asVmmsimError } from '../common/errors.js';
import { createLogger, isLogLevel, resolveLogLevel, type Logger } from '../common/logger.js';
import { packageRoot } from '../common/paths.js';
import { loadScenario } from '../common/scenario/load.js';
import { MODELS, SUPPORTED_MODELS, SVA_MODELS, describeSchema, type ModelName, type Scenario } from '../common/scenario/schema.js';
import { decodeCommand, formatCommand, parseHexWord, CMD_SIZE } from '../common/smmu/commands.js';
import { MAX_SID_PAIRS } from '../common/iommufd-objects.js';
import { ProcessTree } from './launcher.js';
import { RESULTS_SCHEMA, defaultOutDir, writeProfile, writeResults, type ResultsDoc, type RunResult } from './results.js';
import { Session, processSpecs } from './session.js';
import { comparisonTable, dmaMapBenchmarkReport, hopTable } from './table.js';

const USAGE = `vmmsim: a multi-process simulator of virtual-IOMMU architectures

usage: vmmsim <command> [options]

commands:
  run [scenario.yaml]       run one architecture on a scenario
  compare [scenario.yaml]   run several architectures on the same scenario, side by side
  decode-cmd W0 W1 [...]    decode SMMUv3 commands given as pairs of 64-bit hex words
  scenario-keys             list every scenario key with its default and allowed values
  help [command]            this text, or a command's options

Run \`vmmsim <command> --help\` for a command's options. Exit codes: 0 ok, 1 run failed, 2 bad input.`;

const RUN_OPTIONS = {
  model: { type: 'string' },
  models: { type: 'string' },
  ops: { type: 'string' },
  duration: { type: 'string' },
  seed: { type: 'string' },
  set: { type: 'string', multiple: true },
  out: { type: 'string' },
  json: { type: 'boolean' },
  profile: { type: 'string' },
  transport: { type: 'string' },
  'log-level': { type: 'string' },
  'start-timeout': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const RUN_HELP = `usage: vmmsim run [scenario.yaml] [options]
       vmmsim compare [scenario.yaml] [options]

Starts guest, kvm, qemu, vfio and psmmu processes, runs the scenario's workload through the chosen
architecture(s), prints a table and writes results.json.

options:
  --model NAME          (run) architecture; default: the scenario's model
  --models all|a,b,...  (compare) architectures; default: all that this build supports
                        (${SUPPORTED_MODELS.join(', ')})
  --ops N               map+unmap iterations (workload.ops)
  --duration S          stop after S seconds (workload.durationSec); alone, it lifts the ops limit
  --seed N              seed (same seed, same modeled results)
  --set key=value       any scenario key, dotted (repeatable): --set topology.psmmus=2
  --profile NAME|PATH   cost profile (profiles/NAME.yaml or a file)
  --out DIR             write DIR/results.json (default: results/<time>-<name>-<pid>/)
  --json                print the results document on stdout and nothing else there
  --transport unix|tcp  how processes talk: Unix sockets in a private folder (default) or loopback TCP
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (or VMMSIM_LOG_LEVEL); logs go to stderr
  --start-timeout MS    how long a process may take to report ready (default 20000)
  -h, --help            this text

Keys of a scenario: \`vmmsim scenario-keys\`.`;

const DECODE_HELP = `usage: vmmsim decode-cmd W0 W1 [W0 W1 ...] [--json]

Decodes SMMUv3 commands, each given as its two 64-bit words in 0x-prefixed hex (as QEMU traces and
kernel logs print them). Prints opcode, name and fields; an unknown opcode decodes as ILLEGAL with
error CERROR_ILL.`;

function usageError(message: string): VmmsimError {
  return new VmmsimError('E_USAGE', message);
}

function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O): ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError((err as Error).message.replace(/\s*\n\s*/g, ' ').trim());
  }
}

function intOption(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw usageError(`--${name} must be an integer >= ${min}, got "${v}"`);
  return n;
}

function parseModels(spec: string): ModelName[] {
  if (spec === 'all') return [...SUPPORTED_MODELS];
  const names = spec.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw usageError('--models needs "all" or a comma-separated list of models');
  for (const n of names) {
    if (!(MODELS as readonly string[]).includes(n)) throw usageError(`unknown model "${n}"; models: ${MODELS.join(', ')}`);
    if (!SUPPORTED_MODELS.includes(n as ModelName)) throw new VmmsimError('E_NOT_SUPPORTED', `model "${n}" is not supported yet; supported now: ${SUPPORTED_MODELS.join(', ')}`);
  }
  return names as ModelName[];
}

interface RunPlan {
  scenario: Scenario;
  models: ModelName[];
  profile: CostProfile;
  /** --profile measured-host: calibrate the transitions on this machine before the runs. */
  measureHost: boolean;
  out: string;
  json: boolean;
  transport: 'unix' | 'tcp';
  logLevel: string;
  startTimeoutMs: number;
}

function plan(command: 'run' | 'compare', argv: string[]): RunPlan | undefined {
  const { values, positionals } = parse(argv, RUN_OPTIONS);
  if (values.help) {
    process.stdout.write(RUN_HELP + '\n');
    return undefined;
  }
  if (positionals.length > 1) throw usageError(`${command} takes at most one scenario file, got ${positionals.length}: ${positionals.join(' ')}`);
  if (command === 'run' && values.models) throw usageError('--models is for `vmmsim compare`; `vmmsim run` takes --model NAME');
  if (command === 'compare' && values.model) throw usageError('--model is for `vmmsim run`; `vmmsim compare` takes --models all|a,b');
  const overrides: Record<string, unknown> = {};
  const ops = intOption('ops', values.ops, 0);
  if (values.duration !== undefined) {
    const d = Number(values.duration);
    if (!Number.isFinite(d) || d <= 0) throw usageError(`--duration must be a number of seconds > 0, got "${values.duration}"`);
    overrides['workload.durationSec'] = d;
    if (ops === undefined) overrides['workload.ops'] = 0;
  }
  if (ops !== undefined) overrides['workload.ops'] = ops;
  const seed = intOption('seed', values.seed, 0);
  if (seed !== undefined) overrides['seed'] = seed;
  if (values.model) overrides['model'] = values.model;
  if (values.profile) overrides['profile'] = values.profile;
  const scenario = loadScenario(positionals[0], values.set ?? [], overrides);
  if (scenario.workload.kind === 'trace-replay') {
    if (scenario.workload.trace === '') throw new VmmsimError('E_SCENARIO_FIELD', 'scenario key workload.trace: trace-replay needs the path of an ftrace file (for example scenarios/traces/sample.trace)');
    const trace = resolve(scenario.workload.trace);
    try {
      accessSync(trace, constants.R_OK);
      if (!statSync(trace).isFile()) throw new Error('not a regular file');
    } catch (err) {
      throw new VmmsimError('E_TRACE_FILE', `cannot read trace ${scenario.workload.trace}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    // The guest process reads it: hand it an absolute path.
    scenario.workload.trace = trace;
  } else if (scenario.workload.trace !== '') {
    throw new VmmsimError('E_SCENARIO_FIELD', `scenario key workload.trace: only trace-replay reads a trace; workload.kind is ${scenario.workload.kind}`);
  }
  if (scenario.workload.kind === 'dma-map-benchmark' && scenario.workload.ops === 0 && scenario.workload.durationSec === 0) {
    throw new VmmsimError('E_SCENARIO_FIELD', 'scenario key workload.ops: 0 (no limit) needs workload.durationSec > 0, or the run never ends');
  }
  const transport = values.transport ?? 'unix';
  if (transport !== 'unix' && transport !== 'tcp') throw usageError(`--transport must be unix or tcp, got "${transport}"`);
  if (values['log-level'] !== undefined && !isLogLevel(values['log-level'])) throw usageError(`--log-level must be one of fatal, error, warn, info, debug, trace, silent`);
  let models = command === 'compare' ? parseModels(values.models ?? 'all') : [scenario.model];
  if (scenario.workload.kind === 'sva-unmap-storm') {
    // "all" means every architecture that has SVA; a named one without it is refused up front.
    if (command === 'compare' && (values.models ?? 'all') === 'all') models = models.filter((m) => SVA_MODELS.includes(m));
    const without = models.filter((m) => !SVA_MODELS.includes(m));
    if (without.length > 0) {
      throw new VmmsimError('E_NOT_SUPPORTED', `workload sva-unmap-storm needs SVA, which ${without.join(', ')} has not; architectures with SVA: ${SVA_MODELS.join(', ')}`);
    }
  }
  if (models.includes('nested-smmuv3-vcmdq') && scenario.topology.devicesPerPsmmu > MAX_SID_PAIRS) {
    throw new VmmsimError('E_SCENARIO_FIELD', `scenario key topology.devicesPerPsmmu: at most ${MAX_SID_PAIRS} with nested-smmuv3-vcmdq (a VINTF holds ${MAX_SID_PAIRS} SID_MATCH/SID_REPLACE pairs), got ${scenario.topology.devicesPerPsmmu}`);
  }
  return {
    scenario,
    models,
    profile: loadProfile(scenario.profile === MEASURED_HOST ? MEASURED_HOST_BASE : scenario.profile),
    measureHost: scenario.profile === MEASURED_HOST,
    out: values.out ?? defaultOutDir(scenario.name),
    json: values.json ?? false,
    transport,
    logLevel: resolveLogLevel(values['log-level']),
    startTimeoutMs: intOption('start-timeout', values['start-timeout'], 1000) ?? 20_000,
  };
}

function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/**
 * Runs the plan: starts the process tree, runs each model, and always ends with the tree stopped
 * and results.json written, whatever happened (a crash, a signal, a deadline).
 */
async function execute(p: RunPlan, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-'));
  // Guest RAM and host tables are files every process of the host maps; tmpfs keeps them in RAM.
  const ramDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmmsim-ram-'));
  const tree = new ProcessTree({ socketDir, transport: p.transport, logLevel: p.logLevel, startTimeoutMs: p.startTimeoutMs, log });
  const runs: RunResult[] = [];
  let abort!: (err: VmmsimError) => void;
  const aborted = new Promise<never>((_, reject) => {
    abort = reject;
  });
  aborted.catch(() => undefined);
  tree.on('exit', (err) => abort(err));
  const onSignal = (sig: NodeJS.Signals): void => abort(new VmmsimError('E_INTERRUPTED', `interrupted by ${sig}`));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const lastResort = (): void => {
    tree.killAll();
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
  };
  process.on('exit', lastResort);

  let failure: VmmsimError | undefined;
  let session: Session | undefined;
  try {
    await Promise.race([tree.start(processSpecs(p.scenario)), aborted]);
    session = new Session(tree, log, ramDir);
    if (p.measureHost) {
      if (!p.json) process.stderr.write('vmmsim: measuring this host\'s transitions (calibration run)...\n');
      p.profile = await Promise.race([session.calibrate(p.scenario, p.profile), aborted]);
      writeProfile(p.out, p.profile);
    }
    for (const model of p.models) {
      if (!p.json) process.stderr.write(`vmmsim: running ${model} (${p.scenario.workload.kind}, ${p.scenario.dma})...\n`);
      runs.push(await Promise.race([session.run(p.scenario, model, p.profile), aborted]));
    }
  } catch (err) {
    failure = asVmmsimError(err);
  } finally {
    session?.close();
    await tree.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
    process.off('exit', lastResort);
  }

  const doc: ResultsDoc = {
    schema: RESULTS_SCHEMA,
    status: failure ? (failure.code === 'E_INTERRUPTED' ? 'interrupted' : 'failed') : 'ok',
    ...(failure ? { error: { code: failure.code, message: failure.message } } : {}),
    tool: { name: 'vmmsim', version: version() },
    startedAt,
    finishedAt: new Date().toISOString(),
    scenario: p.scenario,
    seed: p.scenario.seed,
    profile: { name: p.profile.name, path: p.profile.path },
    runs,
  };
  const path = writeResults(p.out, doc);
  if (p.json) {
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  } else if (runs.length > 0) {
    process.stdout.write(comparisonTable(runs) + '\n');
    // Hop tables for one model; a comparison keeps to its tables (every hop is in results.json).
    if (runs.length === 1) for (const run of runs) if (run.hops.length > 0) process.stdout.write(`\nhops of ${run.model} (measured, one way):\n${hopTable(run)}\n`);
    if (p.scenario.workload.kind === 'dma-map-benchmark') process.stdout.write(`\n${runs.map(dmaMapBenchmarkReport).join('\n')}\n`);
    const trace = runs[0]?.workloadCounters;
    if (trace && 'events' in trace) {
      process.stdout.write(
        `\ntrace ${p.scenario.workload.trace}: ${trace['events']} map/unmap events, ${trace['replayed']} replayed, ${trace['unmatchedUnmaps']} unmaps with no earlier map; ` +
          `lines skipped: ${trace['skipped.header']} header, ${trace['skipped.otherIommuEvent']} other iommu events, ${trace['skipped.otherEvent']} other events, ${trace['skipped.unparsable']} unparsable\n`,
      );
    }
    process.stdout.write(`\nresults: ${path}\n`);
  }
  if (failure) {
    process.stderr.write(failure.line() + '\n');
    if (!p.json) process.stderr.write(`vmmsim: partial results: ${path}\n`);
    return failure.exitCode;
  }
  return 0;
}

function decodeCmd(argv: string[]): number {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } });
  if (values.help) {
    process.stdout.write(DECODE_HELP + '\n');
    return 0;
  }
  if (positionals.length === 0 || positionals.length % 2 !== 0) throw usageError(`decode-cmd takes pairs of words (W0 W1), got ${positionals.length} word(s)`);
  const out = [];
  for (let i = 0; i < positionals.length; i += 2) {
    const buf = Buffer.alloc(CMD_SIZE);
    try {
      buf.writeBigUInt64LE(parseHexWord(positionals[i] as string), 0);
      buf.writeBigUInt64LE(parseHexWord(positionals[i + 1] as string), 8);
    } catch (err) {
      throw usageError(`command ${i / 2}: ${(err as Error).message}`);
    }
    out.push(formatCommand(decodeCommand(buf, 0)));
  }
  if (values.json) process.stdout.write(JSON.stringify(out.length === 1 ? out[0] : out, null, 2) + '\n');
  else {
    for (const c of out) {
      const fields = Object.entries(c.fields).map(([k, v]) => `${k}=${v}`).join(' ');
      process.stdout.write(`0x${c.opcode.toString(16).padStart(2, '0')} ${c.name}${c.error ? ` (${c.error})` : ''}${fields ? ' ' + fields : ''}\n`);
    }
  }
  return 0;
}

/** The CLI: returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  let log: Logger | undefined;
  try {
    switch (command) {
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        if (rest[0] === 'run' || rest[0] === 'compare') process.stdout.write(RUN_HELP + '\n');
        else if (rest[0] === 'decode-cmd') process.stdout.write(DECODE_HELP + '\n');
        else process.stdout.write(USAGE + '\n');
        return 0;
      case '--version':
        process.stdout.write(version() + '\n');
        return 0;
      case 'scenario-keys':
        process.stdout.write(`${'key'.padEnd(26)} ${'default'.padEnd(18)} allowed\n${describeSchema()}\n`);
        return 0;
      case 'decode-cmd':
        return decodeCmd(rest);
      case 'run':
      case 'compare': {
        const p = plan(command, rest);
        if (!p) return 0;
        log = createLogger({ role: 'controller', name: 'controller' }, p.logLevel as never);
        return await execute(p, log);
      }
      default:
        throw usageError(`unknown command "${command}"; commands: run, compare, decode-cmd, scenario-keys, help`);
    }
  } catch (err) {
    const e = asVmmsimError(err);
    process.stderr.write(e.line() + '\n');
    if (e.code === 'E_RUN') log?.error({ err }, 'unexpected failure');
    return e.exitCode;
  }
}
