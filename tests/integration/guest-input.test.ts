/**
 * Bad guest input through real processes, answered as the hardware and the kernel answer it and
 * never by a process that dies: a CMD_SYNC with CS=3 stops the vSMMU's queue at that command
 * (CERROR_ILL), and IOMMU_HWPT_INVALIDATE calls that break iommufd's rules get the kernel's errno
 * with entry_num where the kernel leaves it. Two VMs share the pSMMU; VM 0's side is driven by
 * hand (the test is guest-0 towards kvm, and qemu-0 towards vfio), and nothing it names reaches VM 1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Errno } from '../../services/runtime/errors.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { HWPT_INVALIDATE_MAX_ENTRIES, HWPT_INVALIDATE_SIZE, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, decodeHwptInvalidate, encodeHwptInvalidate, type HwptInvalidate } from '../../services/formats/iommufd.js';

import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { CMD_SIZE, SyncCs, atcInv, cmdSync, encodeCommand, tlbiNhAll, tlbiNhVa, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG, vsmmuCmdqGpa, vsmmuMmioBase } from '../../services/formats/smmu/registers.js';
import { LinkClient, type Envelope__Output } from '../../services/runtime/transport/link.js';
import { Control } from '../../services/controller/control-client.js';
import { devices } from '../../services/controller/session.js';
import { HAND_GUEST_ID, configureWithoutGuest, testProfile, useProcessTree, withSession } from '../helpers/tree.js';
import { iommufdLayoutOf } from '../../services/designs/registry.js';

/** Two VMs, a device each behind the one pSMMU. */
const scenario = resolveScenario({ name: 'guest-input', topology: { psmmus: 1, vms: 2, devicesPerPsmmu: 2 } });
const fx = useProcessTree(scenario);
const LOG2 = 8;

let kvm: LinkClient;
let vfio: LinkClient;
let psmmu: Control;
let vfioControl: Control;
/** vIOMMU ids of VM 0 and VM 1 (their iommufd objects, as the VMM and the kernel number them). */
let viommu0 = 0;
let viommu1 = 0;

beforeAll(async () => {
  // A real run first: the guests create their RAM, which the pSMMU reads (context descriptors).
  await withSession(fx, async (session) => {
    const run = await session.run(resolveScenario({ ...scenario, workload: { ops: 20 } }), 'nested-smmuv3', testProfile);
    expect(run.invalidations.guestCommandsFailed).toBe(0);
  });
  const eps = await configureWithoutGuest(fx, scenario, 'nested-smmuv3');
  const at = (name: string): { id: number; address: string } => eps.get(name) ?? { id: 0, address: '' };
  kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: at('kvm').id, peerName: 'kvm' }, at('kvm').address, 5000, fx.security);
  // The test speaks for VM 0's VMM: vfio knows the caller by the endpoint id on the request's hop.
  vfio = new LinkClient({ selfId: at('qemu-0').id, selfName: 'qemu-0', peerId: at('vfio').id, peerName: 'vfio' }, at('vfio').address, 5000, fx.security);
  await Promise.all([kvm.open(), vfio.open()]);
  psmmu = new Control('psmmu-0', at('psmmu-0').address, fx.security);
  vfioControl = new Control('vfio', at('vfio').address, fx.security);
  const layout = iommufdLayoutOf({ model: 'nested-smmuv3', devices: devices(scenario), vmids: [1, 2], vsmmu: 'single', vmidPolicy: 'per-s2-parent' } as unknown as Topology__Output);
  viommu0 = layout.viommus.find((v) => v.vm === 0)?.id ?? -1;
  viommu1 = layout.viommus.find((v) => v.vm === 1)?.id ?? -1;
});

afterAll(() => {
  kvm?.close();
  vfio?.close();
  psmmu?.close();
  vfioControl?.close();
});

const counter = async (c: Control, name: string): Promise<number> => (await c.stats()).counters[name] ?? 0;

function encode(cmds: readonly SmmuCommand[]): Buffer {
  const b = Buffer.alloc(cmds.length * CMD_SIZE);
  cmds.forEach((c, i) => encodeCommand(c, b, i * CMD_SIZE));
  return b;
}

describe('CMD_SYNC with CS=3 on the trapped vSMMU queue', () => {
  let prod = 0;
  const slotGpa = (p: number): number => vsmmuCmdqGpa(0) + Q.index(p, LOG2) * CMD_SIZE;
  const mmio = (offset: number, data: number, isWrite: boolean, ranges: { gpa: number; data: Buffer }[] = []): Promise<Envelope__Output> =>
    kvm.request({ kind: 'MMIO_WRITE', opId: 1, payload: encodeMmio({ physAddr: vsmmuMmioBase(0) + offset, data, len: 4, isWrite }), guestMemory: ranges, modeledNs: 0 });
  const read = async (offset: number): Promise<number> => decodeMmio((await mmio(offset, 0, false)).payload)?.data ?? 0;

  it('stops the queue at that command with CERROR_ILL: what came before ran, what follows waits for the recovery', async () => {
    const executed = await counter(psmmu, 'commands');
    const cmds: SmmuCommand[] = [tlbiNhVa({ vmid: 0, asid: 1, va: 0x5000n, tg: 1 }), cmdSync({ cs: 3 }), tlbiNhVa({ vmid: 0, asid: 1, va: 0x6000n, tg: 1 })];
    const first = prod;
    const syncSlot = slotGpa(Q.inc(first, LOG2, 3));
    cmds.push(cmdSync({ cs: SyncCs.IRQ, msiaddr: BigInt(syncSlot) }));
    const bytes = encode(cmds);
    prod = Q.inc(prod, LOG2, cmds.length);
    const reply = await mmio(SMMU_REG.CMDQ_PROD, prod, true, [{ gpa: slotGpa(first), data: bytes }]);
    // The register write itself succeeds; the queue reports the error the architectural way.
    expect(reply.status).toBe(0);
    expect(reply.guestMemory).toHaveLength(0); // the guest's sync never completed
    const cons = await read(SMMU_REG.CMDQ_CONS);
    expect(Q.consErr(cons)).toBe(Q.CERROR.ILL);
    expect(slotGpa(cons)).toBe(slotGpa(Q.inc(first, LOG2, 1)));
    expect((await read(SMMU_REG.GERROR)) & GERROR_CMDQ_ERR).toBe(GERROR_CMDQ_ERR);
    expect(await counter(psmmu, 'commands')).toBe(executed + 1);
    // Still stopped: another PROD write runs nothing until the error is acknowledged.
    expect((await mmio(SMMU_REG.CMDQ_PROD, prod, true)).guestMemory).toHaveLength(0);
    expect(await counter(psmmu, 'commands')).toBe(executed + 1);

    // Linux: a legal CMD_SYNC over the refused slot, then GERRORN = GERROR.
    const sync = encode([cmdSync()]);
    const gerror = await read(SMMU_REG.GERROR);
    const resumed = await mmio(SMMU_REG.GERRORN, gerror, true, [{ gpa: slotGpa(Q.inc(first, LOG2, 1)), data: sync }]);
    expect(resumed.guestMemory.map((w) => Number(w.gpa))).toEqual([syncSlot]);
    expect(await counter(psmmu, 'commands')).toBe(executed + 2);
    const after = await read(SMMU_REG.CMDQ_CONS);
    expect(Q.consErr(after)).toBe(0);
    expect(Q.ptr(after, LOG2)).toBe(Q.ptr(prod, LOG2));
  });
});

describe('IOMMU_HWPT_INVALIDATE that breaks the rules, sent to the real vfio process', () => {
  const head = (over: Partial<HwptInvalidate> = {}): HwptInvalidate => ({
    size: HWPT_INVALIDATE_SIZE, hwptId: viommu0, dataUptr: 0x7f00_0000_0000, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: CMD_SIZE, entryNum: 0, reserved: 0, ...over,
  });
  /** One ioctl: its status, entry_num as the kernel left it, and what the pSMMU executed for it. */
  const ioctl = async (h: HwptInvalidate, entries: Buffer = Buffer.alloc(0)): Promise<{ status: number; entryNum: number | undefined; executed: number }> => {
    const before = await counter(psmmu, 'commands');
    const reply = await vfio.request({ kind: 'HWPT_INVALIDATE', opId: 2, payload: encodeHwptInvalidate(h, entries), modeledNs: 0 });
    return { status: reply.status, entryNum: decodeHwptInvalidate(reply.payload)?.head.entryNum, executed: (await counter(psmmu, 'commands')) - before };
  };
  const tlbi = tlbiNhVa({ vmid: 0, asid: 1, va: 0x7000n, tg: 1 });

  it('a non-zero __reserved: EOPNOTSUPP before anything else', async () => {
    expect(await ioctl(head({ reserved: 1, entryNum: 1, dataUptr: 0 }), encode([tlbi]))).toEqual({ status: -Errno.EOPNOTSUPP, entryNum: 0, executed: 0 });
  });

  it.each([
    ['a null data pointer', { dataUptr: 0 }],
    ['entry_len 0', { entryLen: 0 }],
    ['entry_len above a page', { entryLen: 4097 }],
    ['entry_num above 2^19', { entryNum: HWPT_INVALIDATE_MAX_ENTRIES + 1 }],
  ])('%s: EINVAL, nothing issued', async (_what, over) => {
    expect(await ioctl(head({ entryNum: 1, ...over }), encode([tlbi]))).toEqual({ status: -Errno.EINVAL, entryNum: 0, executed: 0 });
  });

  it('a CMD_SYNC among the entries: EIO with entry_num at it, and the converted entry before it never sent', async () => {
    expect(await ioctl(head({ entryNum: 3 }), encode([tlbi, cmdSync(), tlbi]))).toEqual({ status: -Errno.EIO, entryNum: 1, executed: 0 });
  });

  it('a vSID VM 0 does not have (VM 1\'s device, by its pSID): EIO at that entry, nothing issued', async () => {
    const other = devices(scenario).find((d) => d.vm === 1);
    expect(other).toBeDefined();
    const r = await ioctl(head({ entryNum: 2 }), encode([tlbi, atcInv({ sid: other?.psid ?? 0, size: 0, addr: 0x7000n })]));
    expect(r).toEqual({ status: -Errno.EIO, entryNum: 1, executed: 0 });
  });

  it('VM 1\'s vIOMMU named by VM 0\'s VMM: ENOENT (not in its iommufd), nothing issued on VM 1\'s behalf', async () => {
    expect(viommu1).toBeGreaterThan(0);
    expect(viommu1).not.toBe(viommu0);
    expect(await ioctl(head({ hwptId: viommu1, entryNum: 1 }), encode([tlbiNhAll({ vmid: 2 })]))).toEqual({ status: -Errno.ENOENT, entryNum: 0, executed: 0 });
  });

  it('goes on serving: a valid call after all of them completes, with entry_num the input count', async () => {
    const errors = await counter(vfioControl, 'errors.EIO');
    expect(await ioctl(head({ entryNum: 2 }), encode([tlbi, tlbiNhAll({ vmid: 2 })]))).toEqual({ status: 0, entryNum: 2, executed: 2 });
    expect(await counter(vfioControl, 'errors.EIO')).toBe(errors);
    expect(fx.tree.processes.every((p) => p.child.exitCode === null)).toBe(true);
  });
});
