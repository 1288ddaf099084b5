import { describe, expect, it } from 'vitest';
import { MODEL } from '../../services/designs/names.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { RunResult } from '../../services/controller/results.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * Lazy mode's flush queue through real processes, as dma-iommu runs it: one timer per domain that
 * flushes in timer context (charged to no unmap), and vCPUs sharing a domain's queues in the
 * modeled order of their operations.
 */
const quiet = { device: { ringBuffers: 0 } };
const spaced = { name: 'fq', dma: 'lazy', ...quiet, workload: { ops: 40, gapUs: 1000 } };
const scenario = resolveScenario(spaced);
const fx = useProcessTree(scenario);
const op = (run: RunResult, name: string) => run.ops.find((o) => o.op === name);

describe('the flush queue\'s timer', () => {
  it('intel-cm: with 1 ms between unmaps, the domain\'s 10 ms timer flushes on its own, and no unmap pays a flush', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario, MODEL.intelCm, testProfile);
      const unmap = op(run, 'unmap');
      const flush = op(run, 'flush');
      expect(unmap?.failed).toBe(0);
      // No ring fills (40 entries): every unmap only queued.
      expect(unmap?.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
      // About one timer per 10 modeled ms of the 40 ms run, the last one at the end.
      expect(flush?.count).toBeGreaterThanOrEqual(3);
      expect(flush?.count).toBeLessThanOrEqual(5);
      // Each timer flush is one domain-selective invalidation (an IQT write), its own operation.
      expect(flush?.transitions.exit).toBe(1);
      expect(run.counters['qemu-0']?.['iotlbDsi']).toBe(flush?.count);
    });
  });

  it('virtio-iommu defaults to Linux\'s single queue (shadow_on_flush: 1000 ms timer); per-cpu when asked (10 ms)', async () => {
    await withSession(fx, async (session) => {
      const auto = await session.run(scenario, MODEL.virtioIommu, testProfile);
      expect(op(auto, 'flush')?.count).toBe(1);
      const perCpu = await session.run(resolveScenario({ ...spaced, guest: { flushQueue: 'per-cpu' } }), MODEL.virtioIommu, testProfile);
      expect(op(perCpu, 'flush')?.count).toBeGreaterThanOrEqual(3);
      // intel-cm's driver sets no shadow_on_flush: auto is per-cpu there (the timer test above).
    });
  });

  it('virtio-iommu, single queue shared by three vCPUs on one device: the same modeled results on every run', async () => {
    const s = resolveScenario({ name: 'fq', dma: 'lazy', ...quiet, guest: { flushQueue: 'single' }, workload: { ops: 300, threads: 3 } });
    await withSession(fx, async (session) => {
      const a = await session.run(s, MODEL.virtioIommu, testProfile);
      const b = await session.run(s, MODEL.virtioIommu, testProfile);
      const modeled = (r: RunResult): string => JSON.stringify([r.ops.map((o) => [o.op, o.count, o.transitions, o.modeledNs]), r.modeledElapsedNs, r.modeledResources]);
      expect(modeled(b)).toBe(modeled(a));
      // One ring of 32768 and a 1000 ms timer: nothing fills, the timer flushes once at the end.
      expect(op(a, 'flush')?.count).toBe(1);
      expect(op(a, 'unmap')?.failed).toBe(0);
    });
  });
});
