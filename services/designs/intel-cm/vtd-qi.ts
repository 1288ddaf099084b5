import { Errno } from '../../runtime/errors.js';
import { decodeMmio, encodeMmio } from '../../formats/kvm-run.js';
import type { Memory } from '../../machine/memory.js';
import { Mutex } from '../../machine/mutex.js';
import type { OpContext } from '../../runtime/op-context.js';
import type { MemoryRange } from '../../runtime/role-api.js';
import {
  DESC_SIZE, DescType, FSTS, VTD_IQ_ENTRIES, VTD_MMIO_BASE, VTD_REG, encodeDescriptor, iqIndexOf, iqRegisterOf, vtdIqSlotGpa, vtdIqStatusGpa,
  type VtdDescriptor, type WaitDesc,
} from '../../formats/vtd.js';

/** Linux's desc_status[] values (drivers/iommu/intel/dmar.c): the wait descriptor writes QI_DONE. */
export const QI_STATUS = { FREE: 0, IN_USE: 1, DONE: 2, ABORT: 3 } as const;

/**
 * The guest driver's side of the VT-d invalidation queue, as Linux's qi_submit_sync runs it: under
 * the queue lock, copy the descriptors and an invalidation wait descriptor (status write of
 * QI_DONE into its own desc_status slot) into the ring in guest RAM, write IQT, and poll the
 * status. The IQT write traps; the VMM consumes the queue before the vCPU resumes, so the status is
 * done when the write returns, unless the queue stopped on an error (FSTS.IQE): then, as
 * qi_check_fault does, the driver reads IQH, copies the wait descriptor over the refused one,
 * clears IQE and reports -EINVAL. The lock is held across the trap, so vCPUs take turns.
 */
export class GuestQi {
  /** Linux's free_head: the slot the next batch starts at. */
  private freeHead = 0;
  private readonly lock: Mutex;
  /** Batches whose queue stopped on an invalid descriptor and were recovered. */
  recoveries = 0;

  constructor(
    private readonly ram: Memory,
    lockName: string,
    private readonly peer = 'kvm',
  ) {
    this.lock = new Mutex(lockName);
  }

  /** Submits descriptors followed by a wait descriptor and waits for it; 0 or -errno. */
  submit(ctx: OpContext, descs: readonly VtdDescriptor[]): Promise<number> {
    return this.lock.with(() => this.submitLocked(ctx, descs), ctx);
  }

  private async submitLocked(ctx: OpContext, descs: readonly VtdDescriptor[]): Promise<number> {
    const index = this.freeHead;
    const waitIndex = (index + descs.length) % VTD_IQ_ENTRIES;
    const wait: WaitDesc = {
      type: DescType.WAIT, interrupt: false, statusWrite: true, fence: false, pageDrain: false,
      statusData: QI_STATUS.DONE, statusAddr: vtdIqStatusGpa(waitIndex),
    };
    const all = [...descs, wait];
    this.ram.write32(vtdIqStatusGpa(waitIndex), QI_STATUS.IN_USE);
    const ranges = this.writeSlots(index, all);
    this.freeHead = (index + all.length) % VTD_IQ_ENTRIES;
    ctx.charge('guest.cmdq_write', all.length);
    const reply = await this.access(ctx, VTD_REG.IQT, iqRegisterOf(this.freeHead), true, ranges, 'writel DMAR_IQT_REG (qi_submit_sync)');
    if (reply.status === 0 && this.ram.read32(vtdIqStatusGpa(waitIndex)) === QI_STATUS.DONE) return 0;
    return this.checkFault(ctx, index, waitIndex);
  }

  /** Copies descriptors into the ring from `index`; returns the slots as contiguous ranges. */
  private writeSlots(index: number, descs: readonly VtdDescriptor[]): MemoryRange[] {
    const bytes = Buffer.alloc(descs.length * DESC_SIZE);
    descs.forEach((d, i) => encodeDescriptor(d, bytes, i * DESC_SIZE));
    const head = Math.min(descs.length, VTD_IQ_ENTRIES - index);
    const ranges: MemoryRange[] = [];
    for (const [slot, from, n] of [[index, 0, head], [0, head, descs.length - head]] as const) {
      if (n === 0) continue;
      const data = bytes.subarray(from * DESC_SIZE, (from + n) * DESC_SIZE);
      this.ram.write(vtdIqSlotGpa(slot), data);
      ranges.push({ gpa: vtdIqSlotGpa(slot), data });
    }
    return ranges;
  }

  /**
   * qi_check_fault: on IQE with IQH at this batch's first descriptor, overwrite it with the wait
   * descriptor, clear IQE (write 1) and fail the batch with -EINVAL. Without IQE the status would
   * never change here (the queue is consumed synchronously): -ETIMEDOUT instead of spinning.
   */
  private async checkFault(ctx: OpContext, index: number, waitIndex: number): Promise<number> {
    const fsts = (await this.access(ctx, VTD_REG.FSTS, 0, false, [], 'readl DMAR_FSTS_REG (qi_check_fault)')).value;
    if ((fsts & FSTS.IQE) === 0) return -Errno.ETIMEDOUT;
    const head = iqIndexOf((await this.access(ctx, VTD_REG.IQH, 0, false, [], 'readl DMAR_IQH_REG (qi_check_fault)')).value);
    if (head !== index) return -Errno.ETIMEDOUT;
    this.recoveries += 1;
    const wait = this.ram.read(vtdIqSlotGpa(waitIndex), DESC_SIZE);
    this.ram.write(vtdIqSlotGpa(head), wait);
    await this.access(ctx, VTD_REG.FSTS, FSTS.IQE, true, [{ gpa: vtdIqSlotGpa(head), data: wait }], 'writel DMAR_FSTS_REG (qi_check_fault)');
    return -Errno.EINVAL;
  }

  /**
   * A 32-bit register access (readl/writel), a trapped write or read; memory the unit wrote back
   * lands in guest RAM. `label`: the access as the driver makes it, for vmmsim explain.
   */
  private async access(ctx: OpContext, offset: number, value: number, isWrite: boolean, ranges: MemoryRange[], label: string): Promise<{ status: number; value: number }> {
    const mmio = encodeMmio({ physAddr: VTD_MMIO_BASE + offset, data: value, len: 4, isWrite });
    const reply = await ctx.call(this.peer, isWrite ? 'MMIO_WRITE' : 'MMIO_READ', mmio, ranges, label);
    for (const w of reply.guestMemory) this.ram.write(Number(w.gpa), w.data);
    return { status: reply.status, value: decodeMmio(reply.payload)?.data ?? 0 };
  }
}
