/**
 * `vmmsim saturate`: for each model, the highest open-loop arrival rate the system sustains (a run
 * achieves >= 95% of the requested rate, and its main operation's p99 stays under a bound). Every
 * step of the search is a real run on one process tree, with the command's usual tree, abort and
 * signal handling (cli.ts); the search itself is saturation-search.ts.
 */
import { MEASURED_HOST, MEASURED_HOST_BASE } from './measured-host.js';
import { loadProfile, type CostProfile } from '../cost/profile.js';
import { VmmsimError, asVmmsimError } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import { loadScenario } from './scenario-load.js';
import { RATE_WORKLOADS, SCENARIO_SCHEMA, SUPPORTED_MODELS, type ModelName, type NumberField, type ObjectField, type Scenario } from '../scenario/schema.js';
import { RUN_OPTIONS, RunAbort, checkOut, checkScenario, finish, intOption, modelsFor, optionOverrides, parse, resultsDoc, save, treeSettings, usageError, withTree, measureHost, type RunPlan } from './cli.js';
import { CONNECT_HELP, requireEndpoints } from './connect.js';
import { TELEMETRY_HELP } from './telemetry.js';
import { stepMeasure, withLoad } from './load.js';
import { defaultOutDir, type ResultsDoc, type RunResult, type SaturationMetric, type SaturationResult } from './results.js';
import { searchSaturation, type SearchStep } from './saturation-search.js';
import { processSpecs, type Session } from './session.js';
import { saveResults } from './report/command.js';
import { Progress, progressMode } from './progress.js';
import { mainOp } from './sweep.js';
import { fmtRate, saturationTable } from './table.js';

const DEFAULT_FROM = 1000;
const DEFAULT_MAX = 1e8;
const DEFAULT_STEPS = 24;
/** The operations every open-loop workload records (an arrival's map, then its unmap). */
const OPEN_LOOP_OPS = ['map', 'unmap'];

export const SATURATE_HELP = `usage: vmmsim saturate [scenario.yaml] --p99-bound-us X [options]

Finds each model's saturation rate: the highest workload.rate (open-loop arrivals per second) at
which a run achieves >= 95% of the requested rate and keeps an operation's p99 (--op: by default
unmap, or the workload's main one) under --p99-bound-us. It ramps the rate (doubling from --from while runs pass,
halving while they fail), then bisects until the bracket is within 5% or --steps runs were made.
Each step is a real run on one process tree. Prints a line per step on stderr, then a table of the
models and their saturation rates. Writes results.json: every step a run (runs[].point holds its
workload.rate, runs[].load its requested and achieved rates) and \`saturation\` the rate per model.
The workload must run open loop: ${RATE_WORKLOADS.join(', ')}; workload.arrivals picks constant or
poisson arrivals.

  vmmsim saturate --model nested-smmuv3 --set topology.psmmus=4 --set topology.vsmmu=single \\
                  --p99-bound-us 50 --ops 500

options:
  --p99-bound-us X      the p99 bound in microseconds (required)
  --op NAME             the operation whose p99 is judged: unmap (default) or map (an arrival's map,
                        timed from its intended send time, so it includes any backlog)
  --metric modeled|measured
                        the clock the steps are judged in (default modeled: deterministic, the
                        same rates on every machine; measured: this machine's real processes)
  --from R              first rate tried, per second (default ${DEFAULT_FROM})
  --max R               highest rate tried (default ${DEFAULT_MAX}); passing there ends the search
  --steps N             at most N runs per model (default ${DEFAULT_STEPS})
  --model NAME          architecture; default: the scenario's model
  --models all|a,b,...  several architectures, one search each
                        (all: ${SUPPORTED_MODELS.join(', ')})
  --ops N               arrivals per step (workload.ops); fewer make quicker steps
  --duration S          each step runs S seconds (workload.durationSec); alone, it lifts the ops limit
  --seed N              seed (same seed, same modeled results and poisson arrivals)
  --set key=value       any scenario key but workload.rate, dotted (repeatable)
  --profile NAME|PATH   cost profile (profiles/NAME.yaml or a file)
  --out DIR             write DIR/results.json (default: results/<time>-<name>-saturate-<pid>/)
  --json                print the results document on stdout and nothing else there
  --transport unix|tcp  how processes talk: Unix sockets in a private folder (default) or loopback TCP
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (or VMMSIM_LOG_LEVEL); logs go to stderr
  --start-timeout MS    how long a process may take to report ready (default 20000)
${CONNECT_HELP}
${TELEMETRY_HELP}
  -h, --help            this text`;

/** The search's own options (saturate, and sweep --saturate). */
export const SEARCH_OPTIONS = {
  'p99-bound-us': { type: 'string' },
  metric: { type: 'string' },
  from: { type: 'string' },
  max: { type: 'string' },
  steps: { type: 'string' },
  op: { type: 'string' },
} as const;

/** The options of saturate: run's, and the search's own. Built on demand: cli.ts imports this module. */
function saturateOptions() {
  return { ...RUN_OPTIONS, ...SEARCH_OPTIONS } as const;
}

/** How one saturation search runs and judges its steps. */
export interface SearchSettings {
  metric: SaturationMetric;
  p99BoundUs: number;
  /** The operation whose p99 is judged; undefined: the run's main one (unmap). */
  op: string | undefined;
  from: number;
  max: number;
  steps: number;
}

/** Reads and checks the search options (saturate's, and sweep --saturate's). */
export function searchSettings(values: { [K in keyof typeof SEARCH_OPTIONS]?: string | undefined }): SearchSettings {
  const p99BoundUs = positive('p99-bound-us', values['p99-bound-us'], undefined);
  const metric = values.metric ?? 'modeled';
  if (metric !== 'modeled' && metric !== 'measured') throw usageError(`--metric must be modeled or measured, got "${metric}"`);
  const limit = rateLimit();
  const from = positive('from', values.from, DEFAULT_FROM);
  const max = positive('max', values.max, Math.max(from, DEFAULT_MAX));
  if (max > limit) throw usageError(`--max must be at most ${limit} (the largest workload.rate), got ${max}`);
  if (from > max) throw usageError(`--from (${from}) must be at most --max (${max})`);
  const steps = intOption('steps', values.steps, 1) ?? DEFAULT_STEPS;
  const op = values.op;
  if (op !== undefined && !OPEN_LOOP_OPS.includes(op)) throw usageError(`--op must be one of ${OPEN_LOOP_OPS.join(', ')}, got "${op}"`);
  return { metric, p99BoundUs, op, from, max, steps };
}

/** Refuses a workload that cannot run open loop, or a --set of the rate the search chooses. */
export function checkSearchable(sets: readonly string[], kind: Scenario['workload']['kind']): void {
  const rateSet = sets.find((s) => s.split('=')[0]?.trim() === 'workload.rate');
  if (rateSet !== undefined) throw usageError(`--set ${rateSet}: the saturation search chooses workload.rate itself; give its range with --from and --max`);
  if (!RATE_WORKLOADS.includes(kind)) {
    throw new VmmsimError('E_NOT_SUPPORTED', `a saturation search needs a workload that runs open loop (${RATE_WORKLOADS.join(', ')}); workload.kind is ${kind}`);
  }
}

/**
 * One model's saturation search on a session: every step a real run at one rate (handed to
 * `record` as it completes), progress through `onStep`.
 */
export async function saturateModel(
  session: Session,
  scenario: Scenario,
  model: ModelName,
  profile: CostProfile,
  s: SearchSettings,
  abort: RunAbort,
  record: (run: RunResult, rate: number) => void,
  onStep: (step: SearchStep) => void,
): Promise<SaturationResult> {
  let op = s.op ?? '';
  const found = await searchSaturation(
    async (rate) => {
      const run = withLoad(await abort.race(session.run(atRate(scenario, rate), model, profile)));
      record(run, rate);
      op = s.op ?? mainOp(run)?.op ?? op;
      return stepMeasure(run, s.metric, s.op);
    },
    { from: s.from, max: s.max, p99BoundUs: s.p99BoundUs, maxSteps: s.steps },
    onStep,
  );
  return {
    model,
    ratePerSec: found.ratePerSec ?? null,
    metric: s.metric,
    p99BoundUs: s.p99BoundUs,
    op,
    failedAtPerSec: found.failedAtPerSec ?? null,
    steps: found.steps.length,
    stop: found.stop,
  };
}

/** Its scenario is the first step's (workload.rate = from); each step changes only the rate. */
export interface SaturatePlan extends RunPlan, SearchSettings {}

/** The largest workload.rate the schema takes. */
function rateLimit(): number {
  const workload = SCENARIO_SCHEMA.fields['workload'] as ObjectField;
  return (workload.fields['rate'] as NumberField).max;
}

function positive(name: string, v: string | undefined, fallback: number | undefined): number {
  if (v === undefined) {
    if (fallback === undefined) throw usageError(`--${name} is required: a number > 0`);
    return fallback;
  }
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw usageError(`--${name} must be a number > 0, got "${v}"`);
  return n;
}

/** `vmmsim saturate`: the scenario resolved and checked, the search's settings read, before anything starts. */
export function planSaturate(argv: string[]): SaturatePlan | undefined {
  const { values, positionals } = parse(argv, saturateOptions());
  if (values.help) {
    process.stdout.write(SATURATE_HELP + '\n');
    return undefined;
  }
  if (positionals.length > 1) throw usageError(`saturate takes at most one scenario file, got ${positionals.length}: ${positionals.join(' ')}`);
  if (values.model !== undefined && values.models !== undefined) throw usageError('give --model NAME or --models all|a,b, not both');
  const search = searchSettings(values);
  const sets = values.set ?? [];
  const overrides = optionOverrides(values);
  // The workload first, for a message about saturate rather than about workload.rate.
  checkSearchable(sets, loadScenario(positionals[0], sets, overrides).workload.kind);
  const scenario = loadScenario(positionals[0], sets, { ...overrides, 'workload.rate': search.from });
  checkScenario(scenario);
  const settings = treeSettings(values);
  if (settings.connect) requireEndpoints(settings.connect, processSpecs(scenario));
  const models = modelsFor(scenario, values.models);
  const out = values.out ?? defaultOutDir(`${scenario.name}-saturate`);
  const calibrate = scenario.profile === MEASURED_HOST;
  checkOut(out, { measureHost: calibrate });
  return {
    scenario,
    models,
    profile: loadProfile(calibrate ? MEASURED_HOST_BASE : scenario.profile),
    measureHost: calibrate,
    ...search,
    out,
    json: values.json ?? false,
    ...settings,
  };
}

/** The scenario at one step: only the rate changes. */
function atRate(s: Scenario, rate: number): Scenario {
  return { ...s, workload: { ...s.workload, rate } };
}

export function progressLine(model: string, step: SearchStep): string {
  const p99 = step.p99Us.toFixed(step.p99Us >= 100 ? 0 : step.p99Us >= 10 ? 1 : 3);
  return `vmmsim: saturate ${model}: ${fmtRate(step.requestedPerSec)}/s -> achieved ${fmtRate(step.achievedPerSec)}/s, p99 ${p99} us: ${step.ok ? 'ok' : `over (${step.why})`}\n`;
}

/**
 * Runs the search for each model on one process tree (every model and step needs the same
 * processes), and always ends with the tree stopped and results.json written, also when a step
 * fails or the command is interrupted (then with the steps run so far).
 */
export async function executeSaturate(p: SaturatePlan, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const runs: RunResult[] = [];
  const saturation: SaturationResult[] = [];
  const abort = new RunAbort();
  // The bar counts models; a model's share is its steps against --steps, the most it can take.
  const progress = new Progress({ title: 'saturate', total: p.models.length, mode: progressMode({ json: p.json, isTTY: process.stderr.isTTY }) });
  let failure: VmmsimError | undefined;
  try {
    await withTree(p, processSpecs(p.scenario), abort, log, async (session) => {
      if (p.measureHost) p.profile = await measureHost(session, p.scenario, p.profile, p, abort);
      for (const model of p.models) {
        let steps = 0;
        progress.start(model);
        const result = await saturateModel(session, p.scenario, model, p.profile, p, abort, (run, rate) => runs.push({ point: { 'workload.rate': rate }, ...run }), (step) => {
          progress.advance(++steps / p.steps);
          progress.note(progressLine(model, step));
        });
        saturation.push(result);
        progress.finish();
      }
    });
  } catch (err) {
    failure = asVmmsimError(err);
  } finally {
    progress.end();
    abort.dispose();
  }

  const doc: ResultsDoc = { ...resultsDoc(startedAt, p.scenario, p.profile, runs, failure), saturation };
  const saved = save(() => saveResults(p.out, doc));
  if (p.json) process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  else if (runs.length > 0) process.stdout.write(`${saturationTable(saturation, runs)}\n${saved.where ? `\n${saved.where}` : ''}`);
  return finish(failure, p.json, saved);
}
