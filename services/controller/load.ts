/**
 * What an open-loop run (workload.rate > 0) delivered against what it was asked for: the requested
 * arrival rate, and the rate at which arrivals completed in each clock.
 */
import type { LoadResult, RunResult, SaturationMetric } from './results.js';
import { mainOp } from './sweep.js';

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/**
 * The load of a run, or undefined for a closed-loop one. An arrival is complete when its last
 * operation returned (the unmap, the workload's main operation), so `completed` counts those; the
 * achieved rate is completed arrivals per second from the run's start (the schedule's zero) to its
 * end, in measured time and in modeled time (from the queueing model, so an arrival that waited for
 * a busy thread or a lock makes the modeled run longer). workload.rate is each VM's (every guest
 * draws its own arrivals at that rate), so the achieved rate is per VM too: the completed arrivals
 * of all VMs over their number, else N VMs at half the rate each would pass as twice the rate.
 */
export function loadOf(run: RunResult): LoadResult | undefined {
  const requested = run.workload.rate;
  if (!(requested > 0)) return undefined;
  const completed = mainOp(run)?.count ?? 0;
  const vms = Math.max(1, run.topology.vms);
  // run.elapsedSec is rounded to the millisecond, too coarse for a short run; the measured
  // throughput was computed from the unrounded time over every operation, so scale it instead.
  const totalOps = run.ops.reduce((n, o) => n + o.count, 0);
  const measured = totalOps > 0 ? (run.throughput.opsPerSecMeasured * completed) / totalOps / vms : 0;
  const modeled = run.modeledElapsedNs > 0 ? completed / vms / (run.modeledElapsedNs / 1e9) : 0;
  return {
    requestedPerSec: requested,
    achievedPerSec: { measured: round(measured), modeled: round(modeled) },
    arrivals: run.workload.arrivals,
    completed,
  };
}

/** The run with its `load` set when it ran open loop (unchanged otherwise, or when already set). */
export function withLoad(run: RunResult): RunResult {
  if (run.load) return run;
  const load = loadOf(run);
  return load ? { ...run, load } : run;
}

/**
 * What a saturation step is judged on, in one clock: the achieved rate, and the p99 in microseconds
 * of operation `op`, by default the run's main one (unmap, or the workload's own).
 */
export function stepMeasure(run: RunResult, metric: SaturationMetric, opName?: string): { achievedPerSec: number; p99Us: number } {
  const load = run.load ?? loadOf(run);
  const op = opName === undefined ? mainOp(run) : run.ops.find((o) => o.op === opName);
  return {
    achievedPerSec: load?.achievedPerSec[metric] ?? 0,
    p99Us: op ? (metric === 'modeled' ? op.modeledNs.p99 / 1000 : op.measuredUs.p99) : 0,
  };
}
