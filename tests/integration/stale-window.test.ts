import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * The security window of the lazy flush queue, through real processes and real device DMA. The
 * device owns each buffer for 3 ms (it DMAs into it, so the SMMU caches the translation), then a
 * hostile device keeps touching buffers whose dma_unmap returned, during each thread's 3 ms of
 * think time. Strict mode must block every such access; lazy mode serves some from stale entries
 * until its flush.
 */
const base = {
  device: { dmaRate: 5000, ringBuffers: 0, lingerMs: 30, lingerShare: 0.5 },
  workload: { ops: 60, dwellUs: 3000, gapUs: 3000 },
};
const fx = useProcessTree(resolveScenario(base));

describe('use-after-unmap through the IOTLB', () => {
  it('strict: the device does touch unmapped buffers, and no access is served from a stale entry', async () => {
    await withSession(fx, async (session) => {
    const run = await session.run(resolveScenario({ ...base, dma: 'strict' }), 'nested-smmuv3', testProfile);
    expect(run.dma.useAfterUnmap).toBeGreaterThan(0);
    expect(run.dma.faults).toBeGreaterThan(0);
    expect(run.dma.staleTranslations).toBe(0);
    });
  });

  it('lazy: until the flush, the device reaches unmapped buffers through stale entries', async () => {
    await withSession(fx, async (session) => {
    const run = await session.run(resolveScenario({ ...base, dma: 'lazy' }), 'nested-smmuv3', testProfile);
    expect(run.dma.useAfterUnmap).toBeGreaterThan(0);
    expect(run.dma.staleTranslations).toBeGreaterThan(0);
    // Flushes came from the 10 ms modeled timeout (each iteration is 6 ms of dwell and think time).
    expect(run.invalidations.guestCommands).toBeGreaterThan(10);
    expect(run.invalidations.guestCommands).toBeLessThan(60);
    });
  });
});
