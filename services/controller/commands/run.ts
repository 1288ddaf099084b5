/**
 * `vmmsim run` and `vmmsim compare`: one scenario's workload under one architecture, or several
 * side by side, on one process tree; a table on stdout and results.json.
 */
import { loadProfile } from '../../cost/profile.js';
import { VmmsimError } from '../../runtime/errors.js';
import type { Logger } from '../../runtime/logger.js';
import { MODELS } from '../../scenario/schema.js';
import { CONNECT_HELP, requireEndpoints } from '../connect.js';
import { MEASURED_HOST, MEASURED_HOST_BASE } from '../measured-host.js';
import { Progress, progressMode } from '../progress.js';
import { saveResults } from '../report/write.js';
import { defaultOutDir, type RunResult } from '../results.js';
import { loadScenario } from '../scenario-load.js';
import { processSpecs } from '../session.js';
import { comparisonTable, dmaMapBenchmarkReport, hopTable } from '../table.js';
import { notesBlock } from '../notes.js';
import { PIN_HELP } from '../placement.js';
import { TELEMETRY_HELP } from '../telemetry.js';
import { RunAbort } from '../cli/abort.js';
import { RUN_OPTIONS, checkScenario, modelsFor, optionOverrides, parse, treeSettings, usageError } from '../cli/options.js';
import { checkOut, finish, resultsDoc, save } from '../cli/outcome.js';
import { controlled, measureHost, runCapturing, withTree, type RunPlan } from '../cli/tree.js';
import { designOfRecord } from '../cli/sensitivity-input.js';
import { DEFAULT_SAMPLES, analyse, verdictLines, type SensitivityDesign } from '../sensitivity.js';

export const HELP = `usage: vmmsim run [scenario.yaml] [options]
       vmmsim compare [scenario.yaml] [options]

Starts guest, kvm, qemu, vfio and psmmu processes, runs the scenario's workload through the chosen
architecture(s), prints a table and writes results.json.

options:
  --model NAME          (run) architecture; default: the scenario's model
  --models all|a,b,...  (compare) architectures; default: all that this build supports
                        (${MODELS.join(', ')})
  --ops N               map+unmap iterations (workload.ops)
  --duration S          stop after S seconds (workload.durationSec); alone, it lifts the ops limit
  --seed N              seed (same seed, same modeled results)
  --set key=value       any scenario key, dotted (repeatable): --set topology.psmmus=2
  --profile NAME|PATH   cost profile (profiles/NAME.yaml or a file)
  --out DIR             write DIR/results.json (default: results/<time>-<name>-<pid>/)
  --json                print the results document on stdout and nothing else there
  --sensitivity         (compare) re-price the recorded runs across the profile's cost ranges
                        (${DEFAULT_SAMPLES} samples, as \`vmmsim sensitivity\`) and print a verdict per pair under
                        the table: robust, or the steps it depends on; results.json gets \`sensitivity\`
  --transport unix|tcp  how processes talk: Unix sockets in a private folder (default) or loopback TCP
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (or VMMSIM_LOG_LEVEL); logs go to stderr
  --start-timeout MS    how long a process may take to report ready (default 20000)
  --trials N            repeat each model's run N times (default 1): each measured figure is then the
                        median of the trials with a 95% bootstrap interval; modeled figures are the
                        same every trial
  --warmup N|auto       operations of each guest thread left out of the measured figures (still
                        counted in the modeled ones); auto (default): 50, or a tenth of a thread's
                        share when less
${PIN_HELP}
${CONNECT_HELP}
${TELEMETRY_HELP}
  -h, --help            this text

Keys of a scenario: \`vmmsim scenario-keys\`.`;

export const OPTIONS = { ...RUN_OPTIONS, sensitivity: { type: 'boolean' } } as const;

interface ComparePlan extends RunPlan {
  sensitivity: boolean;
}

/** `vmmsim run`. */
export async function command(argv: string[]): Promise<number> {
  return controlled(plan('run', argv), execute);
}

/** `vmmsim compare`: run's command over several models (by default all that this build supports). */
export async function compare(argv: string[]): Promise<number> {
  return controlled(plan('compare', argv), execute);
}

/** The scenario resolved and checked, its models and profile chosen, before anything starts. */
function plan(name: 'run' | 'compare', argv: string[]): ComparePlan | undefined {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return undefined;
  }
  if (positionals.length > 1) throw usageError(`${name} takes at most one scenario file, got ${positionals.length}: ${positionals.join(' ')}`);
  if (name === 'run' && values.models) throw usageError('--models is for `vmmsim compare`; `vmmsim run` takes --model NAME');
  if (name === 'compare' && values.model) throw usageError('--model is for `vmmsim run`; `vmmsim compare` takes --models all|a,b');
  if (name === 'run' && values.sensitivity) throw usageError('--sensitivity compares architectures: it is for `vmmsim compare` (or `vmmsim sensitivity`)');
  const scenario = loadScenario(positionals[0], values.set ?? [], optionOverrides(values));
  checkScenario(scenario);
  const settings = treeSettings(values);
  if (settings.connect) requireEndpoints(settings.connect, processSpecs(scenario));
  const models = modelsFor(scenario, name === 'compare' ? (values.models ?? 'all') : undefined);
  const out = values.out ?? defaultOutDir(scenario.name);
  const calibrate = scenario.profile === MEASURED_HOST;
  checkOut(out, { measureHost: calibrate });
  const sensitivity = values.sensitivity ?? false;
  if (sensitivity && models.length < 2) throw new VmmsimError('E_SENSITIVITY', `--sensitivity compares architectures: --models names ${models.length} (${models.join(', ')}); give at least two, or all`);
  return {
    sensitivity,
    scenario,
    models,
    profile: loadProfile(calibrate ? MEASURED_HOST_BASE : scenario.profile),
    measureHost: calibrate,
    out,
    json: values.json ?? false,
    ...settings,
  };
}

/**
 * Runs the plan: starts the process tree, runs each model, and always ends with the tree stopped
 * and results.json written, whatever happened (a crash, a signal, a deadline).
 */
async function execute(p: ComparePlan, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const runs: RunResult[] = [];
  const designs: SensitivityDesign[] = [];
  const abort = new RunAbort();
  const progress = new Progress({ title: p.models.length > 1 ? 'compare' : 'run', total: p.models.length, mode: progressMode({ json: p.json, isTTY: process.stderr.isTTY }), itemSeconds: p.scenario.workload.durationSec });
  const failure = await runCapturing(progress, abort, async () => {
    await withTree(p, processSpecs(p.scenario), abort, log, async (session) => {
      if (p.measureHost) p.profile = await measureHost(p.profile, p, abort);
      for (const model of p.models) {
        progress.start(`${model} (${p.scenario.workload.kind}, ${p.scenario.dma})`, `vmmsim: running ${model} (${p.scenario.workload.kind}, ${p.scenario.dma})...\n`);
        if (p.sensitivity) {
          const r = await abort.race(session.record(p.scenario, model, p.profile));
          runs.push(r.result);
          designs.push(designOfRecord(p.scenario, r));
        } else {
          runs.push(await abort.race(session.run(p.scenario, model, p.profile)));
        }
        progress.finish();
      }
    });
  });

  const section = p.sensitivity && !failure ? analyse(designs, p.profile, { samples: DEFAULT_SAMPLES, seed: p.scenario.seed }) : undefined;
  const doc = { ...resultsDoc(startedAt, p.scenario, p.profile, runs, failure), ...(section ? { sensitivity: section } : {}) };
  const saved = save(() => saveResults(p.out, doc));
  if (p.json) {
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  } else if (runs.length > 0) {
    process.stdout.write(comparisonTable(runs) + '\n' + notesBlock(runs));
    if (section) process.stdout.write(`\nsensitivity (ratio second / first, p5-p95 of ${section.samples} samples across the cost ranges):\n${verdictLines(section).join('\n')}\n`);
    // Hop tables for one model; a comparison keeps to its tables (every hop is in results.json).
    if (runs.length === 1) for (const run of runs) if (run.hops.length > 0) process.stdout.write(`\nhops of ${run.model} (measured: this host's IPC, one way):\n${hopTable(run)}\n`);
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
