/**
 * `vmmsim sensitivity`: each design run once through the real processes and recorded, then
 * re-priced across the profile's cost ranges without starting a process again (../sensitivity.ts):
 * a tornado per comparison and Latin-hypercube samples of every step together, each through the
 * deterministic queueing replay. A table on stdout, results.json with its `sensitivity` section,
 * and the report with a tornado chart per comparison.
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
import { comparisonTable } from '../table.js';
import { notesBlock } from '../notes.js';
import { DEFAULT_SAMPLES, DISTRIBUTIONS, analyse, sensitivityTable, type Distribution, type SensitivityDesign } from '../sensitivity.js';
import { designOfRecord } from '../cli/sensitivity-input.js';
import { RunAbort } from '../cli/abort.js';
import { RUN_OPTIONS, checkScenario, modelsFor, optionOverrides, parse, treeSettings, usageError } from '../cli/options.js';
import { checkOut, finish, resultsDoc, save } from '../cli/outcome.js';
import { controlled, measureHost, runCapturing, withTree, type RunPlan } from '../cli/tree.js';

export const HELP = `usage: vmmsim sensitivity [scenario.yaml] --models a,b,... [options]

Runs each architecture once through the real processes (guest, kvm, qemu, vfio, psmmu) and records
what every operation's modeled time is made of, then re-prices the recorded runs across the cost
profile's ranges without starting the processes again: every step alone at its range's lo and hi
(the tornado), and --samples Latin-hypercube samples of every step together, each through the
deterministic queueing replay. For every pair of architectures and every operation both ran, it
prints the ratio of their modeled means (second / first) at the profile's costs, its p5, p50 and
p95 over the samples, and a verdict: robust when the order of the two holds in at least 95% of the
samples, otherwise the three steps whose ranges move the ratio most. A run whose behaviour depended
on modeled time (lazy mode's flush timer, open-loop arrivals behind a backlog, a trace's idle vCPUs)
re-prices approximately: it says so and why. Same scenario and seed, same results.

  vmmsim sensitivity --models nested-smmuv3,nested-smmuv3-vcmdq
  vmmsim sensitivity scenarios/default.yaml --models all --samples 500 --json

options:
  --models all|a,b,...  architectures, at least two (${MODELS.join(', ')}); default: all
  --samples N           Latin-hypercube samples (default ${DEFAULT_SAMPLES}; 10 to 100000)
  --distribution D      how a sample draws each cost inside its range: uniform (default: every value
                        of the range alike) or triangular (the profile's cost most likely, falling to
                        nothing at lo and hi)
  --seed N              seed of the runs and of the sampling (same seed, same results)
  --ops N               map+unmap iterations (workload.ops)
  --duration S          stop each run after S seconds (workload.durationSec): the operations recorded
                        then follow the machine's speed, so results repeat only with --ops
  --set key=value       any scenario key, dotted (repeatable): --set dma=lazy
  --profile NAME|PATH   cost profile whose costs and ranges are used; measured-host: this host's
                        measurements (each one's range its samples' p5-p95) over its base profile
  --out DIR             write DIR/results.json and DIR/report.html (default: results/<time>-<name>-<pid>/)
  --json                print the results document on stdout and nothing else there
  --transport unix|tcp  how processes talk: Unix sockets in a private folder (default) or loopback TCP
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (or VMMSIM_LOG_LEVEL); logs go to stderr
  --start-timeout MS    how long a process may take to report ready (default 20000)
${CONNECT_HELP}
  -h, --help            this text`;

export const OPTIONS = { ...RUN_OPTIONS, samples: { type: 'string' }, distribution: { type: 'string' } } as const;

/** Options of the measured clock, which sensitivity does not read: refused, never ignored. */
const MEASURED_ONLY = ['trials', 'warmup', 'pin'] as const;

interface SensitivityPlan extends RunPlan {
  samples: number;
  distribution: Distribution;
}

export async function command(argv: string[]): Promise<number> {
  return controlled(plan(argv), execute);
}

/** --samples: an integer from 10 (a 95% share needs at least that many) to 100000. */
export function samplesOption(v: string | undefined): number {
  if (v === undefined) return DEFAULT_SAMPLES;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 10 || n > 100_000) throw new VmmsimError('E_SENSITIVITY', `--samples must be an integer from 10 to 100000, got "${v}"`);
  return n;
}

/** --distribution: uniform (default) or triangular. */
export function distributionOption(v: string | undefined): Distribution {
  if (v === undefined) return 'uniform';
  const d = DISTRIBUTIONS.find((x) => x === v);
  if (!d) throw new VmmsimError('E_SENSITIVITY', `--distribution must be ${DISTRIBUTIONS.join(' or ')}, got "${v}"`);
  return d;
}

function plan(argv: string[]): SensitivityPlan | undefined {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return undefined;
  }
  if (positionals.length > 1) throw usageError(`sensitivity takes at most one scenario file, got ${positionals.length}: ${positionals.join(' ')}`);
  if (values.model) throw usageError('--model is for `vmmsim run`; `vmmsim sensitivity` compares architectures: --models a,b,... or all');
  const measuredOnly = MEASURED_ONLY.filter((k) => values[k] !== undefined);
  if (measuredOnly.length > 0) throw usageError(`${measuredOnly.map((k) => `--${k}`).join(', ')}: sensitivity re-prices the modeled clock and takes no measured figures (use them with run, compare or sweep)`);
  const samples = samplesOption(values.samples);
  const distribution = distributionOption(values.distribution);
  const scenario = loadScenario(positionals[0], values.set ?? [], optionOverrides(values));
  checkScenario(scenario);
  const settings = treeSettings(values);
  if (settings.connect) requireEndpoints(settings.connect, processSpecs(scenario));
  const models = modelsFor(scenario, values.models ?? 'all');
  if (models.length < 2) throw new VmmsimError('E_SENSITIVITY', `sensitivity compares architectures: --models names ${models.length} (${models.join(', ')}); give at least two, or all`);
  const out = values.out ?? defaultOutDir(scenario.name);
  // measured-host: this host's measurements over its base profile, each measured step's range its
  // samples' p5-p95, the others' their base ranges: sampled as any profile's, after the measuring.
  const calibrate = scenario.profile === MEASURED_HOST;
  checkOut(out, { measureHost: calibrate });
  return { scenario, models, profile: loadProfile(calibrate ? MEASURED_HOST_BASE : scenario.profile), measureHost: calibrate, out, json: values.json ?? false, samples, distribution, ...settings };
}

async function execute(p: SensitivityPlan, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const runs: RunResult[] = [];
  const designs: SensitivityDesign[] = [];
  const abort = new RunAbort();
  const progress = new Progress({ title: 'sensitivity', total: p.models.length, mode: progressMode({ json: p.json, isTTY: process.stderr.isTTY }), itemSeconds: p.scenario.workload.durationSec });
  const failure = await runCapturing(progress, abort, async () => {
    await withTree(p, processSpecs(p.scenario), abort, log, async (session) => {
      if (p.measureHost) p.profile = await measureHost(p.profile, p, abort);
      for (const model of p.models) {
        progress.start(`${model} (${p.scenario.workload.kind}, ${p.scenario.dma})`, `vmmsim: running ${model} (${p.scenario.workload.kind}, ${p.scenario.dma})...\n`);
        const r = await abort.race(session.record(p.scenario, model, p.profile));
        runs.push(r.result);
        designs.push(designOfRecord(p.scenario, r));
        progress.finish();
      }
    });
  });
  if (!failure && !p.json) process.stderr.write(`vmmsim: re-pricing ${designs.length} runs: ${p.samples} samples and a tornado...\n`);
  const section = failure ? undefined : analyse(designs, p.profile, { samples: p.samples, seed: p.scenario.seed, distribution: p.distribution });
  const doc = { ...resultsDoc(startedAt, p.scenario, p.profile, runs, failure), ...(section ? { sensitivity: section } : {}) };
  const saved = save(() => saveResults(p.out, doc));
  if (p.json) {
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  } else if (runs.length > 0) {
    process.stdout.write(comparisonTable(runs) + '\n' + notesBlock(runs));
    if (section) process.stdout.write(`\nsensitivity:\n${sensitivityTable(section)}`);
    if (saved.where) process.stdout.write(`\n${saved.where}`);
  }
  return finish(failure, p.json, saved);
}
