import { describe, expect, it } from 'vitest';
import { designOf } from '../../services/designs/registry.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { RunResult } from '../../services/controller/results.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * smmu.ril: SMMUs with and without range invalidation (IDR3.RIL), through real processes. One VM,
 * one pSMMU with its own vSMMU, unmaps of 130 pages: with RIL two range TLBIs (128 + 2 pages);
 * without, 130 per-page TLBIs that the guest sends 64 to a batch (arm_smmu_cmdq_batch_add issues a
 * full batch without a sync) and QEMU forwards one IOMMU_HWPT_INVALIDATE per command.
 */
const PAGES = 130;
const base = { topology: { vsmmu: 'per-psmmu' }, device: { dmaRate: 0 }, workload: { ops: 20, granulePages: PAGES } };
const fx = useProcessTree(resolveScenario(base));
const unmapOf = (run: RunResult, name = 'unmap'): RunResult['ops'][number] | undefined => run.ops.find((o) => o.op === name);
const t = (c: Partial<Record<'exit' | 'user' | 'ioctl' | 'hw' | 'direct', number>>): Record<string, number> => ({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0, ...c });

describe('smmu.ril: range invalidation on or off', () => {
  it('nested-smmuv3: two range TLBIs with RIL; without, 130 per-page TLBIs in three PROD writes and 130 ioctls', async () => {
    await withSession(fx, async (session) => {
      const on = await session.run(resolveScenario({ ...base, smmu: { ril: true } }), 'nested-smmuv3', testProfile);
      const off = await session.run(resolveScenario({ ...base, smmu: { ril: false } }), 'nested-smmuv3', testProfile);
      // RIL: 130 = 0b10000010 pages, NUM/SCALE covering 2 then 128: one batch, PROD write + CONS read.
      expect(unmapOf(on)?.transitions).toEqual(t({ exit: 2, user: 2, ioctl: 2, hw: 2 }));
      expect(on.invalidations.guestCommands).toBe(20 * 2);
      // No RIL: 64 + 64 without a sync, then 2 + CMD_SYNC and its CONS read: 4 traps; each of the
      // 130 commands its own HWPT_INVALIDATE (smmuv3_accel_issue_inv_cmd), chunk and sync on the pSMMU.
      expect(unmapOf(off)?.transitions).toEqual(t({ exit: 4, user: 4, ioctl: PAGES, hw: PAGES }));
      expect(off.invalidations.guestCommands).toBe(20 * PAGES);
      expect(off.invalidations.deliveredPerPsmmu).toEqual({ 'psmmu-0': 20 * PAGES });
      expect(off.counters['qemu-0']).toMatchObject({ ioctls: 20 * PAGES, syncs: 20 });
      expect(unmapOf(off)?.failed).toBe(0);
      expect(unmapOf(off)?.modeledNs.mean).toBeGreaterThan(10 * (unmapOf(on)?.modeledNs.mean ?? Infinity));
    });
  });

  it('nested-smmuv3-vcmdq: the per-page TLBIs go to the VCMDQ in three PROD stores and one CONS load', async () => {
    await withSession(fx, async (session) => {
      const on = await session.run(resolveScenario({ ...base, smmu: { ril: true } }), 'nested-smmuv3-vcmdq', testProfile);
      const off = await session.run(resolveScenario({ ...base, smmu: { ril: false } }), 'nested-smmuv3-vcmdq', testProfile);
      expect(unmapOf(on)?.transitions).toEqual(t({ direct: 2 }));
      expect(unmapOf(off)?.transitions).toEqual(t({ direct: 4 }));
      expect(off.counters['psmmu-0']).toMatchObject({ vcmdqCommands: 20 * PAGES, vevents: 0 });
    });
  });

  it('an emulated vSMMU beside the accelerated one keeps RIL (QEMU refuses ril=off there); emulated-smmuv3 alone is refused', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...base, topology: { vsmmu: 'per-psmmu', emulatedDevices: 1 }, workload: { ops: 20, granulePages: PAGES }, smmu: { ril: false } }), 'nested-smmuv3', testProfile);
      // Each vSMMU instance's IDR3 as the driver read it at probe: the accelerated one without RIL,
      // the emulated one with it (two range TLBIs, one batch).
      expect(unmapOf(run)?.transitions).toEqual(t({ exit: 4, user: 4, ioctl: PAGES, hw: PAGES }));
      expect(unmapOf(run, 'unmap@emulated')?.transitions).toEqual(t({ exit: 2, user: 2 }));
    });
    expect(() => designOf('emulated-smmuv3').check?.(resolveScenario({ smmu: { ril: false } }))).toThrow(/ril can only be disabled if accel=on/);
  });
});
