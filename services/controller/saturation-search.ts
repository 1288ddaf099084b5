/**
 * The search of `vmmsim saturate`, apart from any process: given a way to run one step at a
 * requested rate (a real run, or a fake in tests), find the highest rate the system sustains. A
 * rate passes when the run achieved at least ACHIEVED_SHARE of it and its p99 stayed under the
 * bound. The search ramps exponentially (doubling from `from` while it passes, halving while it
 * fails) until it has a passing rate below a failing one, then bisects that bracket until it is
 * within `tolerance` of the failing rate, or `maxSteps` runs were made. A rate that passes at the
 * upper bound `max` does not end the search: the bound doubles, up to the hard cap `cap`, and the
 * ramp goes on; only a pass at the cap ends it (stop 'max', `capped`), saying the design saturates
 * above the cap.
 */

/** A rate passes when at least this share of it was achieved. */
export const ACHIEVED_SHARE = 0.95;
/** Stop bisecting when the bracket is within this share of its top. */
export const BRACKET_TOLERANCE = 0.05;
/** Below one arrival per second the ramp down gives up. */
const MIN_RATE = 1;

export interface StepMeasure {
  achievedPerSec: number;
  p99Us: number;
}

export interface SearchStep extends StepMeasure {
  requestedPerSec: number;
  ok: boolean;
  /** Why it failed, for the progress line (empty when ok). */
  why: string;
  /** When it passed at the upper bound and the search raised the bound: the new bound. */
  raisedTo?: number;
}

export interface SearchOptions {
  from: number;
  /** The first upper bound: a pass there doubles it, up to `cap`. */
  max: number;
  /** The hard cap the bound never passes (default: max, so the bound never rises). */
  cap?: number;
  p99BoundUs: number;
  maxSteps: number;
  tolerance?: number;
}

export interface SearchResult {
  /** The highest rate that passed, or undefined. */
  ratePerSec: number | undefined;
  /** The lowest rate above it that failed, or undefined. */
  failedAtPerSec: number | undefined;
  steps: SearchStep[];
  stop: 'converged' | 'max' | 'step-cap' | 'floor';
  /** The upper bound in force when the search ended (max, or higher after passes at it). */
  boundPerSec: number;
  /** The hard cap the bound could rise to. */
  capPerSec: number;
  /** True when a rate passed at the cap: the design saturates above it, the search did not find where. */
  capped: boolean;
}

/** Judges one step: achieved at least 95% of the requested rate, and p99 under the bound. */
export function judge(requestedPerSec: number, m: StepMeasure, p99BoundUs: number): SearchStep {
  const share = requestedPerSec > 0 ? m.achievedPerSec / requestedPerSec : 0;
  const reasons: string[] = [];
  if (!(share >= ACHIEVED_SHARE)) reasons.push(`achieved ${Math.round(share * 100)}% of requested`);
  if (!(m.p99Us < p99BoundUs)) reasons.push(`p99 over ${p99BoundUs} us`);
  return { requestedPerSec, ...m, ok: reasons.length === 0, why: reasons.join(', ') };
}

/** Three significant digits: rates people can read, and still strictly inside any bracket wider than 5%. */
export function roundRate(r: number): number {
  if (r <= 0) return 0;
  const scale = 10 ** (Math.floor(Math.log10(r)) - 2);
  return Math.round(r / scale) * scale;
}

export async function searchSaturation(
  run: (requestedPerSec: number) => Promise<StepMeasure>,
  opts: SearchOptions,
  onStep: (step: SearchStep) => void = () => undefined,
): Promise<SearchResult> {
  if (!(opts.from > 0) || !(opts.max >= opts.from)) throw new Error(`the search needs 0 < from <= max, got from ${opts.from}, max ${opts.max}`);
  if (!(opts.maxSteps >= 1)) throw new Error(`the search needs at least one step, got ${opts.maxSteps}`);
  const cap = opts.cap ?? opts.max;
  if (!(cap >= opts.max)) throw new Error(`the search needs max <= cap, got max ${opts.max}, cap ${cap}`);
  let bound = opts.max;
  const tolerance = opts.tolerance ?? BRACKET_TOLERANCE;
  const steps: SearchStep[] = [];
  let lo: number | undefined;
  let hi: number | undefined;
  let rate = opts.from;
  let stop: SearchResult['stop'];
  for (;;) {
    if (steps.length >= opts.maxSteps) {
      stop = 'step-cap';
      break;
    }
    const step = judge(rate, await run(rate), opts.p99BoundUs);
    steps.push(step);
    // A noisy measure may pass above a rate that failed: the bracket keeps the latest word on each side.
    if (step.ok) {
      lo = rate;
      if (hi !== undefined && hi <= rate) hi = undefined;
    } else {
      hi = rate;
      if (lo !== undefined && lo >= rate) lo = undefined;
    }
    if (step.ok && rate >= bound) {
      if (bound >= cap) {
        onStep(step);
        stop = 'max';
        break;
      }
      // Passing at the bound says nothing about where the design saturates: raise it.
      bound = Math.min(bound * 2, cap);
      step.raisedTo = bound;
    }
    onStep(step);
    let next: number;
    if (lo === undefined) {
      next = roundRate(rate / 2);
      if (next < MIN_RATE) {
        stop = 'floor';
        break;
      }
    } else if (hi === undefined) {
      next = Math.min(rate * 2, bound);
    } else {
      if (hi - lo <= tolerance * hi) {
        stop = 'converged';
        break;
      }
      next = roundRate((lo + hi) / 2);
      if (next <= lo || next >= hi) next = (lo + hi) / 2;
    }
    rate = next;
  }
  return { ratePerSec: lo, failedAtPerSec: hi, steps, stop, boundPerSec: bound, capPerSec: cap, capped: stop === 'max' };
}
