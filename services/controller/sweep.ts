/**
 * The plan of `vmmsim sweep`: which --set assignments are swept (a comma-separated list of values)
 * and which are plain overrides, the cross product of the swept values, each point resolved through
 * the one scenario schema before anything starts, and the runs (point x model) grouped by the
 * process tree they need. Nothing here starts a process or reads the clock.
 */
import { VmmsimError } from '../runtime/errors.js';
import type { ModelName, Scenario } from '../scenario/schema.js';
import { TRANSITION_KINDS } from '../runtime/topology.js';
import type { CsvValue } from './csv.js';
import { measuredOf } from './measured-table.js';
import type { OpResult, RunResult, SaturationResult } from './results.js';
import { processSpecs } from './session.js';

/** At most this many runs (points x models) in one sweep. */
export const MAX_SWEEP_RUNS = 256;

export interface SweptKey {
  key: string;
  /** The values as written, in order. */
  values: string[];
}

export interface SweepSets {
  swept: SweptKey[];
  /** Assignments with one value: overrides every point shares, as in run and compare. */
  plain: string[];
}

/** Each swept key's value at one point, as the resolved scenario holds it (numbers as numbers). */
export type PointValues = Record<string, string | number>;

export interface SweepPoint {
  /** Position in the cross product: the first swept key varies slowest. */
  index: number;
  /** The point's own assignments, one key=value per swept key. */
  assignments: string[];
  scenario: Scenario;
  values: PointValues;
  models: ModelName[];
}

export interface SweepRun {
  point: SweepPoint;
  model: ModelName;
}

export interface SweepPlan {
  keys: string[];
  /** In cross-product order. */
  points: SweepPoint[];
  /**
   * The runs in the order they execute: one group per process set (psmmus, vms, hosts), in the
   * order the sets first appear, each group's points in cross-product order, models innermost.
   */
  groups: SweepRun[][];
  runs: number;
}

export interface SweepInput {
  /** Every --set of the command line, in order. */
  sets: readonly string[];
  /** Keys that options set on their own (workload.ops from --ops...), with the option's name: they cannot be swept. */
  fixed?: Readonly<Record<string, string>>;
  /** Resolves a point's scenario from its --set assignments (the loader and the schema); throws on a bad value. */
  resolve: (sets: string[]) => Scenario;
  /** The models to run at a point; throws when the point cannot run them. */
  models: (scenario: Scenario) => ModelName[];
}

function usage(message: string): VmmsimError {
  return new VmmsimError('E_USAGE', message);
}

/** Sorts --set assignments into swept keys (a value with a comma: a list) and plain overrides. */
export function splitSets(sets: readonly string[], fixed: Readonly<Record<string, string>> = {}): SweepSets {
  const swept: SweptKey[] = [];
  const plain: string[] = [];
  const plainKeys = new Set<string>();
  for (const assignment of sets) {
    const eq = assignment.indexOf('=');
    if (eq <= 0) throw usage(`--set takes key=value or key=v1,v2,..., got "${assignment}"`);
    const key = assignment.slice(0, eq).trim();
    const raw = assignment.slice(eq + 1).trim();
    const sweptAlready = swept.some((k) => k.key === key);
    if (!raw.includes(',')) {
      if (sweptAlready) throw usage(`--set ${key}=${raw}: ${key} is already swept; give each key one --set`);
      plain.push(assignment);
      plainKeys.add(key);
      continue;
    }
    if (key === 'model') throw usage(`--set model=${raw}: sweep architectures with --models ${raw}`);
    if (sweptAlready) throw usage(`--set ${key}=${raw}: ${key} is swept twice; give all its values in one list`);
    if (plainKeys.has(key)) throw usage(`--set ${key}=${raw}: ${key} is also set to one value; give each key one --set`);
    const by = fixed[key];
    if (by !== undefined) throw usage(`--set ${key}=${raw}: ${key} is swept and also set by ${by}; drop one of them`);
    const values = raw.split(',').map((v) => v.trim());
    if (values.some((v) => v === '')) throw usage(`--set ${key}=${raw}: an empty value in the list`);
    const twice = values.find((v, i) => values.indexOf(v) !== i);
    if (twice !== undefined) throw usage(`--set ${key}=${raw}: value "${twice}" is listed twice`);
    swept.push({ key, values });
  }
  return { swept, plain };
}

/** Every combination of the swept values as --set assignments, the first key varying slowest. */
export function crossProduct(swept: readonly SweptKey[]): string[][] {
  let points: string[][] = [[]];
  for (const k of swept) points = points.flatMap((p) => k.values.map((v) => [...p, `${k.key}=${v}`]));
  return points;
}

/** The value of a dotted key in a resolved scenario. */
export function valueAt(scenario: Scenario, key: string): string | number {
  let node: unknown = scenario;
  for (const part of key.split('.')) node = (node as Record<string, unknown> | undefined)?.[part];
  if (typeof node !== 'string' && typeof node !== 'number') throw new VmmsimError('E_SCENARIO_FIELD', `scenario key ${key} has no value`);
  return node;
}

/** The processes a scenario needs, as a key: points with the same one can share a process tree. */
export function processSetKey(scenario: Scenario): string {
  return processSpecs(scenario).map((p) => `${p.role}-${p.index}`).join(' ');
}

/**
 * Plans a sweep: resolves every point through `resolve` (so a bad value fails here, naming the key,
 * the value and the point) and refuses more than MAX_SWEEP_RUNS runs before resolving any.
 */
export function planSweep(input: SweepInput): SweepPlan {
  const { swept, plain } = splitSets(input.sets, input.fixed);
  if (swept.length === 0) throw usage('sweep needs at least one swept key: --set key=v1,v2,... (a comma-separated list of values)');
  const count = swept.reduce((n, k) => n * k.values.length, 1);
  // Every point runs at least one model: more points than the cap is too many runs already.
  if (count > MAX_SWEEP_RUNS) {
    throw usage(`a sweep of ${count} points (${swept.map((k) => `${k.values.length} ${k.key}`).join(' x ')}) is more than the ${MAX_SWEEP_RUNS} runs a sweep may have; sweep fewer values or split it`);
  }
  const points = crossProduct(swept).map((assignments, index): SweepPoint => {
    try {
      const scenario = input.resolve([...plain, ...assignments]);
      const values: PointValues = {};
      for (const k of swept) values[k.key] = valueAt(scenario, k.key);
      return { index, assignments, scenario, values, models: input.models(scenario) };
    } catch (err) {
      if (!(err instanceof VmmsimError)) throw err;
      throw new VmmsimError(err.code, `${err.message} (sweep point ${assignments.join(' ')})`, err.fix);
    }
  });
  const runs = points.reduce((n, p) => n + p.models.length, 0);
  if (runs > MAX_SWEEP_RUNS) {
    const counts = [...new Set(points.map((p) => p.models.length))];
    const models = counts.length === 1 ? `${counts[0]} models` : `${Math.min(...counts)} to ${Math.max(...counts)} models`;
    throw usage(`a sweep of ${runs} runs (${count} points x ${models}) is more than the ${MAX_SWEEP_RUNS} runs a sweep may have; sweep fewer values or models, or split it`);
  }
  const byTree = new Map<string, SweepRun[]>();
  for (const point of points) {
    const key = processSetKey(point.scenario);
    const group = byTree.get(key) ?? [];
    byTree.set(key, group);
    for (const model of point.models) group.push({ point, model });
  }
  return { keys: swept.map((k) => k.key), points, groups: [...byTree.values()], runs };
}

/** A run's point and model in one line: `topology.psmmus=4 topology.vsmmu=single nested-smmuv3`. */
export function describeRun(values: PointValues, model: string): string {
  return [...Object.entries(values).map(([k, v]) => `${k}=${v}`), model].join(' ');
}

/** The operation a sweep reports for a run: unmap, or else the workload's most frequent one (sva-unmap-storm: invalidate). */
export function mainOp<T extends Pick<OpResult, 'op' | 'count'>>(run: { readonly ops: readonly T[] }): T | undefined {
  // A migrated VM reports its unmaps as unmap@before and unmap@after: the state it ends in counts.
  for (const name of ['unmap', 'unmap@after', 'unmap@before']) {
    const o = run.ops.find((x) => x.op === name);
    if (o && o.count > 0) return o;
  }
  return [...run.ops].sort((a, b) => b.count - a.count)[0];
}

/**
 * Every operation of a run that ran (count > 0), in the run's order: map, unmap, flush, static-setup,
 * io, the @before and @after rows of a migration... The sweep table and results.csv show them all.
 */
export function sweepOps<T extends Pick<OpResult, 'op' | 'count'>>(run: { readonly ops: readonly T[] }): T[] {
  return run.ops.filter((o) => o.count > 0);
}

/**
 * results.csv of a sweep: a header, then one record per operation of each run (sweepOps; one with
 * an empty op when none ran). Every record repeats its run's figures; `main_op` is true on the
 * record of the run's main operation (mainOp), so the records where it is true are one per run, as
 * the file held before it had a record per operation.
 */
export function sweepCsvRecords(keys: readonly string[], runs: readonly RunResult[]): CsvValue[][] {
  // Application throughput first (empty for a workload without one), then the operation.
  const header = [
    ...keys, 'model', 'app_unit', 'app_per_sec_modeled', 'app_bytes_per_sec_modeled', 'app_bottleneck', 'app_bottleneck_kind', 'app_saturated',
    'op', 'count', ...TRANSITION_KINDS,
    'measured_p50_us', 'measured_p99_us', 'modeled_mean_ns', 'modeled_p99_ns',
    'ops_per_sec_measured', 'ops_per_sec_modeled', 'fanout', 'guest_commands', 'delivered', 'main_op',
  ];
  const records: CsvValue[][] = [header];
  for (const run of runs) {
    const main = mainOp(run);
    const ran = sweepOps(run);
    // The measured columns as the terminal's measured table shows them: warm-up excluded, the
    // median of the trials (runs[].measured).
    const m = measuredOf(run);
    const delivered = Object.values(run.invalidations.deliveredPerPsmmu).reduce((a, b) => a + b, 0);
    for (const op of ran.length > 0 ? ran : [main]) {
      const mo = op ? m.ops.find((o) => o.op === op.op) : undefined;
      records.push([
        ...keys.map((k) => run.point?.[k] ?? ''),
        run.model,
        run.application?.unit ?? '',
        run.application?.perSecModeled ?? '',
        run.application?.bytesPerSecModeled ?? '',
        run.application?.bottleneck ?? '',
        run.application?.bottleneckKind ?? '',
        run.application ? String(run.application.saturated) : '',
        op?.op ?? '',
        op?.count ?? '',
        ...TRANSITION_KINDS.map((k) => op?.transitions[k] ?? ''),
        mo?.p50Us.value ?? '',
        mo?.p99Us.value ?? '',
        op?.modeledNs.mean ?? '',
        op?.modeledNs.p99 ?? '',
        m.opsPerSec.value,
        run.throughput.opsPerSecModeled,
        run.invalidations.fanout,
        run.invalidations.guestCommands,
        delivered,
        String(ran.length === 0 || op === main),
      ]);
    }
  }
  return records;
}

/** One CSV record per saturation search of a sweep --saturate: the point, the model, the rate found. */
export function saturationCsvRecords(keys: readonly string[], results: readonly SaturationResult[]): CsvValue[][] {
  // boundPerSec, capPerSec and capped come after the first columns, which keep their order.
  const header: CsvValue[] = [...keys, 'model', 'op', 'metric', 'p99BoundUs', 'ratePerSec', 'failedAtPerSec', 'steps', 'stop', 'boundPerSec', 'capPerSec', 'capped'];
  return [
    header,
    ...results.map((r) => [
      ...keys.map((k) => r.point?.[k] ?? ''), r.model, r.op, r.metric, r.p99BoundUs, r.ratePerSec ?? '', r.failedAtPerSec ?? '', r.steps, r.stop,
      r.boundPerSec ?? '', r.capPerSec ?? '', r.capped === undefined ? '' : String(r.capped),
    ]),
  ];
}
