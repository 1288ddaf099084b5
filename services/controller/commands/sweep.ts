/**
 * `vmmsim sweep`: the cross product of swept scenario values and models, one run (or, with
 * --saturate, one saturation search) per point and model; the planning of points and their
 * process trees is ../sweep.ts.
 */
import { loadProfile, type CostProfile } from '../../cost/profile.js';
import type { Logger } from '../../runtime/logger.js';
import { MODELS } from '../../scenario/schema.js';
import { CONNECT_HELP, requireEndpoints } from '../connect.js';
import { toCsv } from '../csv.js';
import { withLoad } from '../load.js';
import { MEASURED_HOST, MEASURED_HOST_BASE } from '../measured-host.js';
import { Progress, progressMode } from '../progress.js';
import { saveResults } from '../report/write.js';
import { defaultOutDir, writeFileAtomic, type ResultsDoc, type RunResult, type SaturationResult } from '../results.js';
import { loadScenario } from '../scenario-load.js';
import { processSpecs } from '../session.js';
import { MAX_SWEEP_RUNS, describeRun, planSweep, saturationCsvRecords, sweepCsvRecords, type SweepPlan } from '../sweep.js';
import { sweepSaturationTable, sweepTable } from '../table.js';
import { notesBlock } from '../notes.js';
import { TELEMETRY_HELP } from '../telemetry.js';
import { RunAbort } from '../cli/abort.js';
import { PIN_HELP } from '../placement.js';
import { RUN_OPTIONS, checkScenario, modelsFor, optionOverrides, parse, parseModels, treeSettings, usageError } from '../cli/options.js';
import { checkOut, finish, resultsDoc, save } from '../cli/outcome.js';
import { SEARCH_OPTIONS, checkSearchable, progressLine, saturateModel, searchSettings, unboundedLines, type SearchSettings } from '../cli/search.js';
import { controlled, measureHost, runCapturing, withTree, type TreeSettings } from '../cli/tree.js';

export const HELP = `usage: vmmsim sweep [scenario.yaml] --set key=v1,v2,... [--set ...] [options]

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
                        (all: ${MODELS.join(', ')})
  --saturate            at each point and model, search the saturation rate instead of one run
                        (as \`vmmsim saturate\`, which lists the search options: --p99-bound-us X
                        is required; --metric, --op, --from, --max, --cap, --steps); writes saturation.csv
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
  --trials N            repeat each point's run N times (default 1; not with --saturate): each
                        measured figure is then the median of the trials with a 95% bootstrap
                        interval
  --warmup N|auto       operations of each guest thread left out of the measured figures (still
                        counted in the modeled ones); auto (default): 50, or a tenth of a thread's
                        share when less
${PIN_HELP}
${CONNECT_HELP}
                        (--connect: the file names the processes of every point)
${TELEMETRY_HELP}
  -h, --help            this text

At most ${MAX_SWEEP_RUNS} runs (points x models). Keys of a scenario: \`vmmsim scenario-keys\`.

  vmmsim sweep --set topology.psmmus=1,2,4,8,16 --set topology.vsmmu=single,per-psmmu \\
               --set workload.threads=4 --models nested-smmuv3 --saturate --p99-bound-us 50`;

/** run's options, the saturation search's, and --saturate. */
export const OPTIONS = { ...RUN_OPTIONS, ...SEARCH_OPTIONS, saturate: { type: 'boolean' } } as const;

export async function command(argv: string[]): Promise<number> {
  return controlled(plan(argv), execute);
}

/** The plan of a sweep: its points and models, and how to run them. */
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

/** The option that sets each scenario key it sets, for messages. */
const OPTION_OF_KEY: Record<string, string> = {
  'workload.ops': '--ops (or --duration alone)',
  'workload.durationSec': '--duration',
  seed: '--seed',
  model: '--model',
  profile: '--profile',
};

/** Every point resolved and checked, every profile loaded, before anything starts. */
function plan(argv: string[]): SweepCommand | undefined {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP + '\n');
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
  if (search && (settings.measure?.trials ?? 1) > 1) throw usageError('--trials is for one run per point: with --saturate each step is judged on one run');
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

/**
 * Runs a sweep: one process tree per group of points that share their processes, each run of the
 * group on it; results.json and results.csv written in cross-product order, also when it fails.
 */
async function execute(p: SweepCommand, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const { sweep } = p;
  const done: { point: number; model: number; run: RunResult }[] = [];
  const saturation: { point: number; model: number; result: SaturationResult }[] = [];
  const abort = new RunAbort();
  let started = 0;
  let calibrated = !p.measureHost;
  const progress = new Progress({ title: 'sweep', total: sweep.runs, mode: progressMode({ json: p.json, isTTY: process.stderr.isTTY }), itemSeconds: p.search ? 0 : (sweep.points[0]?.scenario.workload.durationSec ?? 0) });
  const failure = await runCapturing(progress, abort, async () => {
    for (const group of sweep.groups) {
      const first = group[0];
      if (!first) continue;
      await withTree(p, processSpecs(first.point.scenario), abort, log, async (session) => {
        if (!calibrated) {
          p.profiles.set(MEASURED_HOST, await measureHost(p.profiles.get(MEASURED_HOST) as CostProfile, p, abort));
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
  });

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
  else if (search && saturated.length > 0) process.stdout.write(`${sweepSaturationTable(sweep.keys, saturated)}\n${unboundedLines(saturated)}${notesBlock(runs)}${where}`);
  else if (runs.length > 0) process.stdout.write(`${sweepTable(sweep.keys, runs)}${notesBlock(runs)}${where}`);
  return finish(failure, p.json, saved);
}
