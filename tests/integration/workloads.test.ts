import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const scenario = (workload: Record<string, unknown>): ReturnType<typeof resolveScenario> => resolveScenario({ name: 'it-workloads', model: 'none', workload: { threads: 2, ...workload } });
const fx = useProcessTree(scenario({ ops: 40 }));
const NONE = { exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 };
const dmaDirectNs = testProfile.steps['guest.dma_direct']?.ns ?? NaN;

describe('the workloads through real processes (no vIOMMU)', () => {
  it('packet-stream: a map and an unmap per packet, closed loop and at a rate', async () => {
    await withSession(fx, async (session) => {
      const closed = await session.run(scenario({ kind: 'packet-stream', ops: 40 }), 'none', testProfile);
      expect(closed.ops.map((o) => [o.op, o.count, o.failed])).toEqual([['map', 40, 0], ['unmap', 40, 0]]);
      expect(closed.workloadCounters).toEqual({ packets: 40, tx: 20, rx: 20, failed: 0 });
      for (const o of closed.ops) {
        expect(o.transitions).toEqual(NONE);
        expect(o.modeledNs.mean).toBe(dmaDirectNs);
      }
      // 40 packets at 2000 per second: the last one arrives 19.5 ms into the run, in modeled time too.
      const open = await session.run(scenario({ kind: 'packet-stream', ops: 40, rate: 2000 }), 'none', testProfile);
      expect(open.ops.find((o) => o.op === 'map')?.count).toBe(40);
      expect(open.modeledElapsedNs).toBeGreaterThanOrEqual(19.5e6);
      expect(open.modeledElapsedNs).toBeLessThan(20e6);
      expect(open.elapsedSec).toBeGreaterThan(0.018);
    });
  });

  it('block: a map and an unmap per request, the device serving each batch', async () => {
    await withSession(fx, async (session) => {
      const r = await session.run(scenario({ kind: 'block', ops: 40, granulePages: 8, dwellUs: 200 }), 'none', testProfile);
      expect(r.ops.map((o) => [o.op, o.count, o.failed])).toEqual([['map', 40, 0], ['unmap', 40, 0]]);
      expect(r.workloadCounters).toEqual({ requests: 40, batches: 40, failed: 0 });
      // Per thread: 20 requests, each a map, 200 us with the device and an unmap.
      expect(r.modeledElapsedNs).toBe(20 * (2 * dmaDirectNs + 200_000));
    });
  });

  it('static: maps once, I/Os with no map or unmap', async () => {
    await withSession(fx, async (session) => {
      const r = await session.run(scenario({ kind: 'static', ops: 40, dwellUs: 50 }), 'none', testProfile);
      expect(r.ops.map((o) => [o.op, o.count, o.failed])).toEqual([['map', 2, 0], ['unmap', 2, 0]]);
      expect(r.workloadCounters).toEqual({ ios: 40, batches: 40, buffers: 2, failed: 0 });
      expect(r.modeledElapsedNs).toBe(2 * dmaDirectNs + 20 * 50_000);
    });
  });

  it('dma-map-benchmark still runs for durationSec', async () => {
    await withSession(fx, async (session) => {
      const r = await session.run(scenario({ ops: 0, durationSec: 0.2 }), 'none', testProfile);
      expect(r.elapsedSec).toBeGreaterThanOrEqual(0.2);
      expect(r.ops.find((o) => o.op === 'map')?.count).toBeGreaterThan(0);
    });
  });

  it('sva-unmap-storm: one stage-1 invalidation by ASID and VA per munmap, trapped or through a VCMDQ', async () => {
    await withSession(fx, async (session) => {
      const s = scenario({ kind: 'sva-unmap-storm', ops: 20, granulePages: 16 });
      const nested = await session.run(s, 'nested-smmuv3', testProfile);
      const inv = nested.ops.find((o) => o.op === 'invalidate');
      expect(inv?.count).toBe(20);
      // Two vCPUs in step: one PROD write publishes both lists (the queue's gathering), and each
      // reads CONS for its own sync.
      expect(inv?.transitions).toEqual({ ...NONE, exit: 1.5, user: 1.5, ioctl: 1, hw: 1 });
      // 16 pages are one range TLBI_NH_VA each; every one reaches the pSMMU.
      expect(nested.invalidations.guestCommands).toBe(20);
      expect(nested.invalidations.deliveredPerPsmmu['psmmu-0']).toBe(20);
      const vcmdq = await session.run(s, 'nested-smmuv3-vcmdq', testProfile);
      expect(vcmdq.ops.find((o) => o.op === 'invalidate')?.transitions).toEqual({ ...NONE, direct: 2 });
    });
  });

  it('sva-unmap-storm is refused by a model with no SVA, naming it', async () => {
    await withSession(fx, async (session) => {
      await expect(session.run(scenario({ kind: 'sva-unmap-storm', ops: 20 }), 'none', testProfile)).rejects.toThrow(/sva-unmap-storm is not supported with model none/);
    });
  });
});
