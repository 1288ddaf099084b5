/**
 * The options the commands that run scenarios share (run, compare, sweep, saturate): parsing, the
 * common option table, the scenario keys options set, the models a scenario runs under, and how
 * the command's process trees run. Every problem found here is bad input (E_USAGE and friends,
 * exit 2), found before any process starts.
 */
import { resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { VmmsimError } from '../../runtime/errors.js';
import { isLogLevel, resolveLogLevel } from '../../runtime/logger.js';
import { TLS_OPTIONS, mutualTls, tlsFiles } from '../../runtime/transport/credentials.js';
import { checkAts, checkDdw, checkDmaMode, checkEmulatedDevices } from '../../scenario/validate.js';
import { designOf, designsWhere } from '../../designs/registry.js';
import { MODELS, type ModelName, type Scenario } from '../../scenario/schema.js';
import { CONNECT_OPTIONS, connectTarget } from '../connect.js';
import { TELEMETRY_OPTIONS, treeTelemetry } from '../telemetry.js';
import { checkTraceFile } from '../trace-check.js';
import { checkPinnable, parsePin } from '../placement.js';
import type { MeasureOptions, TreeSettings } from './tree.js';

/** The options of run and compare, which sweep and saturate take too. */
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
  trials: { type: 'string' },
  warmup: { type: 'string' },
  pin: { type: 'string' },
  ...CONNECT_OPTIONS,
  ...TLS_OPTIONS,
  ...TELEMETRY_OPTIONS,
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

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

/** --models all|a,b,...: every name known and supported by this build. */
export function parseModels(spec: string): ModelName[] {
  if (spec === 'all') return [...MODELS];
  const names = spec.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw usageError('--models needs "all" or a comma-separated list of models');
  for (const n of names) {
    if (!(MODELS as readonly string[]).includes(n)) throw usageError(`unknown model "${n}"; models: ${MODELS.join(', ')}`);
  }
  return names as ModelName[];
}

export type RunValues = ReturnType<typeof parse<typeof RUN_OPTIONS>>['values'];

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
    const SVA_MODELS = designsWhere((d) => d.traits.sva);
    // "all" means every architecture that has SVA; a named one without it is refused up front.
    if (spec === 'all') models = models.filter((m) => SVA_MODELS.includes(m));
    const without = models.filter((m) => !SVA_MODELS.includes(m));
    if (without.length > 0) {
      throw new VmmsimError('E_NOT_SUPPORTED', `workload sva-unmap-storm needs SVA, which ${without.join(', ')} has not; architectures with SVA: ${SVA_MODELS.join(', ')}`);
    }
  }
  if (scenario.topology.emulatedDevices > 0) {
    // As for SVA: "all" means the architectures that can put emulated devices beside assigned ones.
    if (spec === 'all') models = models.filter((m) => designOf(m).traits.emulatedDevices === true);
    for (const m of models) checkEmulatedDevices(scenario.topology, m);
  }
  if (scenario.device.ats) {
    // As for SVA: "all" means the architectures that model ATS.
    if (spec === 'all') models = models.filter((m) => designOf(m).traits.ats === true);
    for (const m of models) checkAts(scenario, m);
  }
  if (scenario.dma === 'swiotlb') {
    // dma-iommu's bounce path: "all" means the designs whose guest DMA API is dma-iommu.
    if (spec === 'all') models = models.filter((m) => designOf(m).traits.dmaIommu);
    for (const m of models) checkDmaMode(scenario.dma, m);
  }
  if (scenario.guest.ddw) {
    // A dynamic DMA window is sPAPR's: "all" means the sPAPR designs.
    if (spec === 'all') models = models.filter((m) => designOf(m).traits.shadow === 'tce-table');
    for (const m of models) checkDdw(scenario.guest, m);
  }
  // What each design refuses of its own (nested-smmuv3-vcmdq: more devices than a VINTF's SID pairs,
  // emulated-smmuv3: smmu.ril false). As above, "all" means the designs that can run the scenario.
  if (spec === 'all') models = models.filter((m) => runs(m, scenario));
  for (const m of models) designOf(m).check?.(scenario);
  return models;
}

/** Whether a design's own check lets it run the scenario. */
function runs(model: ModelName, scenario: Scenario): boolean {
  try {
    designOf(model).check?.(scenario);
    return true;
  } catch {
    return false;
  }
}

/** --transport, --log-level, --start-timeout, --connect, TLS and telemetry: how the command's trees run. */
export function treeSettings(values: RunValues): TreeSettings {
  const transport = values.transport ?? 'unix';
  if (transport !== 'unix' && transport !== 'tcp') throw usageError(`--transport must be unix or tcp, got "${transport}"`);
  if (values['log-level'] !== undefined && !isLogLevel(values['log-level'])) throw usageError(`--log-level must be one of fatal, error, warn, info, debug, trace, silent`);
  const connect = connectTarget(values);
  const tls = tlsFiles(values);
  // Read and checked now: a bad certificate is bad input, found before any process starts.
  if (tls) mutualTls(tls);
  return { transport, logLevel: resolveLogLevel(values['log-level']), startTimeoutMs: intOption('start-timeout', values['start-timeout'], 1000) ?? 20_000, connect, tls, telemetry: treeTelemetry(values), measure: measureOptions(values, connect !== undefined) };
}

/** The most trials a run repeats its measured part. */
export const MAX_TRIALS = 100;

/** --trials, --warmup and --pin: how the measured part of every run is taken. */
export function measureOptions(values: RunValues, connected: boolean): MeasureOptions {
  const trials = intOption('trials', values.trials, 1) ?? 1;
  if (trials > MAX_TRIALS) throw usageError(`--trials must be at most ${MAX_TRIALS}, got ${trials}`);
  const warmup = values.warmup === undefined || values.warmup === 'auto' ? 'auto' : (intOption('warmup', values.warmup, 0) as number);
  let pin: { spec: string; cpus: number[] } | undefined;
  if (values.pin !== undefined) {
    if (connected) throw usageError('--pin places the processes this controller starts; with --connect they run elsewhere');
    checkPinnable();
    pin = { spec: values.pin, cpus: parsePin(values.pin) };
  }
  return { trials, warmup, pin };
}
