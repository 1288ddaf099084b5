/**
 * The saturation search as a command runs it (saturate, and sweep --saturate): its options, and
 * one model's search on a session, every step a real run at one open-loop rate. The search itself
 * is ../saturation-search.ts.
 */
import type { CostProfile } from '../../cost/profile.js';
import { VmmsimError } from '../../runtime/errors.js';
import { RATE_WORKLOADS, SCENARIO_SCHEMA, type ModelName, type NumberField, type ObjectField, type Scenario } from '../../scenario/schema.js';
import { stepMeasure, withLoad } from '../load.js';
import type { RunResult, SaturationMetric, SaturationResult } from '../results.js';
import { searchSaturation, type SearchStep } from '../saturation-search.js';
import type { Session } from '../session.js';
import { mainOp } from '../sweep.js';
import { fmtRate } from '../table.js';
import type { RunAbort } from './abort.js';
import { intOption, usageError } from './options.js';

export const DEFAULT_FROM = 1000;
export const DEFAULT_MAX = 1e8;
export const DEFAULT_STEPS = 24;
/** The hard cap by default: the largest workload.rate. A step's work is its ops (or its duration), not its rate, so any rate the schema takes is safe to try. */
export const RATE_CAP = rateLimit();
/** The operations every open-loop workload records (an arrival's map, then its unmap). */
const OPEN_LOOP_OPS = ['map', 'unmap'];

/** The search's own options (saturate, and sweep --saturate). */
export const SEARCH_OPTIONS = {
  'p99-bound-us': { type: 'string' },
  metric: { type: 'string' },
  from: { type: 'string' },
  max: { type: 'string' },
  cap: { type: 'string' },
  steps: { type: 'string' },
  op: { type: 'string' },
} as const;

/** How one saturation search runs and judges its steps. */
export interface SearchSettings {
  metric: SaturationMetric;
  p99BoundUs: number;
  /** The operation whose p99 is judged; undefined: the run's main one (unmap). */
  op: string | undefined;
  from: number;
  /** The first upper bound; a pass there doubles it, up to cap. */
  max: number;
  /** The hard cap of the bound (default: the largest workload.rate). */
  cap: number;
  steps: number;
}

/** Reads and checks the search options (saturate's, and sweep --saturate's). */
export function searchSettings(values: { [K in keyof typeof SEARCH_OPTIONS]?: string | undefined }): SearchSettings {
  const p99BoundUs = positive('p99-bound-us', values['p99-bound-us'], undefined);
  const metric = values.metric ?? 'modeled';
  if (metric !== 'modeled' && metric !== 'measured') throw usageError(`--metric must be modeled or measured, got "${metric}"`);
  const limit = RATE_CAP;
  const from = positive('from', values.from, DEFAULT_FROM);
  const cap = positive('cap', values.cap, limit);
  if (cap > limit) throw usageError(`--cap must be at most ${limit} (the largest workload.rate), got ${cap}`);
  const max = positive('max', values.max, Math.min(cap, Math.max(from, DEFAULT_MAX)));
  if (max > limit) throw usageError(`--max must be at most ${limit} (the largest workload.rate), got ${max}`);
  if (max > cap) throw usageError(`--max (${max}) must be at most --cap (${cap})`);
  if (from > max) throw usageError(`--from (${from}) must be at most --max (${max})`);
  const steps = intOption('steps', values.steps, 1) ?? DEFAULT_STEPS;
  const op = values.op;
  if (op !== undefined && !OPEN_LOOP_OPS.includes(op)) throw usageError(`--op must be one of ${OPEN_LOOP_OPS.join(', ')}, got "${op}"`);
  return { metric, p99BoundUs, op, from, max, cap, steps };
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
  const byRate = new Map<number, RunResult>();
  const found = await searchSaturation(
    async (rate) => {
      const run = withLoad(await abort.race(session.run(atRate(scenario, rate), model, profile)));
      record(run, rate);
      byRate.set(rate, run);
      op = s.op ?? mainOp(run)?.op ?? op;
      return stepMeasure(run, s.metric, s.op);
    },
    { from: s.from, max: s.max, cap: s.cap, p99BoundUs: s.p99BoundUs, maxSteps: s.steps },
    onStep,
  );
  // The lowest failing step is where a resource ran out (or the p99 bound was passed first: its
  // utilization says which). With no failing step, nothing bounded the search but its cap.
  const judged = byRate.get(found.failedAtPerSec ?? NaN);
  const boundBy = judged?.modeledBound;
  return {
    model,
    ratePerSec: found.ratePerSec ?? null,
    metric: s.metric,
    p99BoundUs: s.p99BoundUs,
    op,
    failedAtPerSec: found.failedAtPerSec ?? null,
    steps: found.steps.length,
    stop: found.stop,
    boundPerSec: found.boundPerSec,
    capPerSec: found.capPerSec,
    capped: found.capped,
    ...(boundBy ? { boundBy } : {}),
  };
}

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

/** The scenario at one step: only the rate changes. */
function atRate(s: Scenario, rate: number): Scenario {
  return { ...s, workload: { ...s.workload, rate } };
}

/** A step's line on stderr. */
export function progressLine(model: string, step: SearchStep): string {
  const p99 = step.p99Us.toFixed(step.p99Us >= 100 ? 0 : step.p99Us >= 10 ? 1 : 3);
  const raised = step.raisedTo !== undefined ? `; passed at the upper bound: raised to ${fmtRate(step.raisedTo)}/s` : '';
  return `vmmsim: saturate ${model}: ${fmtRate(step.requestedPerSec)}/s -> achieved ${fmtRate(step.achievedPerSec)}/s, p99 ${p99} us: ${step.ok ? 'ok' : `over (${step.why})`}${raised}\n`;
}

/**
 * What a search that did not bracket the saturation rate says plainly, one line per model (empty
 * when every search found it): passed at the hard cap, or ran out of steps with every rate passing.
 */
export function unboundedLines(results: readonly Pick<SaturationResult, 'model' | 'point' | 'ratePerSec' | 'failedAtPerSec' | 'steps' | 'stop' | 'capPerSec'>[]): string {
  const lines: string[] = [];
  for (const r of results) {
    const at = r.point ? `${Object.entries(r.point).map(([k, v]) => `${k}=${v}`).join(' ')} ` : '';
    if (r.stop === 'max' && r.capPerSec !== undefined) {
      lines.push(`${at}${r.model}: stopped at the cap of ${fmtRate(r.capPerSec)}/s (--cap): it passed there, so it saturates above the cap; the search did not find where`);
    } else if (r.stop === 'step-cap' && r.failedAtPerSec === null && r.ratePerSec !== null) {
      lines.push(`${at}${r.model}: stopped after ${r.steps} steps (--steps) with every rate up to ${fmtRate(r.ratePerSec)}/s passing: it saturates above that; raise --steps or --from`);
    }
  }
  return lines.length > 0 ? `\nnot saturated:\n${lines.map((l) => `  ${l}`).join('\n')}\n` : '';
}
