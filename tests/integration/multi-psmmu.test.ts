import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/** One VM whose devices sit behind three physical SMMUs, with one vSMMU for all or one per pSMMU. */
const base = { topology: { psmmus: 3 }, workload: { ops: 90, threads: 3 } };
const fx = useProcessTree(resolveScenario(base));

describe('a VM behind three physical SMMUs', () => {
  it('a single vSMMU sends each invalidation to every pSMMU, one ioctl after another', async () => {
    // One vCPU: with several, the VMM's lock queues them in modeled time and the difference below
    // would include the wait (the queueing tests cover that).
    const oneCpu = { ops: 90, threads: 1 };
    await withSession(fx, async (session) => {
    const run = await session.run(resolveScenario({ ...base, topology: { psmmus: 3, vsmmu: 'single' }, workload: oneCpu }), 'nested-smmuv3', testProfile);
    const unmap = run.ops.find((o) => o.op === 'unmap');
    expect(unmap?.transitions).toEqual({ exit: 2, user: 2, ioctl: 3, hw: 3, direct: 0 });
    expect(run.invalidations).toEqual({ guestCommands: 90, guestCommandsFailed: 0, deliveredPerPsmmu: { 'psmmu-0': 90, 'psmmu-1': 90, 'psmmu-2': 90 }, fanout: 3, wasted: 180, hostStage2: { unmaps: 0, deliveredPerPsmmu: { 'psmmu-0': 0, 'psmmu-1': 0, 'psmmu-2': 0 } } });
    // The three ioctls are sequential: modeled time pays each of them.
    const perIoctl = ['ioctl.syscall', 'kernel.hwpt_cmd', 'smmu.cmd_exec', 'smmu.sync'].reduce((n, k) => n + (testProfile.steps[k]?.ns ?? 0), 0)
      + 2 * (testProfile.steps['kernel.cmdq_insert']?.ns ?? 0);
    const single = await session.run(resolveScenario({ ...base, topology: { psmmus: 3, vsmmu: 'per-psmmu' }, workload: oneCpu }), 'nested-smmuv3', testProfile);
    const one = single.ops.find((o) => o.op === 'unmap');
    expect((unmap?.modeledNs.mean ?? 0) - (one?.modeledNs.mean ?? 0)).toBe(2 * perIoctl);
    });
  });

  it('a single vSMMU with dispatch lookup sends each invalidation only where its ASID is used', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...base, topology: { psmmus: 3, vsmmu: 'single', dispatch: 'lookup' } }), 'nested-smmuv3', testProfile);
      // The three vCPUs reach the one vSMMU queue together: one PROD write publishes the three
      // lists (arm_smmu_cmdq_issue_cmdlist's gathering), and each vCPU reads CONS for its own sync.
      expect(run.ops.find((o) => o.op === 'unmap')?.transitions).toEqual({ exit: 1.333, user: 1.333, ioctl: 1, hw: 1, direct: 0 });
      // Each device's domain has its own ASID, behind one pSMMU: fan-out 1, nothing wasted.
      expect(run.invalidations).toEqual({ guestCommands: 90, guestCommandsFailed: 0, deliveredPerPsmmu: { 'psmmu-0': 30, 'psmmu-1': 30, 'psmmu-2': 30 }, fanout: 1, wasted: 0, hostStage2: { unmaps: 0, deliveredPerPsmmu: { 'psmmu-0': 0, 'psmmu-1': 0, 'psmmu-2': 0 } } });
      expect(run.counters['qemu-0']).toMatchObject({ lookups: 90, lookupMisses: 0, ioctls: 90 });
      // The lookup costs its step, and saves two of the three ioctls a broadcast pays.
      const broadcast = await session.run(resolveScenario({ ...base, topology: { psmmus: 3, vsmmu: 'single' } }), 'nested-smmuv3', testProfile);
      expect(run.ops.find((o) => o.op === 'unmap')?.modeledNs.mean).toBeLessThan(broadcast.ops.find((o) => o.op === 'unmap')?.modeledNs.mean ?? 0);
    });
  });

  it('dispatch lookup routes SVA munmaps by the process ASID in the CD table (regression: every one went to every pSMMU)', async () => {
    // The SVA process of each device has its own ASID, in the CD at its PASID (not the DMA domain's
    // CD the VMM used to read alone): the lookup missed every time and fell back to a broadcast.
    await withSession(fx, async (session) => {
      const s = resolveScenario({ ...base, topology: { psmmus: 3, vsmmu: 'single', dispatch: 'lookup' }, workload: { kind: 'sva-unmap-storm', ops: 90, threads: 3 } });
      for (const model of ['nested-smmuv3', 'nested-smmuv3-vcmdq'] as const) {
        const run = await session.run(s, model, testProfile);
        expect(run.ops.find((o) => o.op === 'invalidate')?.count, model).toBe(90);
        expect(run.invalidations.deliveredPerPsmmu, model).toEqual({ 'psmmu-0': 30, 'psmmu-1': 30, 'psmmu-2': 30 });
        expect(run.invalidations.fanout, model).toBe(1);
        expect(run.invalidations.wasted, model).toBe(0);
      }
      const trapped = await session.run(s, 'nested-smmuv3', testProfile);
      expect(trapped.counters['qemu-0']).toMatchObject({ lookups: 90, lookupMisses: 0, ioctls: 90 });
    });
  });

  it('a VMID per vSMMU keeps every invalidation where it belongs (no stale translation with a lingering device)', async () => {
    await withSession(fx, async (session) => {
      const s = resolveScenario({
        ...base,
        topology: { psmmus: 3, vsmmu: 'per-psmmu', vmid: 'per-vsmmu' },
        device: { dmaRate: 2000, lingerMs: 20, lingerShare: 0.3, ringBuffers: 0 },
        workload: { ops: 90, threads: 3, dwellUs: 500 },
      });
      for (const model of ['nested-smmuv3', 'nested-smmuv3-vcmdq'] as const) {
        const run = await session.run(s, model, testProfile);
        expect(run.invalidations.fanout, model).toBe(1);
        expect(run.invalidations.wasted, model).toBe(0);
        expect(run.dma.staleTranslations, model).toBe(0);
        expect(run.dma.translations, model).toBeGreaterThan(0);
      }
    });
  });

  it('one vSMMU per pSMMU reaches only the pSMMU of the device, and can use its VCMDQs', async () => {
    await withSession(fx, async (session) => {
    const s = resolveScenario({ ...base, topology: { psmmus: 3, vsmmu: 'per-psmmu' } });
    const run = await session.run(s, 'nested-smmuv3', testProfile);
    expect(run.invalidations).toEqual({ guestCommands: 90, guestCommandsFailed: 0, deliveredPerPsmmu: { 'psmmu-0': 30, 'psmmu-1': 30, 'psmmu-2': 30 }, fanout: 1, wasted: 0, hostStage2: { unmaps: 0, deliveredPerPsmmu: { 'psmmu-0': 0, 'psmmu-1': 0, 'psmmu-2': 0 } } });
    const vcmdq = await session.run(s, 'nested-smmuv3-vcmdq', testProfile);
    expect(vcmdq.ops.find((o) => o.op === 'unmap')?.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 2 });
    expect(vcmdq.invalidations.fanout).toBe(1);
    });
  });

  it('a single vSMMU in front of several pSMMUs gets no VCMDQ: the vcmdq model falls back to the trapped path', async () => {
    await withSession(fx, async (session) => {
    const run = await session.run(resolveScenario({ ...base, topology: { psmmus: 3, vsmmu: 'single' } }), 'nested-smmuv3-vcmdq', testProfile);
    // (three vCPUs in step: one PROD write for the three lists, a CONS read each)
    expect(run.ops.find((o) => o.op === 'unmap')?.transitions).toEqual({ exit: 1.333, user: 1.333, ioctl: 3, hw: 3, direct: 0 });
    });
  });
});
