import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { CMD_SIZE, SyncCs, atcInv, cfgiSte, cmdSync, encodeCommand, tlbiNhVa, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG, VSMMU_CMDQ_LOG2_ENTRIES, vsmmuCmdqGpa, vsmmuMmioBase } from '../../services/formats/smmu/registers.js';
import { LinkClient, type Envelope__Output } from '../../services/runtime/transport/link.js';
import { Control } from '../../services/controller/control-client.js';
import { HAND_GUEST_ID, configureWithoutGuest, testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * nested-smmuv3-kvm (a proposal, no posted patch): KVM takes the guest's vSMMU CMDQ_PROD write and
 * CMDQ_CONS read in the kernel, converts the invalidations as iommufd does and issues them to the
 * pSMMU with no exit to the VMM and no ioctl; what it does not take goes on to the VMM.
 */
const base = { device: { dmaRate: 0 }, workload: { ops: 20 } };
const fx = useProcessTree(resolveScenario(base));
const LOG2 = VSMMU_CMDQ_LOG2_ENTRIES;

describe('nested-smmuv3-kvm through real processes', () => {
  it('a strict unmap: exit 2 (PROD write, CONS read) taken by KVM, hw 1; the VMM sees only the probe', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(resolveScenario(base), 'nested-smmuv3-kvm', testProfile);
      const unmap = run.ops.find((o) => o.op === 'unmap');
      expect(unmap?.count).toBe(20);
      expect(unmap?.failed).toBe(0);
      expect(unmap?.transitions).toEqual({ exit: 2, user: 0, ioctl: 0, hw: 1, direct: 0 });
      expect(run.counters['kvm']).toMatchObject({ 'kvmCmdq.prodWrites': 20, 'kvmCmdq.consReads': 20, 'kvmCmdq.commandsTaken': 20, 'kvmCmdq.syncs': 20, 'kvmCmdq.handedToVmm': 0, 'kvmCmdq.errors': 0 });
      expect(run.counters['vfio']).toMatchObject({ kernelInvalidate: 20, hwptInvalidate: 0, commands: 20, chunks: 20 });
      // The driver's probe of IDR0 and IDR3 only.
      expect(run.counters['qemu-0']).toMatchObject({ exits: 2 });
      expect(run.counters['psmmu-0']).toMatchObject({ commands: 20, syncs: 20 });
      const trapped = await session.run(resolveScenario(base), 'nested-smmuv3', testProfile);
      const t = trapped.ops.find((o) => o.op === 'unmap');
      // What the short path leaves out: two returns to the VMM, the ioctl and iommufd's copy.
      expect(unmap?.modeledNs.mean ?? 0).toBeLessThan(t?.modeledNs.mean ?? 0);
    });
  });
});

describe('nested-smmuv3-kvm driven by hand: what KVM takes, what it hands on, and bad guest input', () => {
  let kvm: LinkClient;
  let qemu: Control;
  let vfio: Control;
  let kvmCtl: Control;

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, resolveScenario(base), 'nested-smmuv3-kvm');
    const kvmEp = eps.get('kvm');
    kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: kvmEp?.id ?? 0, peerName: 'kvm' }, kvmEp?.address ?? '', 5000, fx.security);
    await kvm.open();
    qemu = new Control('qemu-0', eps.get('qemu-0')?.address ?? '', fx.security);
    vfio = new Control('vfio', eps.get('vfio')?.address ?? '', fx.security);
    kvmCtl = new Control('kvm', kvmEp?.address ?? '', fx.security);
  });

  afterAll(() => {
    kvm?.close();
    qemu?.close();
    vfio?.close();
    kvmCtl?.close();
  });

  const slot = (i: number): number => vsmmuCmdqGpa(0) + Q.index(i, LOG2) * CMD_SIZE;
  const mmio = (offset: number, data: number, isWrite: boolean, cmds: SmmuCommand[] = [], at = 0): Promise<Envelope__Output> =>
    kvm.request({
      kind: isWrite ? 'MMIO_WRITE' : 'MMIO_READ', opId: 1, payload: encodeMmio({ physAddr: vsmmuMmioBase(0) + offset, data, len: 4, isWrite }), modeledNs: 0,
      guestMemory: cmds.map((c, i) => {
        const d = Buffer.alloc(CMD_SIZE);
        encodeCommand(c, d, 0);
        return { gpa: slot(at + i), data: d };
      }),
    });
  const read = async (offset: number): Promise<number> => decodeMmio((await mmio(offset, 0, false)).payload)?.data ?? 0;
  const stats = async (c: Control): Promise<Record<string, number>> => (await c.stats()).counters;
  const delta = (a: Record<string, number>, b: Record<string, number>, k: string): number => (b[k] ?? 0) - (a[k] ?? 0);

  it('takes the TLBI in the kernel, hands the PROD write on at the CFGI_STE, and the VMM consumes the rest', async () => {
    const [k0, q0, v0] = [await stats(kvmCtl), await stats(qemu), await stats(vfio)];
    const batch = [tlbiNhVa({ vmid: 0, asid: 1, va: 0x5000n, tg: 1 }), cfgiSte({ sid: 0x8 }), tlbiNhVa({ vmid: 0, asid: 1, va: 0x6000n, tg: 1 }), cmdSync({ cs: SyncCs.IRQ, msiaddr: BigInt(slot(3)) })];
    const reply = await mmio(SMMU_REG.CMDQ_PROD, 4, true, batch);
    expect(reply.status).toBe(0);
    // The VMM ran the CMD_SYNC: its MSI write comes back.
    expect(reply.guestMemory.map((w) => Number(w.gpa))).toEqual([slot(3)]);
    const [k1, q1, v1] = [await stats(kvmCtl), await stats(qemu), await stats(vfio)];
    expect(delta(k0, k1, 'kvmCmdq.commandsTaken')).toBe(1);
    expect(delta(k0, k1, 'kvmCmdq.handedToVmm')).toBe(1);
    expect(delta(v0, v1, 'kernelInvalidate')).toBe(1);
    // The VMM: the CFGI_STE itself, and the second TLBI through IOMMU_HWPT_INVALIDATE as today.
    expect(delta(q0, q1, 'cfgiSte')).toBe(1);
    expect(delta(v0, v1, 'hwptInvalidate')).toBe(1);
    // Both consumed the one queue: KVM serves CONS, where the VMM left it.
    const cons = await read(SMMU_REG.CMDQ_CONS);
    expect(Q.consErr(cons)).toBe(0);
    expect(Q.index(cons, LOG2)).toBe(4);
    expect(delta(k1, await stats(kvmCtl), 'kvmCmdq.consReads')).toBe(1);
  });

  it('a vSID with no vDEVICE: iommufd\'s EIO, and the queue halts with CERROR_ILL at that command', async () => {
    const v0 = await stats(vfio);
    const k0 = await stats(kvmCtl);
    const reply = await mmio(SMMU_REG.CMDQ_PROD, 6, true, [atcInv({ sid: 0x999, size: 0, addr: 0x5000n }), cmdSync()], 4);
    expect(reply.status).toBe(0);
    expect(delta(v0, await stats(vfio), 'errors.EIO')).toBe(1);
    expect(delta(k0, await stats(kvmCtl), 'kvmCmdq.errors')).toBe(1);
    const cons = await read(SMMU_REG.CMDQ_CONS);
    expect(Q.consErr(cons)).toBe(Q.CERROR.ILL);
    expect(Q.index(cons, LOG2)).toBe(4);
    const gerror = await read(SMMU_REG.GERROR);
    expect(gerror & GERROR_CMDQ_ERR).toBe(GERROR_CMDQ_ERR);
    // Linux's recovery: a CMD_SYNC over the refused command, then GERRORN = GERROR (to the VMM,
    // which consumes from the shared CONS).
    const resumed = await mmio(SMMU_REG.GERRORN, gerror, true, [cmdSync()], 4);
    expect(resumed.status).toBe(0);
    const after = await read(SMMU_REG.CMDQ_CONS);
    expect(Q.consErr(after)).toBe(0);
    expect(Q.index(after, LOG2)).toBe(6);
  });

  it('a command no SMMU knows: KVM hands it on, and the VMM halts the queue with CERROR_ILL, as QEMU does', async () => {
    const bad = Buffer.alloc(CMD_SIZE);
    bad.writeUInt8(0x7f, 0);
    const reply = await kvm.request({
      kind: 'MMIO_WRITE', opId: 1, payload: encodeMmio({ physAddr: vsmmuMmioBase(0) + SMMU_REG.CMDQ_PROD, data: 7, len: 4, isWrite: true }), modeledNs: 0,
      guestMemory: [{ gpa: slot(6), data: bad }],
    });
    expect(reply.status).toBe(0);
    const cons = await read(SMMU_REG.CMDQ_CONS);
    expect(Q.consErr(cons)).toBe(Q.CERROR.ILL);
    expect(Q.index(cons, LOG2)).toBe(6);
  });
});
