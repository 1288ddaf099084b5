import { describe, expect, it } from 'vitest';
import { loadProfile, profileCosts } from '../../services/cost/profile.js';
import { CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import {
  HW_QUEUE_ALLOC_SIZE, IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, decodeDestroy, decodeHwQueueAlloc, encodeDestroy, encodeHwQueueAlloc, type HwQueueAlloc,
} from '../../services/formats/iommufd-hw-queue.js';
import { cmdqvPlan, globalVcmdq, vintfOf } from '../../services/machine/iommufd-objects.js';
import { decodeMmio } from '../../services/formats/kvm-run.js';
import { decodeMigrateReply, decodeMigrateReplyFull, decodeMigrateRequest, encodeMigrateReply, encodeMigrateRequest } from '../../services/formats/migration.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { cmdqAllocRegister, decodeCmdqAlloc, decodeCmdqAllocRegister, encodeCmdqAlloc } from '../../services/formats/smmu/cmdqv-registers.js';
import { VCMDQ_GUEST_LOG2_ENTRIES, vcmdqGuestGpa } from '../../services/formats/smmu/registers.js';
import { HwQueues } from '../../services/vfio/hw-queues.js';
import { Cmdqv } from '../../worker-pool/cmdqv.js';
import { iommufdLayoutOf } from '../../services/designs/registry.js';

const costs = new CostTable(profileCosts(loadProfile('arm64-kunpeng920')));

describe('the migration and HW queue records', () => {
  it('VM_MIGRATE: the destination\'s free VCMDQs, and the HW queues each vSMMU kept', () => {
    expect(decodeMigrateRequest(encodeMigrateRequest({ destVcmdqs: 3 }))).toEqual({ destVcmdqs: 3 });
    expect(decodeMigrateRequest(Buffer.alloc(3))).toBeUndefined();
    const reply = encodeMigrateReply([2, 0, 1], 1234.5);
    expect(reply.subarray(0, 16).toString('hex')).toBe('03000000' + '02000000' + '00000000' + '01000000');
    expect(reply).toHaveLength(24);
    expect(decodeMigrateReply(reply)).toEqual([2, 0, 1]);
    expect(decodeMigrateReplyFull(reply)).toEqual({ hwQueues: [2, 0, 1], recreateNs: 1234.5 });
    // An older VMM's reply stops after the array: no re-creation time.
    expect(decodeMigrateReplyFull(reply.subarray(0, 16))).toEqual({ hwQueues: [2, 0, 1], recreateNs: 0 });
    expect(decodeMigrateReply(reply.subarray(0, 8))).toBeUndefined();
  });

  it('struct iommu_hw_queue_alloc is 40 little-endian bytes, iommu_destroy 8', () => {
    const a: HwQueueAlloc = { size: 40, flags: 0, viommuId: 7, type: 1, index: 1, outHwQueueId: 0, nestingParentIova: 0x1_4801_0000, length: 4096 };
    const b = encodeHwQueueAlloc(a);
    expect(b.length).toBe(HW_QUEUE_ALLOC_SIZE);
    expect(b.readUInt32LE(8)).toBe(7);
    expect(b.readUInt32LE(16)).toBe(1);
    expect(b.readBigUInt64LE(24)).toBe(0x1_4801_0000n);
    expect(b.readBigUInt64LE(32)).toBe(4096n);
    expect(decodeHwQueueAlloc(b)).toEqual(a);
    expect(decodeHwQueueAlloc(b.subarray(0, 39))).toBeUndefined();
    expect(encodeDestroy(9).toString('hex')).toBe('08000000' + '09000000');
    expect(decodeDestroy(encodeDestroy(9))).toEqual({ size: 8, id: 9 });
  });

  it('CMDQV CMDQ_ALLOC(q): VINTF [20:15], LVCMDQ [7:1], ALLOCATED [0] at 0x200 + 4q of the CMDQV page', () => {
    expect(encodeCmdqAlloc({ vintf: 2, lidx: 3, allocated: true })).toBe((2 << 15) | (3 << 1) | 1);
    expect(decodeCmdqAlloc((5 << 15) | (1 << 1))).toEqual({ vintf: 5, lidx: 1, allocated: false });
    expect(decodeCmdqAllocRegister(cmdqAllocRegister(127))).toBe(127);
    expect(decodeCmdqAllocRegister(cmdqAllocRegister(0) - 4)).toBeUndefined();
    expect(decodeCmdqAllocRegister(cmdqAllocRegister(128))).toBeUndefined();
    expect(decodeCmdqAllocRegister(cmdqAllocRegister(1) + 2)).toBeUndefined();
  });
});

describe('a CMDQV mapping a logical VCMDQ where the host says', () => {
  it('takes the global VCMDQ named in CMDQ_ALLOC, and refuses one another VINTF holds', () => {
    const c = new Cmdqv({ vintfs: 3, vcmdqs: 12 });
    expect(c.assignVintf(1, 10).ok && c.assignVintf(2, 20).ok).toBe(true);
    expect(c.allocate(1, 0, 4, 4)).toEqual({ ok: true, value: { queue: 4 } });
    const busy = c.allocate(2, 0, 4, 4);
    expect(busy.ok ? 'ok' : busy.error.code).toBe('E_VCMDQ_BUSY');
    const out = c.allocate(2, 0, 4, 12);
    expect(out.ok ? 'ok' : out.error.code).toBe('E_VCMDQ_EXHAUSTED');
    expect(c.allocate(2, 0, 4, 8)).toEqual({ ok: true, value: { queue: 8 } });
    expect(c.queueOwner(8)).toEqual({ vintf: 2, lidx: 0 });
  });
});

/** Two VMs behind one pSMMU, a vSMMU each with 2 VCMDQs. */
function topology(): Topology__Output {
  return {
    model: 'nested-smmuv3-vcmdq', vsmmu: 'per-psmmu', vcmdqsPerVsmmu: 2, vmids: [1, 2], vmidPolicy: 'per-s2-parent',
    devices: [{ vm: 0, psmmu: 0, vsid: 8, psid: 0x100 }, { vm: 1, psmmu: 0, vsid: 8, psid: 0x108 }],
  } as unknown as Topology__Output;
}

function setup(): { hw: HwQueues; writes: { psmmu: number; queue: number | undefined; value: number }[]; viommu: number; firstQueueIds: number[] } {
  const t = topology();
  const layout = iommufdLayoutOf(t);
  const writes: { psmmu: number; queue: number | undefined; value: number }[] = [];
  const hw = new HwQueues(t, layout, async (_ctx, psmmu, mmio) => {
    const m = decodeMmio(mmio);
    writes.push({ psmmu, queue: m ? decodeCmdqAllocRegister(m.physAddr) : undefined, value: m?.data ?? -1 });
    return 0;
  });
  const vm0 = layout.viommus.find((v) => v.vm === 0);
  return { hw, writes, viommu: vm0?.id ?? -1, firstQueueIds: layout.hwQueues.filter((q) => q.vm === 0).map((q) => q.id) };
}

const ctx = (): OpContext => new OpContext(1, 0, costs, new Map());

function alloc(viommuId: number, index: number, over: Partial<HwQueueAlloc> = {}): Buffer {
  return encodeHwQueueAlloc({
    size: HW_QUEUE_ALLOC_SIZE, flags: 0, viommuId, type: IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, index, outHwQueueId: 0,
    nestingParentIova: vcmdqGuestGpa(0, index), length: 16 << VCMDQ_GUEST_LOG2_ENTRIES, ...over,
  });
}

describe('iommufd HW queues over the CMDQV driver', () => {
  it('maps each VM\'s logical VCMDQs on the global VCMDQs of its VINTF (vintf x per-VINTF + lidx)', () => {
    const t = topology();
    const plan = cmdqvPlan(t, 0, iommufdLayoutOf(t));
    expect(plan).toEqual({ vms: [0, 1], lvcmdqsPerVintf: 42 });
    expect([vintfOf(plan, 0), vintfOf(plan, 1), vintfOf(plan, 2)]).toEqual([1, 2, undefined]);
    expect(globalVcmdq(plan, 2, 1)).toBe(85);
  });

  it('destroys last first (EBUSY otherwise) and allocates first first (EIO otherwise), with CMDQ_ALLOC writes', async () => {
    const { hw, writes, viommu, firstQueueIds } = setup();
    const [q0, q1] = firstQueueIds as [number, number];
    expect((await hw.destroy(encodeDestroy(q0), ctx(), 0)).status).toBe(-Errno.EBUSY);
    expect((await hw.destroy(encodeDestroy(q1), ctx(), 0)).status).toBe(0);
    expect((await hw.destroy(encodeDestroy(q1), ctx(), 0)).status).toBe(-Errno.ENOENT);
    expect((await hw.destroy(encodeDestroy(q0), ctx(), 0)).status).toBe(0);
    expect(writes).toEqual([
      { psmmu: 0, queue: 43, value: encodeCmdqAlloc({ vintf: 1, lidx: 1, allocated: false }) },
      { psmmu: 0, queue: 42, value: encodeCmdqAlloc({ vintf: 1, lidx: 0, allocated: false }) },
    ]);
    expect((await hw.alloc(alloc(viommu, 1), ctx(), 0)).status).toBe(-Errno.EIO);
    const r = await hw.alloc(alloc(viommu, 0), ctx(), 0);
    expect(r.status).toBe(0);
    const id = decodeHwQueueAlloc(r.payload)?.outHwQueueId ?? 0;
    expect(id).toBeGreaterThan(Math.max(...firstQueueIds));
    expect(writes.at(-1)).toEqual({ psmmu: 0, queue: 42, value: encodeCmdqAlloc({ vintf: 1, lidx: 0, allocated: true }) });
    expect((await hw.alloc(alloc(viommu, 0), ctx(), 0)).status).toBe(-Errno.EEXIST);
    expect(hw.counters).toEqual({ hwQueueAlloc: 1, hwQueueDestroy: 2 });
  });

  it('answers bad requests with the kernel\'s errno and writes nothing', async () => {
    const { hw, writes, viommu } = setup();
    const cases: [Buffer, number][] = [
      [alloc(viommu, 0).subarray(0, 20), -Errno.EFAULT],
      [alloc(viommu, 2, { flags: 1 }), -Errno.EOPNOTSUPP],
      [alloc(viommu, 2, { type: 0 }), -Errno.EOPNOTSUPP],
      [alloc(viommu, 2, { type: 2 }), -Errno.EOPNOTSUPP],
      [alloc(viommu, 2, { length: 0 }), -Errno.EINVAL],
      [alloc(999, 2), -Errno.ENOENT],
      [alloc(viommu, 42), -Errno.EINVAL],
      [alloc(viommu, 1), -Errno.EEXIST],
      [alloc(viommu, 2, { length: 48 }), -Errno.EINVAL],
      [alloc(viommu, 2, { length: 16 }), -Errno.EINVAL],
      [alloc(viommu, 2, { nestingParentIova: vcmdqGuestGpa(0, 2) + 16 }), -Errno.EINVAL],
      [alloc(viommu, 2, { nestingParentIova: 0x10_0000_0000 }), -Errno.ENXIO],
    ];
    for (const [payload, status] of cases) expect((await hw.alloc(payload, ctx(), 0)).status, `${status}`).toBe(status);
    expect((await hw.destroy(encodeDestroy(viommu), ctx(), 0)).status).toBe(-Errno.EBUSY);
    expect((await hw.destroy(Buffer.alloc(4), ctx(), 0)).status).toBe(-Errno.EFAULT);
    expect(writes).toEqual([]);
    // The one valid request among them: the next logical VCMDQ after the two there.
    expect((await hw.alloc(alloc(viommu, 2), ctx(), 0)).status).toBe(0);
  });

  it('refuses another VM\'s objects as not in this VMM\'s iommufd (ENOENT), touching nothing of that VM', async () => {
    const { hw, writes, viommu, firstQueueIds } = setup();
    const [q0, q1] = firstQueueIds as [number, number];
    // VM 1's VMM names VM 0's vIOMMU, its HW queues and the vIOMMU object itself.
    expect((await hw.alloc(alloc(viommu, 2), ctx(), 1)).status).toBe(-Errno.ENOENT);
    expect((await hw.destroy(encodeDestroy(q1), ctx(), 1)).status).toBe(-Errno.ENOENT);
    expect((await hw.destroy(encodeDestroy(viommu), ctx(), 1)).status).toBe(-Errno.ENOENT);
    expect(writes).toEqual([]);
    expect(hw.counters).toEqual({ hwQueueAlloc: 0, hwQueueDestroy: 0 });
    // VM 0's queues are all still there: its own VMM tears them down in order.
    expect((await hw.destroy(encodeDestroy(q1), ctx(), 0)).status).toBe(0);
    expect((await hw.destroy(encodeDestroy(q0), ctx(), 0)).status).toBe(0);
  });
});
