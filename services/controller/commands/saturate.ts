/**
 * `vmmsim saturate`: for each model, the highest open-loop arrival rate the system sustains (a run
 * achieves >= 95% of the requested rate, and its main operation's p99 stays under a bound). Every
 * step of the search is a real run on one process tree, with the command's usual tree, abort and
 * signal handling (../cli/tree.ts); the search's options and steps are ../cli/search.ts, the search
 * itself ../saturation-search.ts.
 */
import { loadProfile } from '../../cost/profile.js';
import type { Logger } from '../../runtime/logger.js';
import { MODELS, RATE_WORKLOADS } from '../../scenario/schema.js';
import { CONNECT_HELP, requireEndpoints } from '../connect.js';
import { MEASURED_HOST, MEASURED_HOST_BASE } from '../measured-host.js';
import { Progress, progressMode } from '../progress.js';
import { saveResults } from '../report/write.js';
import { defaultOutDir, type ResultsDoc, type RunResult, type SaturationResult } from '../results.js';
import { loadScenario } from '../scenario-load.js';
import { processSpecs } from '../session.js';
import { saturationTable } from '../table.js';
import { notesBlock } from '../notes.js';
import { TELEMETRY_HELP } from '../telemetry.js';
import { RunAbort } from '../cli/abort.js';
import { PIN_HELP } from '../placement.js';
import { RUN_OPTIONS, checkScenario, modelsFor, optionOverrides, parse, treeSettings, usageError } from '../cli/options.js';
import { checkOut, finish, resultsDoc, save } from '../cli/outcome.js';
import { DEFAULT_FROM, DEFAULT_MAX, DEFAULT_STEPS, RATE_CAP, SEARCH_OPTIONS, checkSearchable, progressLine, saturateModel, searchSettings, unboundedLines, type SearchSettings } from '../cli/search.js';
import { controlled, measureHost, runCapturing, withTree, type RunPlan } from '../cli/tree.js';

export const HELP = `usage: vmmsim saturate [scenario.yaml] --p99-bound-us X [options]

Finds each model's saturation rate: the highest workload.rate (open-loop arrivals per second) at
which a run achieves >= 95% of the requested rate and keeps an operation's p99 (--op: by default
unmap, or the workload's main one) under --p99-bound-us. It ramps the rate (doubling from --from while runs pass,
halving while they fail), then bisects until the bracket is within 5% or --steps runs were made.
A run that passes at the upper bound (--max) raises it (doubling) up to --cap; a search that
passes at the cap, or runs out of steps with every rate passing, says so under the table.
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
  --max R               first upper bound (default ${DEFAULT_MAX}); passing there doubles it, up to --cap
  --cap R               hard cap of the upper bound (default ${RATE_CAP}, the largest workload.rate);
                        passing there ends the search: "stopped at the cap"
  --steps N             at most N runs per model (default ${DEFAULT_STEPS})
  --model NAME          architecture; default: the scenario's model
  --models all|a,b,...  several architectures, one search each
                        (all: ${MODELS.join(', ')})
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
  --warmup N|auto       operations of each guest thread left out of the measured figures (still
                        counted in the modeled ones); auto (default): 50, or a tenth of a thread's
                        share when less
${PIN_HELP}
${CONNECT_HELP}
${TELEMETRY_HELP}
  -h, --help            this text`;

/** The options of saturate: run's, and the search's own. */
export const OPTIONS = { ...RUN_OPTIONS, ...SEARCH_OPTIONS } as const;

export async function command(argv: string[]): Promise<number> {
  return controlled(plan(argv), execute);
}

/** Its scenario is the first step's (workload.rate = from); each step changes only the rate. */
export interface SaturatePlan extends RunPlan, SearchSettings {}

/** The scenario resolved and checked, the search's settings read, before anything starts. */
function plan(argv: string[]): SaturatePlan | undefined {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP + '\n');
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
  // Each step is judged on one run's figures: repeating them would only slow the search.
  if ((settings.measure?.trials ?? 1) > 1) throw usageError('--trials is for run, compare and sweep: a saturation search judges each step on one run');
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

/**
 * Runs the search for each model on one process tree (every model and step needs the same
 * processes), and always ends with the tree stopped and results.json written, also when a step
 * fails or the command is interrupted (then with the steps run so far).
 */
async function execute(p: SaturatePlan, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const runs: RunResult[] = [];
  const saturation: SaturationResult[] = [];
  const abort = new RunAbort();
  // The bar counts models; a model's share is its steps against --steps, the most it can take.
  const progress = new Progress({ title: 'saturate', total: p.models.length, mode: progressMode({ json: p.json, isTTY: process.stderr.isTTY }) });
  const failure = await runCapturing(progress, abort, async () => {
    await withTree(p, processSpecs(p.scenario), abort, log, async (session) => {
      if (p.measureHost) p.profile = await measureHost(p.profile, p, abort);
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
  });

  const doc: ResultsDoc = { ...resultsDoc(startedAt, p.scenario, p.profile, runs, failure), saturation };
  const saved = save(() => saveResults(p.out, doc));
  if (p.json) process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  else if (runs.length > 0) process.stdout.write(`${saturationTable(saturation, runs)}\n${unboundedLines(saturation)}${notesBlock(runs)}${saved.where ? `\n${saved.where}` : ''}`);
  return finish(failure, p.json, saved);
}
