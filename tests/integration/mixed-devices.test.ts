import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { TransitionCounts } from '../../services/runtime/topology.js';
import type { RunResult } from '../../services/controller/results.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * One VM with an assigned device behind each of two physical SMMUs and one device its VMM
 * emulates, behind a separate emulated vSMMU instance beside the accelerated vSMMU(s).
 */
const base = { topology: { psmmus: 2, emulatedDevices: 1 }, device: { dmaRate: 0 }, workload: { ops: 90 } };
const fx = useProcessTree(resolveScenario(base));
const step = (k: string): number => testProfile.steps[k]?.ns ?? Number.NaN;
const t = (c: Partial<TransitionCounts>): TransitionCounts => ({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0, ...c });
const op = (run: RunResult, name: string): RunResult['ops'][number] | undefined => run.ops.find((o) => o.op === name);

/** A strict unmap of one page on the emulated instance: the TLBI and the sync run in QEMU and stop there; the guest reads CONS (a second trap). */
const emulatedUnmapNs = (): number =>
  step('guest.pte_write') + 2 * step('guest.cmdq_write') + 2 * (step('exit.mmio_trap') + step('exit.to_user')) + 2 * step('vmm.vsmmu_cmd') + step('vmm.iotlb_invalidate') + step('guest.iova_free');

/** A device that keeps touching each buffer 30 ms after its unmap returned, on both kinds. */
const lingering = {
  device: { dmaRate: 5000, ringBuffers: 0, lingerMs: 30, lingerShare: 0.5 },
  workload: { ops: 60, threads: 1, dwellUs: 3000, gapUs: 3000 },
};

describe('a VM with assigned and emulated devices: accelerated vSMMUs and a separate emulated one', () => {
  it('one vSMMU per pSMMU: the emulated device\'s unmap pays exits and user exits only, the assigned ones their usual path', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...base, topology: { ...base.topology, vsmmu: 'per-psmmu' } }), 'nested-smmuv3', testProfile);
      // One thread takes the three devices in turn: 30 operations each.
      expect(op(run, 'unmap')).toMatchObject({ count: 60, failed: 0, transitions: t({ exit: 2, user: 2, ioctl: 1, hw: 1 }) });
      expect(op(run, 'unmap@emulated')).toMatchObject({ count: 30, failed: 0, transitions: t({ exit: 2, user: 2 }) });
      expect(op(run, 'map@emulated')?.transitions).toEqual(t({}));
      expect(op(run, 'unmap@emulated')?.modeledNs.mean).toBeCloseTo(emulatedUnmapNs(), 6);
      // The emulated instance's commands reach no pSMMU and stay out of the fanout.
      expect(run.invalidations).toMatchObject({ guestCommands: 60, deliveredPerPsmmu: { 'psmmu-0': 30, 'psmmu-1': 30 }, fanout: 1, wasted: 0, emulatedCommands: 30 });
      expect(run.counters['vfio']).toMatchObject({ hwptInvalidate: 60 });
      // A PROD write and a CONS read per unmap, and the probe's two ID-register reads of each of the 3 instances.
      expect(run.counters['qemu-0']).toMatchObject({ exits: 186, ioctls: 60, 'emulated.commands': 30, 'emulated.invalidations': 30 });
      // The assigned devices pay what they pay without an emulated device beside them.
      const alone = await session.run(resolveScenario({ ...base, topology: { psmmus: 2, vsmmu: 'per-psmmu' } }), 'nested-smmuv3', testProfile);
      expect(op(alone, 'unmap@emulated')).toBeUndefined();
      expect(alone.invalidations.emulatedCommands).toBeUndefined();
      expect(op(run, 'unmap')?.modeledNs.mean).toBe(op(alone, 'unmap')?.modeledNs.mean);
      expect(op(run, 'unmap@emulated')?.modeledNs.mean).toBeLessThan(op(run, 'unmap')?.modeledNs.mean ?? 0);
    });
  });

  it('a single vSMMU: its broadcast reaches both pSMMUs while the emulated instance\'s commands stay in QEMU', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...base, topology: { ...base.topology, vsmmu: 'single' } }), 'nested-smmuv3', testProfile);
      expect(op(run, 'unmap')?.transitions).toEqual(t({ exit: 2, user: 2, ioctl: 2, hw: 2 }));
      expect(op(run, 'unmap@emulated')?.transitions).toEqual(t({ exit: 2, user: 2 }));
      expect(op(run, 'unmap@emulated')?.modeledNs.mean).toBeCloseTo(emulatedUnmapNs(), 6);
      expect(run.invalidations).toMatchObject({ guestCommands: 60, deliveredPerPsmmu: { 'psmmu-0': 60, 'psmmu-1': 60 }, fanout: 2, wasted: 60, emulatedCommands: 30 });
    });
  });

  it('under nested-smmuv3-vcmdq the assigned devices keep their VCMDQs, and the emulated one traps to QEMU', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...base, topology: { ...base.topology, vsmmu: 'per-psmmu' } }), 'nested-smmuv3-vcmdq', testProfile);
      expect(op(run, 'unmap')?.transitions).toEqual(t({ direct: 2 }));
      expect(op(run, 'unmap@emulated')?.transitions).toEqual(t({ exit: 2, user: 2 }));
      expect(run.invalidations).toMatchObject({ guestCommands: 60, fanout: 1, emulatedCommands: 30 });
    });
  });

  it('strict: a lingering device gets no stale translation on either kind; lazy: the emulated one does until the flush', async () => {
    await withSession(fx, async (session) => {
      const strict = await session.run(resolveScenario({ ...lingering, topology: { ...base.topology, vsmmu: 'per-psmmu' } }), 'nested-smmuv3', testProfile);
      const qemu = strict.counters['qemu-0'] ?? {};
      const psmmus = ['psmmu-0', 'psmmu-1'].map((p) => strict.counters[p] ?? {});
      // Both kinds translated and reached buffers after their unmap: the emulated device through
      // QEMU's IOTLB, the assigned ones through their pSMMU.
      for (const c of [qemu, ...psmmus]) {
        expect(c['translations']).toBeGreaterThan(0);
        expect(c['useAfterUnmap']).toBeGreaterThan(0);
        expect(c['staleTranslations']).toBe(0);
      }
      const sum = (k: string): number => [qemu, ...psmmus].reduce((n, c) => n + (c[k] ?? 0), 0);
      expect(strict.dma).toMatchObject({ translations: sum('translations'), useAfterUnmap: sum('useAfterUnmap'), staleTranslations: 0 });
      const lazy = await session.run(resolveScenario({ ...lingering, dma: 'lazy', topology: { ...base.topology, vsmmu: 'per-psmmu' } }), 'nested-smmuv3', testProfile);
      expect(lazy.counters['qemu-0']?.['staleTranslations']).toBeGreaterThan(0);
      expect(lazy.dma.staleTranslations).toBeGreaterThan(0);
    });
  });
});
