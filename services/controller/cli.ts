import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MEASURED_HOST, MEASURED_HOST_BASE } from './measured-host.js';
import { loadProfile, type CostProfile } from '../cost/profile.js';
import { VmmsimError, asVmmsimError } from '../runtime/errors.js';
import { createLogger, isLogLevel, resolveLogLevel, type LogLevel, type Logger } from '../runtime/logger.js';
import { packageRoot } from '../runtime/paths.js';
import { loadScenario } from './scenario-load.js';
import { checkEmulatedDevices } from '../scenario/validate.js';
import { EMULATED_DEVICE_MODELS, MODELS, SUPPORTED_MODELS, SVA_MODELS, describeSchema, type ModelName, type Scenario } from '../scenario/schema.js';
import { decodeCommand, formatCommand, parseHexWord, CMD_SIZE } from '../formats/smmu/commands.js';
import { MAX_SID_PAIRS } from '../machine/iommufd-objects.js';
import { INSECURE, TLS_OPTIONS, mutualTls, tlsFiles, type TlsFiles } from '../runtime/transport/credentials.js';
import { TELEMETRY_HELP, TELEMETRY_OPTIONS, treeDown, treeTelemetry, treeUp, withControllerMetrics, type TreeTelemetry } from './telemetry.js';
import { CONNECT_HELP, CONNECT_OPTIONS, connectTarget, requireEndpoints, withConnected, type ConnectTarget } from './connect.js';
import { ProcessTree, type ProcessSpec } from './launcher.js';
import { failureCause } from './failure-cause.js';
import { LivenessWatch } from './liveness.js';
import { SERVE_HELP, serveCommand } from './serve.js';
import { REPORT_FILE, REPORT_HELP, reportCommand, saveResults } from './report/command.js';
import { Progress, progressMode } from './progress.js';
import { toCsv } from './csv.js';
import { RESULTS_SCHEMA, defaultOutDir, profileFile, writeFileAtomic, writeProfile, type ResultsDoc, type RunResult, type SaturationResult } from './results.js';
import { checkOutDir } from './output-path.js';
import { settleStdout, watchStdStreams } from './stdout.js';
import { checkTraceFile } from './trace-check.js';
import { Session, processSpecs } from './session.js';
import { MAX_SWEEP_RUNS, describeRun, planSweep, saturationCsvRecords, sweepCsvRecords, type SweepPlan } from './sweep.js';
import { comparisonTable, dmaMapBenchmarkReport, hopTable, sweepSaturationTable, sweepTable } from './table.js';
import { withLoad } from './load.js';
import { SATURATE_HELP, SEARCH_OPTIONS, checkSearchable, executeSaturate, planSaturate, progressLine, saturateModel, searchSettings, type SearchSettings } from './saturate.js';

const USAGE = `vmmsim: a multi-process simulator of virtual-IOMMU architectures

usage: vmmsim <command> [options]

commands:
  run [scenario.yaml]       run one architecture on a scenario
  compare [scenario.yaml]   run several architectures on the same scenario, side by side
  sweep [scenario.yaml]     run the cross product of scenario values (--set key=v1,v2,...) and models
  saturate [scenario.yaml]  find each model's highest sustained open-loop rate under a p99 bound
  serve <role>              run one role process standalone, for run|compare|sweep|saturate --connect
  report results.json       write an HTML report (charts and every number) of a results.json
  decode-cmd W0 W1 [...]    decode SMMUv3 commands given as pairs of 64-bit hex words
  scenario-keys             list every scenario key with its default and allowed values
  help [command]            this text, or a command's options

Run \`vmmsim <command> --help\` for a command's options. Exit codes: 0 ok, 1 run failed, 2 bad input.`;

export const RUN_OPTIONS = {
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
  ...CONNECT_OPTIONS,
  ...TLS_OPTIONS,
  ...TELEMETRY_OPTIONS,
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
${CONNECT_HELP}
${TELEMETRY_HELP}
  -h, --help            this text

Keys of a scenario: \`vmmsim scenario-keys\`.`;

const SWEEP_HELP = `usage: vmmsim sweep [scenario.yaml] --set key=v1,v2,... [--set ...] [options]

Runs the cross product of the swept values and the models: one run per point and model. Points
that need other processes (topology.psmmus, topology.vms, topology.hosts) get a new process tree;
points that share the processes reuse theirs. Prints a line on stderr as each run starts, then a
table on stdout, one row per run: the swept values, the model, its main operation (unmap, or the
workload's own) with transitions and latency, throughput and invalidation fanout. Writes
results.json (one entry in runs[] per run, each with its point) and results.csv (one record per run).

  vmmsim sweep --set topology.psmmus=1,2,4,8,16 --set topology.vsmmu=single,per-psmmu \\
               --models nested-smmuv3,nested-smmuv3-vcmdq

options:
  --set key=v1,v2,...   a swept key, dotted (repeatable): one point per value, the first key varying
                        slowest. With one value (--set key=value) it is a plain override, as in run.
                        Lists are split at commas: no scenario key takes a value with a comma today.
                        Every value is checked by the scenario schema before any process starts.
  --models all|a,b,...  architectures at each point; default: the scenario's model only
                        (all: ${SUPPORTED_MODELS.join(', ')})
  --saturate            at each point and model, search the saturation rate instead of one run
                        (as \`vmmsim saturate\`, which lists the search options: --p99-bound-us X
                        is required; --metric, --op, --from, --max, --steps); writes saturation.csv
  --ops N               map+unmap iterations (workload.ops) at each point
  --duration S          stop each run after S seconds (workload.durationSec); alone, it lifts the
                        ops limit
  --seed N              seed (same seed, same modeled results)
  --profile NAME|PATH   cost profile (profiles/NAME.yaml or a file)
  --out DIR             write DIR/results.json and DIR/results.csv
                        (default: results/<time>-<name>-sweep-<pid>/)
  --json                print the results document on stdout and nothing else there
  --transport unix|tcp  how processes talk: Unix sockets in a private folder (default) or loopback TCP
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (or VMMSIM_LOG_LEVEL); logs go to stderr
  --start-timeout MS    how long a process may take to report ready (default 20000)
${CONNECT_HELP}
                        (--connect: the file names the processes of every point)
${TELEMETRY_HELP}
  -h, --help            this text

At most ${MAX_SWEEP_RUNS} runs (points x models). Keys of a scenario: \`vmmsim scenario-keys\`.

  vmmsim sweep --set topology.psmmus=1,2,4,8,16 --set topology.vsmmu=single,per-psmmu \\
               --set workload.threads=4 --models nested-smmuv3 --saturate --p99-bound-us 50`;

const DECODE_HELP = `usage: vmmsim decode-cmd W0 W1 [W0 W1 ...] [--json]

Decodes SMMUv3 commands, each given as its two 64-bit words in 0x-prefixed hex (as QEMU traces and
kernel logs print them). Prints opcode, name and fields; an unknown opcode decodes as ILLEGAL with
error CERROR_ILL.`;

export function usageError(message: string): VmmsimError {
  return new VmmsimError('E_USAGE', message);
}

export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O): ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError((err as Error).message.replace(/\s*\n\s*/g, ' ').trim());
  }
}

export function intOption(name: string, v: string | undefined, min: number): number | undefined {
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

/** How a command's process trees run. */
export interface TreeSettings {
  transport: 'unix' | 'tcp';
  logLevel: LogLevel;
  startTimeoutMs: number;
  /** --connect: drive the processes a file names instead of launching a tree. */
  connect?: ConnectTarget | undefined;
  /** Mutual TLS on every link (the launched roles get the same files). */
  tls?: TlsFiles | undefined;
  /** --metrics-port, --metrics-host, --otlp-endpoint, --trace-sample. */
  telemetry?: TreeTelemetry | undefined;
}

/** A command's plan that runs one scenario's models on one process tree (run, compare, saturate). */
export interface RunPlan extends TreeSettings {
  scenario: Scenario;
  models: ModelName[];
  profile: CostProfile;
  /** --profile measured-host: calibrate the transitions on this machine before the runs. */
  measureHost: boolean;
  out: string;
  json: boolean;
}

interface SweepCommand extends TreeSettings {
  sweep: SweepPlan;
  /** --saturate: a saturation search at each point and model instead of one run. */
  search: SearchSettings | undefined;
  /** The cost profile of each profile name the points use. */
  profiles: Map<string, CostProfile>;
  measureHost: boolean;
  out: string;
  json: boolean;
}

type RunValues = ReturnType<typeof parse<typeof RUN_OPTIONS>>['values'];

/** The option that sets each scenario key it sets, for messages. */
const OPTION_OF_KEY: Record<string, string> = {
  'workload.ops': '--ops (or --duration alone)',
  'workload.durationSec': '--duration',
  seed: '--seed',
  model: '--model',
  profile: '--profile',
};

/**
 * The files a command writes in its --out folder: checked before anything starts, so a folder that
 * is a file, or a results.json that is a FIFO, is bad input and not a failed run.
 */
export function checkOut(out: string, o: { measureHost: boolean; sweep?: boolean; saturation?: boolean }): void {
  const files = ['results.json', REPORT_FILE];
  if (o.sweep) files.push('results.csv');
  if (o.saturation) files.push('saturation.csv');
  if (o.measureHost) files.push(profileFile(MEASURED_HOST));
  checkOutDir(out, files);
}

/** The scenario keys that options set (--ops, --duration, --seed, --model, --profile). */
export function optionOverrides(values: RunValues): Record<string, unknown> {
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
  return overrides;
}

/** Checks of a resolved scenario that its schema cannot make alone; makes a trace's path absolute. */
export function checkScenario(scenario: Scenario): void {
  if (scenario.workload.kind === 'trace-replay') {
    if (scenario.workload.trace === '') throw new VmmsimError('E_SCENARIO_FIELD', 'scenario key workload.trace: trace-replay needs the path of an ftrace file (for example scenarios/traces/sample.trace)');
    const trace = resolve(scenario.workload.trace);
    // Read through here, not only by the guest: a trace with nothing to replay is bad input, found before anything starts.
    checkTraceFile(trace, scenario.workload.trace);
    // The guest process reads it: hand it an absolute path.
    scenario.workload.trace = trace;
  } else if (scenario.workload.trace !== '') {
    throw new VmmsimError('E_SCENARIO_FIELD', `scenario key workload.trace: only trace-replay reads a trace; workload.kind is ${scenario.workload.kind}`);
  }
  if (scenario.workload.kind === 'dma-map-benchmark' && scenario.workload.ops === 0 && scenario.workload.durationSec === 0) {
    throw new VmmsimError('E_SCENARIO_FIELD', 'scenario key workload.ops: 0 (no limit) needs workload.durationSec > 0, or the run never ends');
  }
}

/**
 * The architectures to run a scenario under: `spec` as --models takes it, or the scenario's own
 * model when undefined; refused when the workload or the topology rules one out.
 */
export function modelsFor(scenario: Scenario, spec: string | undefined): ModelName[] {
  let models = spec === undefined ? [scenario.model] : parseModels(spec);
  if (scenario.workload.kind === 'sva-unmap-storm') {
    // "all" means every architecture that has SVA; a named one without it is refused up front.
    if (spec === 'all') models = models.filter((m) => SVA_MODELS.includes(m));
    const without = models.filter((m) => !SVA_MODELS.includes(m));
    if (without.length > 0) {
      throw new VmmsimError('E_NOT_SUPPORTED', `workload sva-unmap-storm needs SVA, which ${without.join(', ')} has not; architectures with SVA: ${SVA_MODELS.join(', ')}`);
    }
  }
  if (scenario.topology.emulatedDevices > 0) {
    // As for SVA: "all" means the architectures that can put emulated devices beside assigned ones.
    if (spec === 'all') models = models.filter((m) => EMULATED_DEVICE_MODELS.includes(m));
    for (const m of models) checkEmulatedDevices(scenario.topology, m);
  }
  if (models.includes('nested-smmuv3-vcmdq') && scenario.topology.devicesPerPsmmu > MAX_SID_PAIRS) {
    throw new VmmsimError('E_SCENARIO_FIELD', `scenario key topology.devicesPerPsmmu: at most ${MAX_SID_PAIRS} with nested-smmuv3-vcmdq (a VINTF holds ${MAX_SID_PAIRS} SID_MATCH/SID_REPLACE pairs), got ${scenario.topology.devicesPerPsmmu}`);
  }
  return models;
}

export function treeSettings(values: RunValues): TreeSettings {
  const transport = values.transport ?? 'unix';
  if (transport !== 'unix' && transport !== 'tcp') throw usageError(`--transport must be unix or tcp, got "${transport}"`);
  if (values['log-level'] !== undefined && !isLogLevel(values['log-level'])) throw usageError(`--log-level must be one of fatal, error, warn, info, debug, trace, silent`);
  const connect = connectTarget(values);
  const tls = tlsFiles(values);
  // Read and checked now: a bad certificate is bad input, found before any process starts.
  if (tls) mutualTls(tls);
  return { transport, logLevel: resolveLogLevel(values['log-level']), startTimeoutMs: intOption('start-timeout', values['start-timeout'], 1000) ?? 20_000, connect, tls, telemetry: treeTelemetry(values) };
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
  const scenario = loadScenario(positionals[0], values.set ?? [], optionOverrides(values));
  checkScenario(scenario);
  const settings = treeSettings(values);
  if (settings.connect) requireEndpoints(settings.connect, processSpecs(scenario));
  const models = modelsFor(scenario, command === 'compare' ? (values.models ?? 'all') : undefined);
  const out = values.out ?? defaultOutDir(scenario.name);
  const calibrate = scenario.profile === MEASURED_HOST;
  checkOut(out, { measureHost: calibrate });
  return {
    scenario,
    models,
    profile: loadProfile(calibrate ? MEASURED_HOST_BASE : scenario.profile),
    measureHost: calibrate,
    out,
    json: values.json ?? false,
    ...settings,
  };
}

/** `vmmsim sweep`: every point resolved and checked, every profile loaded, before anything starts. */
function planSweepCommand(argv: string[]): SweepCommand | undefined {
  const { values, positionals } = parse(argv, { ...RUN_OPTIONS, ...SEARCH_OPTIONS, saturate: { type: 'boolean' } } as const);
  if (values.help) {
    process.stdout.write(SWEEP_HELP + '\n');
    return undefined;
  }
  if (positionals.length > 1) throw usageError(`sweep takes at most one scenario file, got ${positionals.length}: ${positionals.join(' ')}`);
  if (values.model) throw usageError('--model is for `vmmsim run`; `vmmsim sweep` takes --models all|a,b (default: the scenario\'s model)');
  const overrides: Record<string, unknown> = optionOverrides(values);
  const searchKeys = Object.keys(SEARCH_OPTIONS).filter((k) => values[k as keyof typeof SEARCH_OPTIONS] !== undefined);
  if (!values.saturate && searchKeys.length > 0) throw usageError(`--${searchKeys[0]} is a saturation search option: add --saturate`);
  const search = values.saturate ? searchSettings(values) : undefined;
  if (search) {
    checkSearchable(values.set ?? [], loadScenario(positionals[0], (values.set ?? []).filter((x) => !x.includes(',')), overrides).workload.kind);
    overrides['workload.rate'] = search.from;
  }
  const settings = treeSettings(values);
  // A bad --models fails once here rather than at the first point.
  if (values.models !== undefined) parseModels(values.models);
  const sweep = planSweep({
    sets: values.set ?? [],
    fixed: Object.fromEntries(Object.keys(overrides).map((k) => [k, OPTION_OF_KEY[k] ?? k])),
    resolve: (sets) => {
      const s = loadScenario(positionals[0], sets, overrides);
      checkScenario(s);
      return s;
    },
    models: (s) => modelsFor(s, values.models),
  });
  const profiles = new Map<string, CostProfile>();
  for (const { scenario } of sweep.points) {
    if (!profiles.has(scenario.profile)) profiles.set(scenario.profile, loadProfile(scenario.profile === MEASURED_HOST ? MEASURED_HOST_BASE : scenario.profile));
  }
  const measureHost = profiles.has(MEASURED_HOST);
  if (measureHost && sweep.keys.includes('profile')) throw usageError(`--set profile=...: ${MEASURED_HOST} calibrates once for the whole sweep; give it with --profile, not in a list`);
  const first = sweep.points[0]?.scenario;
  if (!first) throw usageError('the sweep has no point');
  // Every point's processes must be in the file before the first run, not at the point that lacks one.
  if (settings.connect) requireEndpoints(settings.connect, sweep.points.flatMap((pt) => processSpecs(pt.scenario)));
  const out = values.out ?? defaultOutDir(`${first.name}-sweep`);
  checkOut(out, { measureHost, sweep: true, saturation: search !== undefined });
  return { sweep, search, profiles, measureHost, out, json: values.json ?? false, ...settings };
}

function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/**
 * What ends a command's runs early: a process of a tree that exits, SIGINT or SIGTERM. Each step a
 * command awaits races it. Its signal handlers stay for the whole command, across a sweep's trees.
 */
export class RunAbort {
  private failure: VmmsimError | undefined;
  private readonly aborted: Promise<never>;
  private reject: (err: VmmsimError) => void = () => undefined;
  private readonly onSignal = (sig: NodeJS.Signals): void => this.abort(new VmmsimError('E_INTERRUPTED', `interrupted by ${sig}`));

  constructor() {
    this.aborted = new Promise<never>((_, reject) => {
      this.reject = reject;
    });
    this.aborted.catch(() => undefined);
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  readonly abort = (err: VmmsimError): void => {
    this.failure ??= err;
    this.reject(err);
  };

  throwIfAborted(): void {
    if (this.failure) throw this.failure;
  }

  race<T>(step: Promise<T>): Promise<T> {
    // A step left behind by an abort may fail later: that is no unhandled rejection.
    step.catch(() => undefined);
    return Promise.race([step, this.aborted]);
  }

  dispose(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}

/**
 * Starts a process tree for `specs`, hands its session to `body`, and always ends with the tree
 * stopped and its socket and memory folders removed, whatever happened (a crash, a signal, a
 * deadline). A process that exits while the tree is up aborts the command.
 */
export async function withTree(settings: TreeSettings, specs: ProcessSpec[], abort: RunAbort, log: Logger, body: (session: Session) => Promise<void>): Promise<void> {
  if (settings.connect) return withConnected({ ...settings, connect: settings.connect }, specs, abort, log, body);
  abort.throwIfAborted();
  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-'));
  // Guest RAM and host tables are files every process of the host maps; tmpfs keeps them in RAM.
  const ramDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmmsim-ram-'));
  const tree = new ProcessTree({ socketDir, ramDir, transport: settings.transport, logLevel: settings.logLevel, startTimeoutMs: settings.startTimeoutMs, log, tls: settings.tls, telemetry: settings.telemetry });
  tree.on('exit', abort.abort);
  // Exits as the launcher reports them, to name the cause when a run fails (failure-cause.ts).
  const exits: VmmsimError[] = [];
  tree.on('exit', (e) => exits.push(e));
  const lastResort = (): void => {
    tree.killAll();
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
  };
  process.on('exit', lastResort);
  let session: Session | undefined;
  let watch: LivenessWatch | undefined;
  try {
    await abort.race(tree.start(specs));
    treeUp(settings.telemetry, tree.processes);
    const security = settings.tls ? mutualTls(settings.tls) : INSECURE;
    session = new Session(tree, log, ramDir, security);
    // A process that stops answering ends the command instead of failing its peers' requests one by one.
    watch = new LivenessWatch(tree.processes, { onFailure: abort.abort, security, local: true });
    watch.start();
    await body(session);
  } catch (err) {
    throw await failureCause(err, tree.processes, exits);
  } finally {
    watch?.stop();
    session?.close();
    await tree.stop();
    treeDown();
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
    process.off('exit', lastResort);
  }
}

export function resultsDoc(startedAt: string, scenario: Scenario, profile: CostProfile, runs: RunResult[], failure: VmmsimError | undefined, sweep?: ResultsDoc['sweep']): ResultsDoc {
  return {
    schema: RESULTS_SCHEMA,
    status: failure ? (failure.code === 'E_INTERRUPTED' ? 'interrupted' : 'failed') : 'ok',
    ...(failure ? { error: { code: failure.code, message: failure.message } } : {}),
    tool: { name: 'vmmsim', version: version() },
    startedAt,
    finishedAt: new Date().toISOString(),
    scenario,
    seed: scenario.seed,
    profile: { name: profile.name, path: profile.path },
    ...(sweep ? { sweep } : {}),
    // An open-loop run carries its requested and achieved rates.
    runs: runs.map(withLoad),
  };
}

/** What writing a command's results gave: the files' lines for the user, or why they could not be written. */
export interface Saved {
  /** results.json, when it was written. */
  path: string | undefined;
  /** The lines that say where the files are (empty when none was written). */
  where: string;
  error: VmmsimError | undefined;
}

/**
 * Writes a command's results (`write` gives results.json's path and the lines naming each file). A
 * failure to write (E_WRITE, E_OUTPUT_PATH) is kept for finish(), after the run's own outcome and
 * its output on stdout, rather than thrown past them.
 */
export function save(write: () => { path: string; where: string }): Saved {
  try {
    return { ...write(), error: undefined };
  } catch (err) {
    return { path: undefined, where: '', error: asVmmsimError(err) };
  }
}

/**
 * The exit code of a command that ran: a failure's line on stderr, and where its partial results
 * are; then a failure to write them. The run's own failure sets the exit code when there is one.
 */
export function finish(failure: VmmsimError | undefined, json: boolean, saved: Saved): number {
  if (failure) {
    process.stderr.write(failure.line() + '\n');
    if (!json && saved.path) process.stderr.write(`vmmsim: partial results: ${saved.path}\n`);
  }
  if (saved.error) process.stderr.write(saved.error.line() + '\n');
  return failure?.exitCode ?? saved.error?.exitCode ?? 0;
}

/**
 * --profile measured-host: the calibration run on a command's first tree, its profile written
 * beside the results; the runs that follow use it.
 */
export async function measureHost(session: Session, scenario: Scenario, base: CostProfile, p: { out: string; json: boolean }, abort: RunAbort): Promise<CostProfile> {
  if (!p.json) process.stderr.write('vmmsim: measuring this host\'s transitions (calibration run)...\n');
  const profile = await abort.race(session.calibrate(scenario, base));
  writeProfile(p.out, profile);
  return profile;
}

/**
 * Runs the plan: starts the process tree, runs each model, and always ends with the tree stopped
 * and results.json written, whatever happened (a crash, a signal, a deadline).
 */
async function execute(p: RunPlan, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const runs: RunResult[] = [];
  const abort = new RunAbort();
  const progress = new Progress({ title: p.models.length > 1 ? 'compare' : 'run', total: p.models.length, mode: progressMode({ json: p.json, isTTY: process.stderr.isTTY }), itemSeconds: p.scenario.workload.durationSec });
  let failure: VmmsimError | undefined;
  try {
    await withTree(p, processSpecs(p.scenario), abort, log, async (session) => {
      if (p.measureHost) p.profile = await measureHost(session, p.scenario, p.profile, p, abort);
      for (const model of p.models) {
        progress.start(`${model} (${p.scenario.workload.kind}, ${p.scenario.dma})`, `vmmsim: running ${model} (${p.scenario.workload.kind}, ${p.scenario.dma})...\n`);
        runs.push(await abort.race(session.run(p.scenario, model, p.profile)));
        progress.finish();
      }
    });
  } catch (err) {
    failure = asVmmsimError(err);
  } finally {
    progress.end();
    abort.dispose();
  }

  const doc = resultsDoc(startedAt, p.scenario, p.profile, runs, failure);
  const saved = save(() => saveResults(p.out, doc));
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
    if (saved.where) process.stdout.write(`\n${saved.where}`);
  }
  return finish(failure, p.json, saved);
}

/**
 * Runs a sweep: one process tree per group of points that share their processes, each run of the
 * group on it; results.json and results.csv written in cross-product order, also when it fails.
 */
async function executeSweep(p: SweepCommand, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const { sweep } = p;
  const done: { point: number; model: number; run: RunResult }[] = [];
  const saturation: { point: number; model: number; result: SaturationResult }[] = [];
  const abort = new RunAbort();
  let failure: VmmsimError | undefined;
  let started = 0;
  let calibrated = !p.measureHost;
  const progress = new Progress({ title: 'sweep', total: sweep.runs, mode: progressMode({ json: p.json, isTTY: process.stderr.isTTY }), itemSeconds: p.search ? 0 : (sweep.points[0]?.scenario.workload.durationSec ?? 0) });
  try {
    for (const group of sweep.groups) {
      const first = group[0];
      if (!first) continue;
      await withTree(p, processSpecs(first.point.scenario), abort, log, async (session) => {
        if (!calibrated) {
          p.profiles.set(MEASURED_HOST, await measureHost(session, first.point.scenario, p.profiles.get(MEASURED_HOST) as CostProfile, p, abort));
          calibrated = true;
        }
        for (const { point, model } of group) {
          started += 1;
          progress.start(describeRun(point.values, model), `vmmsim: sweep ${started}/${sweep.runs}: ${describeRun(point.values, model)}...\n`);
          const profile = p.profiles.get(point.scenario.profile) as CostProfile;
          const at = { point: point.index, model: point.models.indexOf(model) };
          if (p.search) {
            const maxSteps = p.search.steps;
            let steps = 0;
            const result = await saturateModel(session, point.scenario, model, profile, p.search, abort, (run, rate) => done.push({ ...at, run: withLoad({ point: { ...point.values, 'workload.rate': rate }, ...run }) }), (step) => {
              progress.advance(++steps / maxSteps);
              progress.note(progressLine(model, step));
            });
            saturation.push({ ...at, result: { ...result, point: point.values } });
            progress.finish();
            continue;
          }
          const run = await abort.race(session.run(point.scenario, model, profile));
          done.push({ ...at, run: { point: point.values, ...run } });
          progress.finish();
        }
      });
    }
  } catch (err) {
    failure = asVmmsimError(err);
  } finally {
    progress.end();
    abort.dispose();
  }

  // The trees ran grouped by their processes; the results follow the cross product.
  const runs = done.sort((a, b) => a.point - b.point || a.model - b.model).map((d) => d.run);
  const saturated = saturation.sort((a, b) => a.point - b.point || a.model - b.model).map((d) => d.result);
  const base = (sweep.points[0] as SweepPlan['points'][number]).scenario;
  const doc: ResultsDoc = {
    ...resultsDoc(startedAt, base, p.profiles.get(base.profile) as CostProfile, runs, failure, { keys: sweep.keys, points: sweep.points.length }),
    ...(p.search ? { saturation: saturated } : {}),
  };
  const search = p.search;
  const saved = save(() => {
    const { path, where } = saveResults(p.out, doc);
    const csv = writeFileAtomic(p.out, 'results.csv', toCsv(sweepCsvRecords(sweep.keys, runs)));
    const satCsv = search ? `saturation csv: ${writeFileAtomic(p.out, 'saturation.csv', toCsv(saturationCsvRecords(sweep.keys, saturated)))}\n` : '';
    return { path, where: `${where}csv: ${csv}\n${satCsv}` };
  });
  const where = saved.where ? `\n\n${saved.where}` : '\n';
  if (p.json) process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  else if (search && saturated.length > 0) process.stdout.write(`${sweepSaturationTable(sweep.keys, saturated)}${where}`);
  else if (runs.length > 0) process.stdout.write(`${sweepTable(sweep.keys, runs)}${where}`);
  return finish(failure, p.json, saved);
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

/**
 * The CLI: returns the process exit code. Output on stdout that could not be written (a full
 * device, a closed pipe) ends it with E_WRITE, exit 1, once the command is done: its results are
 * in their files by then.
 */
export async function main(argv: string[]): Promise<number> {
  watchStdStreams();
  const code = await runCommand(argv);
  const failed = await settleStdout();
  if (!failed) return code;
  process.stderr.write(failed.line() + '\n');
  return code === 0 ? failed.exitCode : code;
}

/** Runs one command: returns its exit code; bad input and failures are one line on stderr. */
async function runCommand(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  let log: Logger | undefined;
  /** Runs a planned command (none: its help was printed) with the controller's logger and metrics. */
  const controlled = async <P extends TreeSettings>(p: P | undefined, exec: (p: P, log: Logger) => Promise<number>): Promise<number> => {
    if (!p) return 0;
    const controllerLog = createLogger({ role: 'controller', name: 'controller' }, p.logLevel);
    log = controllerLog;
    return withControllerMetrics(p.telemetry, () => exec(p, controllerLog));
  };
  try {
    switch (command) {
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        if (rest[0] === 'run' || rest[0] === 'compare') process.stdout.write(RUN_HELP + '\n');
        else if (rest[0] === 'sweep') process.stdout.write(SWEEP_HELP + '\n');
        else if (rest[0] === 'saturate') process.stdout.write(SATURATE_HELP + '\n');
        else if (rest[0] === 'decode-cmd') process.stdout.write(DECODE_HELP + '\n');
        else if (rest[0] === 'serve') process.stdout.write(SERVE_HELP + '\n');
        else if (rest[0] === 'report') process.stdout.write(REPORT_HELP + '\n');
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
      case 'report':
        return await reportCommand(rest);
      case 'serve':
        return await serveCommand(rest);
      case 'run':
      case 'compare':
        return await controlled(plan(command, rest), execute);
      case 'sweep':
        return await controlled(planSweepCommand(rest), executeSweep);
      case 'saturate':
        return await controlled(planSaturate(rest), executeSaturate);
      default:
        throw usageError(`unknown command "${command}"; commands: run, compare, sweep, saturate, serve, report, decode-cmd, scenario-keys, help`);
    }
  } catch (err) {
    const e = asVmmsimError(err);
    process.stderr.write(e.line() + '\n');
    if (e.code === 'E_RUN') log?.error({ err }, 'unexpected failure');
    return e.exitCode;
  }
}
