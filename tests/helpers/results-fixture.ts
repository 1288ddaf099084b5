/**
 * Results documents built in tests, for the code that reads them (tables, the report) without
 * running processes: every field the CLI writes, a real resolved scenario, and summaries whose
 * percentiles grow from a given p50 as a real latency distribution's do.
 */
import { loadScenario } from '../../services/controller/scenario-load.js';
import { zeroTransitions, type TransitionCounts } from '../../services/runtime/topology.js';
import { RESULTS_SCHEMA, type OpResult, type ResultsDoc, type RunResult, type SaturationResult } from '../../services/controller/results.js';

type Summary = OpResult['measuredUs'];

function r3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** A latency summary around `p50`, its tail `tail` times longer at the max. */
export function summary(count: number, p50: number, tail = 8): Summary {
  return {
    count,
    mean: r3(p50 * 1.2),
    stddev: r3(p50 * 0.5),
    min: r3(p50 * 0.8),
    p50: r3(p50),
    p90: r3(p50 * (1 + (tail - 1) * 0.1)),
    p99: r3(p50 * (1 + (tail - 1) * 0.4)),
    p999: r3(p50 * (1 + (tail - 1) * 0.7)),
    max: r3(p50 * tail),
  };
}

export interface FixtureOp {
  op: string;
  count: number;
  transitions?: Partial<TransitionCounts>;
  measuredP50Us: number;
  modeledP50Ns: number;
}

export interface FixtureRun {
  model: string;
  point?: Record<string, string | number>;
  ops: FixtureOp[];
  /** Links crossed, each with its p50 in us. */
  hops?: { from: string; to: string; p50Us: number }[];
  psmmus?: number;
  opsPerSecMeasured?: number;
  opsPerSecModeled?: number;
  fanout?: number;
  rate?: number;
}

export function fixtureRun(f: FixtureRun): RunResult {
  const scenario = loadScenario(undefined, [], f.rate ? { 'workload.rate': f.rate } : {});
  const psmmus = f.psmmus ?? 1;
  const guestCommands = f.ops.find((o) => o.op === 'unmap')?.count ?? 0;
  const fanout = f.fanout ?? (guestCommands > 0 ? psmmus : 0);
  const deliveredPerPsmmu: Record<string, number> = {};
  for (let k = 0; k < psmmus; k++) deliveredPerPsmmu[`psmmu-${k}`] = Math.round((guestCommands * fanout) / psmmus);
  const run: RunResult = {
    ...(f.point ? { point: f.point } : {}),
    model: f.model,
    workload: scenario.workload,
    topology: { ...scenario.topology, psmmus },
    processes: [
      { role: 'guest', name: 'guest-0', pid: 1001, host: 'vm' },
      { role: 'psmmu', name: 'psmmu-0', pid: 1002, host: 'vm' },
    ],
    ops: f.ops.map((o) => ({
      op: o.op,
      count: o.count,
      failed: 0,
      transitions: { ...zeroTransitions(), ...o.transitions },
      measuredUs: summary(o.count, o.measuredP50Us),
      modeledNs: summary(o.count, o.modeledP50Ns, 1.5),
      breakdown: [],
    })),
    hops: (f.hops ?? []).map((h) => ({ from: h.from, to: h.to, count: guestCommands, measuredUs: summary(guestCommands, h.p50Us) })),
    throughput: { opsPerSecMeasured: f.opsPerSecMeasured ?? 1234.567, opsPerSecModeled: f.opsPerSecModeled ?? 479501.319 },
    invalidations: { guestCommands, guestCommandsFailed: 0, deliveredPerPsmmu, fanout, wasted: 0, hostStage2: { unmaps: 0, deliveredPerPsmmu: {} } },
    dma: { mode: 'strict', translations: 410, iotlbHitRate: 0.961, faults: 0, staleTranslations: 0, atcHits: 0, atcStaleTranslations: 0, useAfterUnmap: 0, staleDuringUnmap: 0, walkAccesses: 228, translationCostNs: 20290 },
    elapsedSec: 0.192,
    modeledElapsedNs: 208550,
    modeledResources: [{ resource: 'qemu-0.bql', holds: guestCommands, busyNs: 81250, waitNs: 0, maxWaitNs: 0, maxQueue: 0, utilization: 0.39 }],
    workloadCounters: {},
    counters: { 'guest-0': { operations: 2 * guestCommands, guestCommands }, 'psmmu-0': { commands: guestCommands } },
    notes: [],
  };
  if (f.rate) run.load = { requestedPerSec: f.rate, achievedPerSec: { measured: f.rate * 0.5, modeled: f.rate * 0.99 }, arrivals: 'constant', completed: guestCommands };
  return run;
}

export function fixtureDoc(runs: RunResult[], extra: Partial<ResultsDoc> = {}): ResultsDoc {
  const scenario = loadScenario(undefined, [], {});
  return {
    schema: RESULTS_SCHEMA,
    status: 'ok',
    tool: { name: 'vmmsim', version: '0.1.0' },
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '2026-01-01T00:00:10.000Z',
    scenario,
    seed: scenario.seed,
    profile: { name: 'arm64-kunpeng920', path: 'profiles/arm64-kunpeng920.yaml', arch: 'arm64' },
    runs,
    ...extra,
  };
}

/** A map and an unmap that pay the transitions given (the unmap's), with latencies from `scale`. */
export function mapUnmap(count: number, unmap: Partial<TransitionCounts>, scale = 1): FixtureOp[] {
  return [
    { op: 'map', count, measuredP50Us: 25 * scale, modeledP50Ns: 110 * scale },
    { op: 'unmap', count, transitions: unmap, measuredP50Us: 3000 * scale, modeledP50Ns: 4061 * scale },
  ];
}

export function saturation(model: string, ratePerSec: number | null, extra: Partial<SaturationResult> = {}): SaturationResult {
  return { model: model as SaturationResult['model'], ratePerSec, metric: 'modeled', p99BoundUs: 5, op: 'unmap', failedAtPerSec: ratePerSec === null ? 250 : null, steps: 3, stop: 'step-cap', ...extra };
}
