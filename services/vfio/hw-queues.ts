import { GUEST_RAM_SIZE } from '../machine/board.js';
import { PAGE_SIZE } from '../machine/memory.js';
import { VCMDQ_GUEST_LOG2_ENTRIES, vcmdqGuestGpa } from '../formats/smmu/registers.js';
import { Errno } from '../runtime/errors.js';
import type { Topology__Output } from '../runtime/generated/vmmsim/v1/Topology.js';
import {
  DESTROY_SIZE, HW_QUEUE_ALLOC_SIZE, IOMMU_HW_QUEUE_TYPE_DEFAULT, IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, decodeDestroy, decodeHwQueueAlloc,
  encodeHwQueueAlloc,
} from '../formats/iommufd-hw-queue.js';
import { cmdqvPlan, globalVcmdq, vintfOf, type CmdqvPlan, type IommufdLayout, type ViommuObject } from '../machine/iommufd-objects.js';
import { encodeMmio } from '../formats/kvm-run.js';
import type { OpContext } from '../runtime/op-context.js';
import { EMPTY, type HandlerResult } from '../runtime/role-api.js';
import { cmdqAllocRegister, encodeCmdqAlloc } from '../formats/smmu/cmdqv-registers.js';

/** SMMU_IDR1.CMDQS the pSMMUs report: queues of at most 2^19 entries of 16 bytes. */
const MAX_CMDQ_LOG2 = 19;
const CMD_BYTES_LOG2 = 4;

interface HwQueue {
  id: number;
  viommu: ViommuObject;
  vintf: number;
  lidx: number;
  /** The global VCMDQ it is mapped onto. */
  queue: number;
  /** Guest pages of the queue iommufd pinned for it (iommufd_hw_queue_alloc_phys). */
  pages: number;
}

/** Pages of guest queue memory of `length` bytes at `iova` (as iommufd_hw_queue_alloc_phys counts them). */
function queuePages(iova: number, length: number): number {
  const offset = iova % PAGE_SIZE;
  return Math.ceil((offset + length) / PAGE_SIZE);
}

/**
 * iommufd's HW queue objects over the Tegra241 CMDQV driver: IOMMU_HW_QUEUE_ALLOC maps a logical
 * VCMDQ of the vIOMMU's VINTF onto its global VCMDQ (a CMDQ_ALLOC write to the pSMMU's CMDQV) and
 * IOMMU_DESTROY unmaps it. The checks and errno values are the kernel's: iommufd's (flags, type,
 * length, the vIOMMU), then tegra241_vintf_alloc_lvcmdq_user's (index range, EEXIST, ascending
 * order with EIO, queue size and alignment, ENXIO outside stage 2), and each queue depends on the
 * one below it, so IOMMU_DESTROY of a queue with a higher one still allocated is EBUSY: queues go in
 * ascending and come out in descending order. The queues the VMM allocated at VM start are here
 * from the topology, as every setup object is. Each VMM has its own iommufd: an id that names
 * another VM's object is not in its table (ENOENT), so one VMM never reaches another VM's queues.
 */
export class HwQueues {
  private readonly queues = new Map<number, HwQueue>();
  private readonly viommus = new Map<number, ViommuObject>();
  private readonly plans = new Map<number, CmdqvPlan>();
  /** Every object id the VM-start layout used, with the VM it belongs to (undefined: shared); new objects get ids after them. */
  private readonly setupIds = new Map<number, number | undefined>();
  private nextId: number;
  readonly counters = { hwQueueAlloc: 0, hwQueueDestroy: 0 };

  constructor(
    t: Topology__Output,
    layout: IommufdLayout,
    /** A register write to a pSMMU (HOST_MMIO); resolves with its status. */
    private readonly hostWrite: (ctx: OpContext, psmmu: number, mmio: Buffer) => Promise<number>,
  ) {
    for (const v of layout.viommus) {
      this.viommus.set(v.id, v);
      if (!this.plans.has(v.psmmu)) this.plans.set(v.psmmu, cmdqvPlan(t, v.psmmu, layout));
    }
    const owned: [number, number | undefined][] = [
      [layout.ioasId, undefined],
      ...layout.viommus.flatMap((v): [number, number][] => [[v.id, v.vm], [v.hwptId, v.vm]]),
      ...layout.vdevices.flatMap((d): [number, number | undefined][] => [[d.id, this.viommus.get(d.viommuId)?.vm], [d.devId, this.viommus.get(d.viommuId)?.vm]]),
      ...layout.hwQueues.map((q): [number, number] => [q.id, q.vm]),
    ];
    for (const [id, vm] of owned) this.setupIds.set(id, vm);
    this.nextId = Math.max(0, ...owned.map(([id]) => id)) + 1;
    for (const q of layout.hwQueues) {
      const v = this.viommus.get(q.viommuId) as ViommuObject;
      const plan = this.plans.get(v.psmmu) as CmdqvPlan;
      const vintf = vintfOf(plan, v.vm) as number;
      this.queues.set(q.id, { id: q.id, viommu: v, vintf, lidx: q.index, queue: globalVcmdq(plan, vintf, q.index), pages: queuePages(vcmdqGuestGpa(q.vsmmu, q.index), 16 << VCMDQ_GUEST_LOG2_ENTRIES) });
    }
  }

  private queueAt(viommuId: number, lidx: number): HwQueue | undefined {
    for (const q of this.queues.values()) if (q.viommu.id === viommuId && q.lidx === lidx) return q;
    return undefined;
  }

  /** ioctl(IOMMU_HW_QUEUE_ALLOC) from VM `vm`'s VMM: the reply carries the struct back with out_hw_queue_id set. */
  async alloc(payload: Buffer, ctx: OpContext, vm: number): Promise<HandlerResult> {
    ctx.charge('ioctl.syscall');
    const a = decodeHwQueueAlloc(payload);
    if (!a) return { status: -Errno.EFAULT, payload: EMPTY };
    if (a.size < HW_QUEUE_ALLOC_SIZE) return { status: -Errno.EINVAL, payload: EMPTY };
    if (a.flags !== 0 || a.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
    if (a.length === 0) return { status: -Errno.EINVAL, payload: EMPTY };
    if (a.nestingParentIova + a.length - 1 >= 2 ** 64) return { status: -Errno.EOVERFLOW, payload: EMPTY };
    const viommu = this.viommus.get(a.viommuId);
    if (!viommu || viommu.vm !== vm) return { status: -Errno.ENOENT, payload: EMPTY };
    const plan = this.plans.get(viommu.psmmu) as CmdqvPlan;
    const vintf = vintfOf(plan, viommu.vm);
    // A vIOMMU with no VINTF on its CMDQV has no hw_queue ops.
    if (vintf === undefined) return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
    if (a.type !== IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV) return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
    if (a.index >= plan.lvcmdqsPerVintf) return { status: -Errno.EINVAL, payload: EMPTY };
    if (this.queueAt(viommu.id, a.index)) return { status: -Errno.EEXIST, payload: EMPTY };
    // The hardware maps logical VCMDQs in ascending order: the one below must be there.
    if (a.index > 0 && !this.queueAt(viommu.id, a.index - 1)) return { status: -Errno.EIO, payload: EMPTY };
    const pow2 = (a.length & (a.length - 1)) === 0;
    if (!pow2 || a.length < 32 || a.length > 2 ** (MAX_CMDQ_LOG2 + CMD_BYTES_LOG2)) return { status: -Errno.EINVAL, payload: EMPTY };
    if (a.nestingParentIova % a.length !== 0) return { status: -Errno.EINVAL, payload: EMPTY };
    // The queue memory must be mapped in the VM's stage 2 (all of guest RAM, for nested VMs).
    if (a.nestingParentIova + a.length > GUEST_RAM_SIZE) return { status: -Errno.ENXIO, payload: EMPTY };
    const queue = globalVcmdq(plan, vintf, a.index);
    // iommufd_hw_queue_alloc_phys: an internal access pins the queue's guest pages (they must stay
    // mapped and be physically contiguous while the hardware reads them), one pin per page.
    const pages = queuePages(a.nestingParentIova, a.length);
    ctx.charge('kernel.vfio_pin_page', pages);
    const mapped = await this.hostWrite(ctx, viommu.psmmu, encodeMmio({ physAddr: cmdqAllocRegister(queue), data: encodeCmdqAlloc({ vintf, lidx: a.index, allocated: true }), len: 4, isWrite: true }));
    if (mapped !== 0) return { status: mapped, payload: EMPTY };
    const id = this.nextId++;
    this.queues.set(id, { id, viommu, vintf, lidx: a.index, queue, pages });
    this.counters.hwQueueAlloc += 1;
    return { status: 0, payload: encodeHwQueueAlloc({ ...a, outHwQueueId: id }) };
  }

  /**
   * ioctl(IOMMU_DESTROY) of a HW queue: unmaps its logical VCMDQ. An id that is no object is ENOENT;
   * one the VM still uses (a setup object, or a queue another one depends on) is EBUSY; another VM's
   * object is none of this VMM's (ENOENT).
   */
  async destroy(payload: Buffer, ctx: OpContext, vm: number): Promise<HandlerResult> {
    ctx.charge('ioctl.syscall');
    const d = decodeDestroy(payload);
    if (!d) return { status: -Errno.EFAULT, payload: EMPTY };
    if (d.size < DESTROY_SIZE) return { status: -Errno.EINVAL, payload: EMPTY };
    const q = this.queues.get(d.id);
    if (q && q.viommu.vm !== vm) return { status: -Errno.ENOENT, payload: EMPTY };
    if (!q) {
      const ours = this.setupIds.has(d.id) && (this.setupIds.get(d.id) ?? vm) === vm;
      return { status: ours ? -Errno.EBUSY : -Errno.ENOENT, payload: EMPTY };
    }
    if (this.queueAt(q.viommu.id, q.lidx + 1)) return { status: -Errno.EBUSY, payload: EMPTY };
    const unmapped = await this.hostWrite(ctx, q.viommu.psmmu, encodeMmio({ physAddr: cmdqAllocRegister(q.queue), data: encodeCmdqAlloc({ vintf: q.vintf, lidx: q.lidx, allocated: false }), len: 4, isWrite: true }));
    if (unmapped !== 0) return { status: unmapped, payload: EMPTY };
    // iommufd_hw_queue_destroy_access: the queue's pages are unpinned.
    ctx.charge('kernel.vfio_unpin_page', q.pages);
    this.queues.delete(d.id);
    this.setupIds.delete(d.id);
    this.counters.hwQueueDestroy += 1;
    return { status: 0, payload: EMPTY };
  }
}
