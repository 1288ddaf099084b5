import { describe, expect, it } from 'vitest';
import { designOf } from '../../services/designs/registry.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { RunResult } from '../../services/controller/results.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';
import { thrown } from '../helpers/thrown.js';

/**
 * The bare-metal reference, --model host, through real processes in every DMA mode: the guest
 * process plays the host kernel, which drives the pSMMU's main command queue itself (a `hw`
 * transition per PROD write); KVM, the VMM and VFIO see nothing.
 */
const base = { device: { dmaRate: 0 }, workload: { ops: 40 } };
const fx = useProcessTree(resolveScenario(base));
const op = (run: RunResult, name: string): RunResult['ops'][number] | undefined => run.ops.find((o) => o.op === name);
const t = (c: Partial<Record<'exit' | 'user' | 'ioctl' | 'hw' | 'direct', number>>): Record<string, number> => ({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0, ...c });
const step = (name: string): number => testProfile.steps[name]?.ns ?? 0;

/** Nothing reached KVM, the VMM or VFIO. */
function onlyHardware(run: RunResult): void {
  expect(run.hops.map((h) => `${h.from}>${h.to}`).sort()).toEqual(['guest-0>psmmu-0', 'psmmu-0>guest-0']);
  expect(run.counters['kvm']).toMatchObject({ exits: 0 });
  expect(run.counters['qemu-0']).toMatchObject({ exits: 0 });
  expect(run.counters['vfio']).toMatchObject({ hwptInvalidate: 0, commands: 0 });
}

describe('--model host: Linux on bare metal, the reference every vIOMMU is read against', () => {
  it('strict: a map pays nothing, an unmap one PROD write to the pSMMU (hw) and its sync, waited for by MSI', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...base, dma: 'strict' }), 'host', testProfile);
      expect(op(run, 'map')?.transitions).toEqual(t({}));
      expect(op(run, 'unmap')).toMatchObject({ count: 40, failed: 0, transitions: t({ hw: 1 }) });
      onlyHardware(run);
      expect(run.counters['psmmu-0']).toMatchObject({ submissions: 40, commands: 40, syncs: 40, errors: 0 });
      expect(run.invalidations).toMatchObject({ guestCommands: 40, deliveredPerPsmmu: { 'psmmu-0': 40 }, fanout: 1, wasted: 0 });
      // PTE clear, TLBI + CMD_SYNC written by the host driver, executed, synced, IOVA freed.
      const expected = step('guest.pte_write') + 2 * step('kernel.cmdq_insert') + step('smmu.cmd_exec') + step('smmu.sync') + step('guest.iova_free');
      expect(op(run, 'unmap')?.modeledNs.mean).toBeCloseTo(expected, 6);
    });
  });

  it('lazy: unmaps queue their IOVAs; the flush is one TLBI_NH_ASID + CMD_SYNC on the pSMMU', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...base, dma: 'lazy' }), 'host', testProfile);
      expect(op(run, 'unmap')?.transitions).toEqual(t({}));
      expect(op(run, 'flush')).toMatchObject({ count: 1, transitions: t({ hw: 1 }) });
      onlyHardware(run);
    });
  });

  it('static and bounce: no per-I/O invalidation', async () => {
    await withSession(fx, async (session) => {
      for (const dma of ['static', 'bounce'] as const) {
        const run = await session.run(resolveScenario({ ...base, dma }), 'host', testProfile);
        expect(op(run, 'unmap')?.transitions, dma).toEqual(t({}));
        expect(op(run, 'unmap')?.failed, dma).toBe(0);
        expect(op(run, 'map')?.failed, dma).toBe(0);
      }
    });
  });

  it('a lingering device gets no stale translation in strict mode; with ATS the unmap pays a second hw and the ATC round trip', async () => {
    await withSession(fx, async (session) => {
      const lingering = { device: { dmaRate: 3000, ringBuffers: 0, lingerMs: 20, lingerShare: 0.5 }, workload: { ops: 40, dwellUs: 2000, gapUs: 2000 } };
      const strict = await session.run(resolveScenario({ ...lingering, dma: 'strict' }), 'host', testProfile);
      expect(strict.dma.useAfterUnmap).toBeGreaterThan(0);
      expect(strict.dma.staleTranslations).toBe(0);
      const ats = await session.run(resolveScenario({ ...base, device: { dmaRate: 0, ats: true } }), 'host', testProfile);
      expect(op(ats, 'unmap')?.transitions).toEqual(t({ hw: 2 }));
      expect(ats.counters['psmmu-0']).toMatchObject({ atcSyncs: 40 });
      const plain = await session.run(resolveScenario(base), 'host', testProfile);
      expect((op(ats, 'unmap')?.modeledNs.mean ?? 0) - (op(plain, 'unmap')?.modeledNs.mean ?? 0)).toBeCloseTo(2 * step('kernel.cmdq_insert') + step('smmu.cmd_exec') + step('smmu.sync') + step('smmu.atc_inv'), 6);
    });
  });

  it('is refused with more than one VM, a migration or virtio-mem (there is no VM)', () => {
    const check = designOf('host').check;
    expect(thrown(() => check?.(resolveScenario({ topology: { vms: 2, devicesPerPsmmu: 2 } }))).code).toBe('E_SCENARIO_FIELD');
    expect(thrown(() => check?.(resolveScenario({ workload: { migration: { atOp: 4 } } }))).code).toBe('E_SCENARIO_FIELD');
    expect(thrown(() => check?.(resolveScenario({ workload: { virtioMem: { everyOps: 4 } } }))).code).toBe('E_SCENARIO_FIELD');
  });
});
