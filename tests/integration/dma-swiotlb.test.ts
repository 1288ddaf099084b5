import { describe, expect, it } from 'vitest';
import { MODEL } from '../../services/designs/names.js';
import type { RunResult } from '../../services/controller/results.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * dma=swiotlb through real processes: dma-iommu's bounce path for untrusted devices. Every buffer
 * (taken to start 64 bytes into its page: not granule-aligned) is copied into a swiotlb slot, and
 * the slot is mapped and unmapped through the IOMMU on every I/O, with the design's whole path and
 * its invalidation; the reusable IOMMU-backed pool of dma=bounce, by contrast, reaches the IOMMU
 * once. No receive ring, so every map and unmap is a measured operation.
 */
const base = { name: 'swiotlb', device: { ringBuffers: 0 }, workload: { ops: 30, granulePages: 2 } };
const fx = useProcessTree(resolveScenario(base));
const op = (run: RunResult, name: string) => run.ops.find((o) => o.op === name);
const step = (name: string): number => testProfile.steps[name]?.ns ?? Number.NaN;

describe('dma=swiotlb', () => {
  for (const model of [MODEL.virtioIommu, MODEL.intelCm, MODEL.nestedSmmuv3]) {
    it(`${model}: each I/O pays strict's path and invalidation, two copies per page and the slot bookkeeping`, async () => {
      await withSession(fx, async (session) => {
        const strict = await session.run(resolveScenario({ ...base, dma: 'strict' }), model, testProfile);
        const swiotlb = await session.run(resolveScenario({ ...base, dma: 'swiotlb' }), model, testProfile);
        for (const name of ['map', 'unmap']) {
          expect(op(swiotlb, name)?.failed, name).toBe(0);
          expect(op(swiotlb, name)?.transitions, name).toEqual(op(strict, name)?.transitions);
        }
        // Map: claim a slot and copy 2 pages in; unmap: copy 2 pages back and release the slot.
        const extra = step('guest.swiotlb_slot') + 2 * step('guest.bounce_copy');
        expect((op(swiotlb, 'map')?.modeledNs.mean ?? 0) - (op(strict, 'map')?.modeledNs.mean ?? 0)).toBeCloseTo(extra, 3);
        expect((op(swiotlb, 'unmap')?.modeledNs.mean ?? 0) - (op(strict, 'unmap')?.modeledNs.mean ?? 0)).toBeCloseTo(extra, 3);
        expect(swiotlb.invalidations.guestCommands).toBe(strict.invalidations.guestCommands);
      });
    });
  }

  it('bounce (the reusable IOMMU-backed pool) reaches the IOMMU only for the pool, never per I/O', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...base, dma: 'bounce' }), MODEL.virtioIommu, testProfile);
      expect(op(run, 'unmap')?.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
    });
  });
});
