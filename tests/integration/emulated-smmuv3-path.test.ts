import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, tlbiNhVa, tlbiS12Vmall, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { SMMU_REG, vsmmuCmdqGpa, vsmmuMmioBase } from '../../services/formats/smmu/registers.js';
import { LinkClient, type Envelope__Output } from '../../services/runtime/transport/link.js';
import { HAND_GUEST_ID, configureWithoutGuest, testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const scenario = resolveScenario({ name: 'it', workload: { ops: 50 } });
const fx = useProcessTree(scenario);
const step = (k: string): number => testProfile.steps[k]?.ns ?? Number.NaN;

/** A device that owns each buffer for 3 ms and, being hostile, keeps touching it 30 ms after its unmap. */
const lingering = {
  device: { dmaRate: 5000, ringBuffers: 0, lingerMs: 30, lingerShare: 0.5 },
  workload: { ops: 60, dwellUs: 3000, gapUs: 3000 },
};

describe('the emulated-SMMUv3 path through real processes', () => {
  it('a strict unmap exits to QEMU twice (its PROD write, its CONS poll) and goes no further; a map costs no transition', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario, 'emulated-smmuv3', testProfile);
      const unmap = run.ops.find((o) => o.op === 'unmap');
      const map = run.ops.find((o) => o.op === 'map');
      expect(unmap?.count).toBe(50);
      expect(unmap?.transitions).toEqual({ exit: 2, user: 2, ioctl: 0, hw: 0, direct: 0 });
      expect(map?.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
      expect(run.hops.map((h) => `${h.from}>${h.to}`).sort()).toEqual(['guest-0>kvm', 'kvm>qemu-0', 'qemu-0>kvm', 'kvm>guest-0'].sort());
      // QEMU ran each TLBI_NH_VA and CMD_SYNC itself; nothing reached VFIO or a physical SMMU. Its
      // exits: a PROD write and a CONS read per unmap, and the driver's probe of IDR0 and IDR3.
      expect(run.counters['qemu-0']).toMatchObject({ exits: 102, commands: 50, invalidations: 50, syncs: 50, errors: 0 });
      expect(run.counters['vfio']).toMatchObject({ hwptInvalidate: 0, commands: 0 });
      expect(run.counters['psmmu-0']).toMatchObject({ commands: 0, translations: 0 });
      // Every unmap: clear the PTE, write TLBI + CMD_SYNC, trap, exit to QEMU, which runs both
      // commands and drops the IOTLB entries, read CONS (a second trap to QEMU), and free the IOVA.
      const expected = step('guest.pte_write') + 2 * step('guest.cmdq_write') + 2 * (step('exit.mmio_trap') + step('exit.to_user'))
        + 2 * step('vmm.vsmmu_cmd') + step('vmm.iotlb_invalidate') + step('guest.iova_free');
      expect(unmap?.modeledNs.min).toBe(unmap?.modeledNs.max);
      expect(unmap?.modeledNs.mean).toBeCloseTo(expected, 6);
    });
  });

  it('the emulated device translates through QEMU\'s IOTLB; strict mode serves no unmapped page from it', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ ...lingering, dma: 'strict' }), 'emulated-smmuv3', testProfile);
      const q = run.counters['qemu-0'] ?? {};
      expect(q['translations']).toBeGreaterThan(0);
      expect(q['iotlbHits']).toBeGreaterThan(0);
      expect(q['walkAccesses']).toBeGreaterThan(0);
      expect(q['useAfterUnmap']).toBeGreaterThan(0);
      expect(q['faults']).toBeGreaterThan(0);
      expect(q['staleTranslations']).toBe(0);
      // The physical SMMU's engine has no device to run under this model; the run's DMA is QEMU's.
      expect(run.counters['psmmu-0']?.['translations']).toBe(0);
      expect(run.dma).toMatchObject({ translations: q['translations'], faults: q['faults'], useAfterUnmap: q['useAfterUnmap'], staleTranslations: 0 });
      expect(run.dma.translationCostNs).toBe((q['walkAccesses'] ?? 0) * step('vmm.iommu_walk_pte'));
    });
  });

  it('lazy: invalidations are the flushes, and until a flush the device reaches unmapped pages', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario({ dma: 'lazy', workload: { ops: 300 } }), 'emulated-smmuv3', testProfile);
      // One CPU: its queue fills at unmap 256 (that unmap pays), the rest is flushed at the end.
      expect(run.ops.find((o) => o.op === 'flush')?.count).toBe(1);
      expect(run.invalidations.guestCommands).toBe(2);
      expect(run.counters['qemu-0']).toMatchObject({ invalidations: 2, syncs: 2 });
      expect(run.ops.find((o) => o.op === 'unmap')?.transitions.exit).toBeCloseTo(2 / 300, 3);
      const stale = await session.run(resolveScenario({ ...lingering, dma: 'lazy' }), 'emulated-smmuv3', testProfile);
      expect(stale.counters['qemu-0']?.['useAfterUnmap']).toBeGreaterThan(0);
      expect(stale.counters['qemu-0']?.['staleTranslations']).toBeGreaterThan(0);
    });
  });
});

describe('the emulated vSMMU\'s queue, driven by hand', () => {
  let kvm: LinkClient;

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, scenario, 'emulated-smmuv3');
    const kvmEp = eps.get('kvm');
    kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: kvmEp?.id ?? 0, peerName: 'kvm' }, kvmEp?.address ?? '', 5000, fx.security);
    await kvm.open();
  });

  afterAll(() => kvm?.close());

  function slots(at: number, cmds: SmmuCommand[]): { gpa: number; data: Buffer }[] {
    return cmds.map((c, i) => {
      const data = Buffer.alloc(CMD_SIZE);
      encodeCommand(c, data, 0);
      return { gpa: vsmmuCmdqGpa(0) + Q.index(at + i, 8) * CMD_SIZE, data };
    });
  }

  function mmio(offset: number, data: number, isWrite: boolean, ranges: { gpa: number; data: Buffer }[] = []): Promise<Envelope__Output> {
    return kvm.request({ kind: 'MMIO_WRITE', opId: 1, payload: encodeMmio({ physAddr: vsmmuMmioBase(0) + offset, data, len: 4, isWrite }), guestMemory: ranges, modeledNs: 0 });
  }

  it('completes a CMD_SYNC in QEMU, and stops at a stage-2 TLBI a stage-1-only SMMU refuses', async () => {
    const syncGpa = vsmmuCmdqGpa(0) + CMD_SIZE;
    const ok = await mmio(SMMU_REG.CMDQ_PROD, 2, true, slots(0, [tlbiNhVa({ vmid: 0, asid: 1, va: 0x5000n, tg: 1 }), cmdSync({ cs: SyncCs.IRQ, msiaddr: BigInt(syncGpa) })]));
    expect(ok.status).toBe(0);
    expect(ok.guestMemory.map((w) => Number(w.gpa))).toEqual([syncGpa]);
    const bad = await mmio(SMMU_REG.CMDQ_PROD, 4, true, slots(2, [tlbiS12Vmall({ vmid: 1 }), cmdSync({ cs: SyncCs.IRQ, msiaddr: BigInt(syncGpa + 2 * CMD_SIZE) })]));
    expect(bad.guestMemory).toHaveLength(0);
    const cons = decodeMmio((await mmio(SMMU_REG.CMDQ_CONS, 0, false)).payload)?.data ?? 0;
    expect(Q.consErr(cons)).toBe(Q.CERROR.ILL);
    expect(Q.index(cons, 8)).toBe(2);
  });
});
