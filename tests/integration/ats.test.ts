import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { RunResult } from '../../services/controller/results.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';
import { thrown } from '../helpers/thrown.js';

/**
 * device.ats through real processes: the devices keep ATCs, and every unmap follows its TLBI and
 * sync with an ATC_INV batch and a CMD_SYNC of its own (arm_smmu_atc_inv_domain), which completes
 * when the device answers (smmu.atc_inv). One VM, one pSMMU with its own vSMMU.
 */
const base = { topology: { vsmmu: 'per-psmmu' }, device: { dmaRate: 0 }, workload: { ops: 30 } };
const fx = useProcessTree(resolveScenario(base));
const op = (run: RunResult, name: string): RunResult['ops'][number] | undefined => run.ops.find((o) => o.op === name);
const t = (c: Partial<Record<'exit' | 'user' | 'ioctl' | 'hw' | 'direct', number>>): Record<string, number> => ({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0, ...c });
const step = (name: string): number => testProfile.steps[name]?.ns ?? 0;

/** A device that keeps touching each buffer 20 ms after its unmap returned. */
const lingering = { topology: { vsmmu: 'per-psmmu' }, device: { dmaRate: 3000, ringBuffers: 0, lingerMs: 20, lingerShare: 0.5, ats: true }, workload: { ops: 40, dwellUs: 2000, gapUs: 2000 } };

describe('device.ats: device ATCs and ATC_INV after every TLB invalidation', () => {
  it('nested-smmuv3: a second trapped batch (ATC_INV + CMD_SYNC) and a second HWPT_INVALIDATE per unmap; the sync waits for the device', async () => {
    await withSession(fx, async (session) => {
      const off = await session.run(resolveScenario(base), 'nested-smmuv3', testProfile);
      const on = await session.run(resolveScenario({ ...base, device: { dmaRate: 0, ats: true } }), 'nested-smmuv3', testProfile);
      expect(op(off, 'unmap')?.transitions).toEqual(t({ exit: 2, user: 2, ioctl: 1, hw: 1 }));
      // TLBI_NH_VA + sync (PROD, CONS), then ATC_INV + sync (PROD, CONS): QEMU forwards each command.
      expect(op(on, 'unmap')?.transitions).toEqual(t({ exit: 4, user: 4, ioctl: 2, hw: 2 }));
      expect(on.invalidations.guestCommands).toBe(60);
      expect(on.counters['vfio']).toMatchObject({ hwptInvalidate: 60, chunks: 60 });
      expect(on.counters['psmmu-0']).toMatchObject({ commands: 60, syncs: 60, atcSyncs: 30, errors: 0 });
      const extra = (op(on, 'unmap')?.modeledNs.mean ?? 0) - (op(off, 'unmap')?.modeledNs.mean ?? 0);
      expect(extra).toBeGreaterThan(step('smmu.atc_inv') + 2 * (step('exit.mmio_trap') + step('exit.to_user')));
    });
  });

  it('nested-smmuv3-vcmdq: the ATC_INV and its sync go to the VCMDQ too (two more direct accesses)', async () => {
    await withSession(fx, async (session) => {
      const on = await session.run(resolveScenario({ ...base, device: { dmaRate: 0, ats: true } }), 'nested-smmuv3-vcmdq', testProfile);
      expect(op(on, 'unmap')?.transitions).toEqual(t({ direct: 4 }));
      expect(on.counters['psmmu-0']).toMatchObject({ vcmdqCommands: 60, vevents: 0, commands: 0 });
    });
  });

  it('strict: the device serves its DMA from its ATC and never from a stale entry; lazy: it does until the flush', async () => {
    await withSession(fx, async (session) => {
      const strict = await session.run(resolveScenario({ ...lingering, dma: 'strict' }), 'nested-smmuv3', testProfile);
      expect(strict.dma.atcHits).toBeGreaterThan(0);
      expect(strict.dma.useAfterUnmap).toBeGreaterThan(0);
      expect(strict.dma.staleTranslations).toBe(0);
      expect(strict.counters['psmmu-0']?.['atcInvalidations']).toBe(40);
      const lazy = await session.run(resolveScenario({ ...lingering, dma: 'lazy' }), 'nested-smmuv3', testProfile);
      expect(lazy.dma.staleTranslations).toBeGreaterThan(0);
      expect(lazy.dma.atcStaleTranslations).toBeGreaterThan(0);
      expect(lazy.dma.atcStaleTranslations).toBeLessThanOrEqual(lazy.dma.staleTranslations);
    });
  });

  it('a virtio-mem unplug under a nesting parent flushes every ATS master\'s whole ATC with a third sync', async () => {
    await withSession(fx, async (session) => {
      const s = resolveScenario({ ...base, device: { dmaRate: 0, ats: true }, workload: { ops: 20, virtioMem: { everyOps: 10, blocks: 1 } } });
      const run = await session.run(s, 'nested-smmuv3', testProfile);
      expect(op(run, 'mem-unplug')?.transitions).toEqual(t({ exit: 1, user: 1, ioctl: 1, hw: 3 }));
      // Per unplug (two in the run): TLBI_S2_IPA, TLBI_NH_ALL and ATC_INV (syncs not counted).
      expect(op(run, 'mem-unplug')?.count).toBe(2);
      expect(run.invalidations.hostStage2.deliveredPerPsmmu).toEqual({ 'psmmu-0': 6 });
    });
  });

  it('is refused where the IOMMU driver is not arm-smmu-v3, and under QEMU\'s emulated vSMMU', () => {
    expect(thrown(() => resolveScenario({ model: 'virtio-iommu', device: { ats: true } }))).toMatchObject({ code: 'E_NOT_SUPPORTED' });
    expect(thrown(() => resolveScenario({ model: 'emulated-smmuv3', device: { ats: true } })).message).toMatch(/ats can only be enabled if accel=on/);
  });
});
