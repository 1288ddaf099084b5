/**
 * Open-loop dma-map-benchmark through the real processes: iterations arrive at workload.rate, the
 * run lasts as long as its schedule (in modeled and in real time), an arrival's modeled latency
 * counts from its arrival (so a backlog shows), and Poisson arrivals are as deterministic as the rest.
 */
import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { loadOf } from '../../services/controller/load.js';
import type { RunResult } from '../../services/controller/results.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const scenario = (workload: Record<string, unknown>): ReturnType<typeof resolveScenario> =>
  resolveScenario({ name: 'it-open-loop', device: { dmaRate: 0 }, workload: { kind: 'dma-map-benchmark', ...workload } });
const fx = useProcessTree(scenario({ ops: 40 }));
const dmaDirectNs = testProfile.steps['guest.dma_direct']?.ns ?? NaN;

function op(run: RunResult, name: string): RunResult['ops'][number] {
  const o = run.ops.find((x) => x.op === name);
  if (!o) throw new Error(`no ${name} in the run`);
  return o;
}

describe('open-loop dma-map-benchmark', () => {
  it('runs for ops / rate: the last of 40 iterations at 2000/s arrives 19.5 ms in, in both clocks', async () => {
    await withSession(fx, async (session) => {
      const rate = 2000;
      const run = await session.run(scenario({ ops: 40, threads: 2, rate }), 'none', testProfile);
      expect(op(run, 'map').count).toBe(40);
      expect(op(run, 'unmap').count).toBe(40);
      // The last arrival (39 / rate), then its map and unmap: the thread was never late.
      expect(run.modeledElapsedNs).toBe((39 * 1e9) / rate + 2 * dmaDirectNs);
      expect(op(run, 'map').modeledNs.max).toBe(dmaDirectNs);
      // Real time followed the schedule too (timers are millisecond-grained: up to 1 ms early).
      expect(run.elapsedSec).toBeGreaterThanOrEqual(0.0185);
      const load = loadOf(run);
      expect(load).toMatchObject({ requestedPerSec: rate, arrivals: 'constant', completed: 40 });
      expect(load?.achievedPerSec.modeled).toBeCloseTo(40 / ((39 / rate) + 2 * dmaDirectNs * 1e-9), 0);
      expect(load?.achievedPerSec.measured).toBeGreaterThan(0);
      expect(load?.achievedPerSec.measured).toBeLessThanOrEqual(40 / 0.0185);
    });
  });

  it('counts the wait of an arrival the thread could not take on time in its modeled latency', async () => {
    await withSession(fx, async (session) => {
      // nested-smmuv3: a strict iteration costs a few microseconds; 1 M/s is far beyond one thread.
      const closed = await session.run(scenario({ ops: 100 }), 'nested-smmuv3', testProfile);
      const iterationNs = op(closed, 'map').modeledNs.mean + op(closed, 'unmap').modeledNs.mean;
      const rate = 1e6;
      const open = await session.run(scenario({ ops: 100, rate }), 'nested-smmuv3', testProfile);
      // The thread never idles: the run is as long as its 100 iterations back to back.
      expect(open.modeledElapsedNs).toBeCloseTo(100 * iterationNs, -1);
      const load = loadOf(open);
      expect(load?.achievedPerSec.modeled).toBeCloseTo(1e9 / iterationNs, -3);
      expect(load?.achievedPerSec.modeled).toBeLessThan(0.95 * rate);
      // Arrival k (k us in) is mapped when the thread finished k iterations: it waited k * (iteration - 1 us).
      const lastWaitNs = 99 * (iterationNs - 1e9 / rate);
      expect(op(open, 'map').modeledNs.max).toBeGreaterThanOrEqual(lastWaitNs);
      expect(op(open, 'map').modeledNs.max).toBeLessThanOrEqual(lastWaitNs + iterationNs + 1);
      // Closed loop, nothing waits; the unmap is timed from its own start either way.
      expect(op(closed, 'map').modeledNs.max).toBeLessThan(1000);
      expect(op(open, 'unmap').modeledNs.p99).toBe(op(closed, 'unmap').modeledNs.p99);
    });
  });

  it('gives the same modeled results twice with poisson arrivals, and other ones with another seed', async () => {
    await withSession(fx, async (session) => {
      const s = scenario({ ops: 60, threads: 2, rate: 200_000, arrivals: 'poisson' });
      const a = await session.run(s, 'nested-smmuv3', testProfile);
      const b = await session.run(s, 'nested-smmuv3', testProfile);
      const modeled = (r: RunResult): unknown => ({ elapsed: r.modeledElapsedNs, ops: r.ops.map((o) => [o.op, o.count, o.modeledNs]), resources: r.modeledResources });
      expect(modeled(b)).toEqual(modeled(a));
      expect(loadOf(a)?.arrivals).toBe('poisson');
      const c = await session.run({ ...s, seed: 2 }, 'nested-smmuv3', testProfile);
      expect(c.modeledElapsedNs).not.toBe(a.modeledElapsedNs);
    });
  });
});
