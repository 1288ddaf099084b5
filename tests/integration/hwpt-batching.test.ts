import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { designOf } from '../../services/designs/registry.js';
import { CMD_SIZE, SyncCs, atcInv, cmdSync, encodeCommand, tlbiNhVa, tlbiNhVaRange, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG, vsmmuCmdqGpa, vsmmuMmioBase } from '../../services/formats/smmu/registers.js';
import { LinkClient, type Envelope__Output } from '../../services/runtime/transport/link.js';
import { Control } from '../../services/controller/control-client.js';
import { HAND_GUEST_ID, configureWithoutGuest, testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/** 33 pages: Linux covers them with two range TLBI_NH_VA commands (1 page, then 32). */
const PAGES = 33;
const OPS = 30;
const base = { workload: { ops: OPS, granulePages: PAGES } };
const fx = useProcessTree(resolveScenario(base));
const step = (k: string): number => testProfile.steps[k]?.ns ?? Number.NaN;

describe('VMM batching of IOMMU_HWPT_INVALIDATE (vmm.hwptInvalidate)', () => {
  it('per-command pays one ioctl per guest command; per-batch one per CMDQ_PROD write', async () => {
    expect(tlbiNhVaRange(1, 0x1_0000_0000, PAGES)).toHaveLength(2);
    await withSession(fx, async (session) => {
      const perCommand = await session.run(resolveScenario({ ...base, vmm: { hwptInvalidate: 'per-command' } }), 'nested-smmuv3', testProfile);
      const a = perCommand.ops.find((o) => o.op === 'unmap');
      expect(a?.transitions).toEqual({ exit: 2, user: 2, ioctl: 2, hw: 2, direct: 0 });
      expect(perCommand.counters['qemu-0']).toMatchObject({ commands: 2 * OPS, ioctls: 2 * OPS });
      expect(perCommand.counters['vfio']).toMatchObject({ hwptInvalidate: 2 * OPS, chunks: 2 * OPS, commands: 2 * OPS });

      const perBatch = await session.run(resolveScenario({ ...base, vmm: { hwptInvalidate: 'per-batch' } }), 'nested-smmuv3', testProfile);
      const b = perBatch.ops.find((o) => o.op === 'unmap');
      expect(b?.transitions).toEqual({ exit: 2, user: 2, ioctl: 1, hw: 1, direct: 0 });
      expect(perBatch.counters['qemu-0']).toMatchObject({ commands: 2 * OPS, ioctls: OPS });
      // The kernel still converts both commands, and issues them as one chunk with its CMD_SYNC.
      expect(perBatch.counters['vfio']).toMatchObject({ hwptInvalidate: OPS, chunks: OPS, commands: 2 * OPS });
      expect(perBatch.counters['psmmu-0']).toMatchObject({ commands: 2 * OPS, syncs: OPS });
      // Saved per unmap: one syscall, and one kernel CMD_SYNC inserted and completed.
      expect((a?.modeledNs.mean ?? 0) - (b?.modeledNs.mean ?? 0)).toBeCloseTo(step('ioctl.syscall') + step('kernel.cmdq_insert') + step('smmu.sync'), 6);

      // queue (the v2 proposal): the same one ioctl per PROD write, handing over the queue's
      // location; the kernel reads both commands from guest RAM (kernel.hwpt_queue_entry each)
      // instead of copying them out of an entry array (kernel.hwpt_cmd each).
      const queue = await session.run(resolveScenario({ ...base, vmm: { hwptInvalidate: 'queue' } }), 'nested-smmuv3', testProfile);
      const c = queue.ops.find((o) => o.op === 'unmap');
      expect(c?.transitions).toEqual({ exit: 2, user: 2, ioctl: 1, hw: 1, direct: 0 });
      expect(c?.failed).toBe(0);
      expect(queue.counters['qemu-0']).toMatchObject({ commands: 2 * OPS, ioctls: OPS });
      expect(queue.counters['vfio']).toMatchObject({ hwptInvalidate: OPS, queueInvalidate: OPS, chunks: OPS, commands: 2 * OPS });
      expect(queue.counters['psmmu-0']).toMatchObject({ commands: 2 * OPS, syncs: OPS });
      expect((b?.modeledNs.mean ?? 0) - (c?.modeledNs.mean ?? 0)).toBeCloseTo(2 * (step('kernel.hwpt_cmd') - step('kernel.hwpt_queue_entry')), 6);
    });
  });

  it('queue needs one vIOMMU per vSMMU: a single vSMMU over two pSMMUs is refused with the fix', () => {
    const check = (topology: object): void => designOf('nested-smmuv3').check?.(resolveScenario({ ...base, vmm: { hwptInvalidate: 'queue' }, topology }));
    expect(() => check({ psmmus: 2, vsmmu: 'single' })).toThrow(/vmm.hwptInvalidate: queue .*set topology.vsmmu per-psmmu/);
    expect(() => check({ psmmus: 2, vsmmu: 'per-psmmu' })).not.toThrow();
  });
});

describe('a per-batch HWPT_INVALIDATE the kernel fails, driven by hand', () => {
  let kvm: LinkClient;
  let qemu: Control;
  let psmmu: Control;

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, resolveScenario({ ...base, vmm: { hwptInvalidate: 'per-batch' } }), 'nested-smmuv3');
    const kvmEp = eps.get('kvm');
    kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: kvmEp?.id ?? 0, peerName: 'kvm' }, kvmEp?.address ?? '', 5000, fx.security);
    await kvm.open();
    qemu = new Control('qemu-0', eps.get('qemu-0')?.address ?? '', fx.security);
    psmmu = new Control('psmmu-0', eps.get('psmmu-0')?.address ?? '', fx.security);
  });

  afterAll(() => {
    kvm?.close();
    qemu?.close();
    psmmu?.close();
  });

  const slot = (i: number): number => vsmmuCmdqGpa(0) + Q.index(i, 8) * CMD_SIZE;

  function slots(at: number, cmds: SmmuCommand[]): { gpa: number; data: Buffer }[] {
    return cmds.map((c, i) => {
      const data = Buffer.alloc(CMD_SIZE);
      encodeCommand(c, data, 0);
      return { gpa: slot(at + i), data };
    });
  }

  function mmio(offset: number, data: number, isWrite: boolean, ranges: { gpa: number; data: Buffer }[] = []): Promise<Envelope__Output> {
    return kvm.request({ kind: 'MMIO_WRITE', opId: 1, payload: encodeMmio({ physAddr: vsmmuMmioBase(0) + offset, data, len: 4, isWrite }), guestMemory: ranges, modeledNs: 0 });
  }

  async function counter(c: Control, name: string): Promise<number> {
    return (await c.stats()).counters[name] ?? 0;
  }

  it('halts the guest queue at the entry the kernel reports (entry_num), and resumes after recovery', async () => {
    const ioctls = await counter(qemu, 'ioctls');
    const executed = await counter(psmmu, 'commands');
    // The ATC_INV names a vSID with no vDEVICE: the kernel refuses entry 1 of the batch.
    const batch = [tlbiNhVa({ vmid: 0, asid: 1, va: 0x5000n, tg: 1 }), atcInv({ sid: 0x999, size: 0, addr: 0x5000n }), tlbiNhVa({ vmid: 0, asid: 1, va: 0x6000n, tg: 1 }), cmdSync({ cs: SyncCs.IRQ, msiaddr: BigInt(slot(3)) })];
    const reply = await mmio(SMMU_REG.CMDQ_PROD, 4, true, slots(0, batch));
    expect(reply.status).toBe(0);
    expect(reply.guestMemory).toHaveLength(0); // the sync never ran
    expect(await counter(qemu, 'ioctls')).toBe(ioctls + 1);
    // The kernel had converted entry 0 but issues nothing once a conversion fails.
    expect(await counter(psmmu, 'commands')).toBe(executed);
    const cons = decodeMmio((await mmio(SMMU_REG.CMDQ_CONS, 0, false)).payload)?.data ?? 0;
    expect(Q.consErr(cons)).toBe(Q.CERROR.ILL);
    expect(Q.index(cons, 8)).toBe(1);
    const gerror = decodeMmio((await mmio(SMMU_REG.GERROR, 0, false)).payload)?.data ?? 0;
    expect(gerror & GERROR_CMDQ_ERR).toBe(GERROR_CMDQ_ERR);

    // Linux: a CMD_SYNC over the refused command, then GERRORN = GERROR; the rest runs as a batch of one.
    const resumed = await mmio(SMMU_REG.GERRORN, gerror, true, slots(1, [cmdSync()]));
    expect(resumed.guestMemory.map((w) => Number(w.gpa))).toEqual([slot(3)]);
    expect(await counter(qemu, 'ioctls')).toBe(ioctls + 2);
    expect(await counter(psmmu, 'commands')).toBe(executed + 1);
    const after = decodeMmio((await mmio(SMMU_REG.CMDQ_CONS, 0, false)).payload)?.data ?? 0;
    expect(Q.consErr(after)).toBe(0);
    expect(Q.index(after, 8)).toBe(4);
  });
});

describe('a queue-mode HWPT_INVALIDATE the kernel fails, driven by hand', () => {
  let kvm: LinkClient;
  let vfio: Control;
  let psmmu: Control;

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, resolveScenario({ ...base, vmm: { hwptInvalidate: 'queue' } }), 'nested-smmuv3');
    const kvmEp = eps.get('kvm');
    kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: kvmEp?.id ?? 0, peerName: 'kvm' }, kvmEp?.address ?? '', 5000, fx.security);
    await kvm.open();
    vfio = new Control('vfio', eps.get('vfio')?.address ?? '', fx.security);
    psmmu = new Control('psmmu-0', eps.get('psmmu-0')?.address ?? '', fx.security);
  });

  afterAll(() => {
    kvm?.close();
    vfio?.close();
    psmmu?.close();
  });

  const slot = (i: number): number => vsmmuCmdqGpa(0) + Q.index(i, 8) * CMD_SIZE;
  const mmio = (offset: number, data: number, isWrite: boolean, cmds: SmmuCommand[] = [], at = 0): Promise<Envelope__Output> =>
    kvm.request({
      kind: 'MMIO_WRITE', opId: 1, payload: encodeMmio({ physAddr: vsmmuMmioBase(0) + offset, data, len: 4, isWrite }), modeledNs: 0,
      guestMemory: cmds.map((c, i) => {
        const d = Buffer.alloc(CMD_SIZE);
        encodeCommand(c, d, 0);
        return { gpa: slot(at + i), data: d };
      }),
    });

  it('a vSID with no vDEVICE: the kernel refuses (EIO) at that entry, nothing is issued, the guest queue halts with CERROR_ILL there', async () => {
    const stats = async (c: Control): Promise<Record<string, number>> => (await c.stats()).counters;
    const before = await stats(vfio);
    const executed = (await stats(psmmu))['commands'] ?? 0;
    const batch = [tlbiNhVa({ vmid: 0, asid: 1, va: 0x5000n, tg: 1 }), atcInv({ sid: 0x999, size: 0, addr: 0x5000n }), cmdSync()];
    const reply = await mmio(SMMU_REG.CMDQ_PROD, 3, true, batch);
    expect(reply.status).toBe(0);
    const after = await stats(vfio);
    expect((after['queueInvalidate'] ?? 0) - (before['queueInvalidate'] ?? 0)).toBe(1);
    expect((after['errors.EIO'] ?? 0) - (before['errors.EIO'] ?? 0)).toBe(1);
    expect((await stats(psmmu))['commands']).toBe(executed);
    const cons = decodeMmio((await mmio(SMMU_REG.CMDQ_CONS, 0, false)).payload)?.data ?? 0;
    expect(Q.consErr(cons)).toBe(Q.CERROR.ILL);
    expect(Q.index(cons, 8)).toBe(1);
  });
});
