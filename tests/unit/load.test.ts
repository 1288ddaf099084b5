import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { loadOf } from '../../services/controller/load.js';
import type { OpResult, RunResult } from '../../services/controller/results.js';

const summary = { count: 0, mean: 0, stddev: 0, min: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };

/** An open-loop run of `vms` VMs, each completing `perVm` arrivals in `seconds` (both clocks). */
function run(vms: number, perVm: number, seconds: number, rate: number): RunResult {
  const s = resolveScenario({ topology: { vms, psmmus: vms }, workload: { kind: 'dma-map-benchmark', rate } });
  const op = (name: string): OpResult => ({ op: name, count: vms * perVm, failed: 0, transitions: { exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 }, measuredUs: summary, modeledNs: summary, breakdown: [] });
  const ops = [op('map'), op('unmap')];
  return {
    model: 'none', workload: s.workload, topology: s.topology, processes: [], ops, hops: [],
    throughput: { opsPerSecMeasured: (2 * vms * perVm) / seconds, opsPerSecModeled: (2 * vms * perVm) / seconds },
    invalidations: { guestCommands: 0, guestCommandsFailed: 0, deliveredPerPsmmu: {}, fanout: 0, wasted: 0, hostStage2: { unmaps: 0, deliveredPerPsmmu: {} } },
    dma: { mode: 'strict', translations: 0, iotlbHitRate: 0, faults: 0, staleTranslations: 0, atcHits: 0, atcStaleTranslations: 0, useAfterUnmap: 0, staleDuringUnmap: 0, walkAccesses: 0, translationCostNs: 0 },
    elapsedSec: seconds, modeledElapsedNs: seconds * 1e9, modeledResources: [], workloadCounters: {}, counters: {}, notes: [],
  };
}

describe('the load of an open-loop run', () => {
  it('achieves the requested rate when each VM kept up with it', () => {
    expect(loadOf(run(1, 1000, 1, 1000))?.achievedPerSec).toEqual({ measured: 1000, modeled: 1000 });
  });

  it('judges each VM against the rate it was asked for (workload.rate is per VM), not their sum', () => {
    // Two VMs asked for 1000/s each that completed only 500 in a second: half the rate, not all of it.
    const load = loadOf(run(2, 500, 1, 1000));
    expect(load?.completed).toBe(1000);
    expect(load?.achievedPerSec).toEqual({ measured: 500, modeled: 500 });
  });
});
