import { GUEST_RAM_SIZE, vmRamBase } from '../common/board.js';
import { Errno } from '../common/errors.js';
import { vmidOf } from '../common/iommufd-objects.js';
import { PAGE_SIZE } from '../common/memory.js';
import { Mutex } from '../common/mutex.js';
import type { OpContext } from '../common/op-context.js';
import type { PageTable } from '../common/pagetable.js';
import type { Topology__Output } from '../common/generated/vmmsim/v1/Topology.js';
import { CMD_SIZE, cmdSync, encodeCommand, tlbiS2IpaRange } from '../common/smmu/commands.js';

/** What the host IOMMU domain needs from vfio: submitting commands to one physical SMMU. */
export type SubmitCommands = (ctx: OpContext, psmmu: number, commands: Buffer) => Promise<number>;

export interface MapRequest {
  iova: number;
  /** Guest-physical address of the first page. */
  gpa: number;
  pages: number;
  write: boolean;
  /** Pin the pages first (VFIO type1 and vhost do; sPAPR's preregistered memory is pinned already). */
  pin: boolean;
}

export const HOST_IOMMU_COUNTERS = ['maps', 'unmaps', 'pagesMapped', 'pagesUnmapped', 'flushes', 'mapErrors'] as const;

/**
 * One VM's host IOMMU domain when the host shadows the guest's mappings (VFIO type1 containers,
 * vhost-iommu, sPAPR TCE tables): a stage-2 table from guest IOVA to host-physical that the pSMMUs
 * walk, the ranges mapped in it (type1's vfio_dma tree), and the lock VFIO holds over both. Every
 * change is followed by TLBI_S2_IPA over the range and a CMD_SYNC on each pSMMU with a device of
 * the VM, one after another, as the kernel walks its domain list. Maps are invalidated too: the
 * architectures that shadow pay a host invalidation after map (paths.md; an IOMMU that caches
 * non-present entries, as VT-d caching mode assumes and a TCE cache kill requires).
 */
export class HostIommuDomain {
  /** Mapped ranges by first IOVA: pages. */
  private readonly ranges = new Map<number, number>();
  readonly lock: Mutex;
  private readonly vmid: number;
  private readonly psmmus: number[];

  constructor(
    private readonly vm: number,
    private readonly table: PageTable,
    t: Topology__Output,
    private readonly submit: SubmitCommands,
    readonly counters: Record<(typeof HOST_IOMMU_COUNTERS)[number], number>,
  ) {
    this.lock = new Mutex(`vfio.container-${vm}`);
    this.vmid = vmidOf(t, vm);
    this.psmmus = [...new Set(t.devices.filter((d) => d.vm === vm).map((d) => d.psmmu))].sort((a, b) => a - b);
  }

  /** Host-physical address of a guest-physical one, or undefined outside the VM's RAM. */
  hpaOf(gpa: number, pages: number): number | undefined {
    if (gpa < 0 || gpa + pages * PAGE_SIZE > GUEST_RAM_SIZE) return undefined;
    return vmRamBase(this.vm) + gpa;
  }

  /** Maps a range not mapped yet (type1 refuses an overlap with EEXIST). Caller holds the lock. */
  async map(ctx: OpContext, m: MapRequest): Promise<number> {
    const hpa = this.hpaOf(m.gpa, m.pages);
    if (hpa === undefined) return this.fail(-Errno.EFAULT);
    if (this.overlaps(m.iova, m.pages)) return this.fail(-Errno.EEXIST);
    if (m.pin) ctx.charge('kernel.vfio_pin_page', m.pages);
    ctx.charge('kernel.iommu_pte_write', this.table.map(m.iova, hpa, m.pages, { read: true, write: m.write }));
    this.ranges.set(m.iova, m.pages);
    this.counters.maps += 1;
    this.counters.pagesMapped += m.pages;
    return this.flush(ctx, m.iova, m.pages);
  }

  /**
   * Unmaps every mapping inside [iova, iova + pages). A range that would split a mapping is refused
   * with EINVAL, as type1 does. Returns the pages unmapped, or -errno. Caller holds the lock.
   */
  async unmap(ctx: OpContext, iova: number, pages: number, unpin: boolean): Promise<number> {
    const end = iova + pages * PAGE_SIZE;
    const inside: [number, number][] = [];
    for (const [start, n] of this.ranges) {
      const stop = start + n * PAGE_SIZE;
      if (stop <= iova || start >= end) continue;
      if (start < iova || stop > end) return this.fail(-Errno.EINVAL);
      inside.push([start, n]);
    }
    let unmapped = 0;
    for (const [start, n] of inside) {
      ctx.charge('kernel.iommu_pte_write', this.table.unmap(start, n));
      if (unpin) ctx.charge('kernel.vfio_unpin_page', n);
      this.ranges.delete(start);
      unmapped += n;
    }
    if (unmapped === 0) return 0;
    this.counters.unmaps += 1;
    this.counters.pagesUnmapped += unmapped;
    const status = await this.flush(ctx, iova, pages);
    return status < 0 ? status : unmapped;
  }

  /** Rewrites single pages whatever they held (a TCE write replaces the entry), then one flush. */
  async replace(ctx: OpContext, iova: number, gpas: (number | undefined)[], writable: boolean[]): Promise<number> {
    for (let i = 0; i < gpas.length; i++) {
      const at = iova + i * PAGE_SIZE;
      const gpa = gpas[i];
      if (this.ranges.has(at)) {
        ctx.charge('kernel.iommu_pte_write', this.table.unmap(at, 1));
        this.ranges.delete(at);
        this.counters.pagesUnmapped += 1;
      }
      if (gpa === undefined) continue;
      const hpa = this.hpaOf(gpa, 1);
      if (hpa === undefined) return this.fail(-Errno.EFAULT);
      ctx.charge('kernel.iommu_pte_write', this.table.map(at, hpa, 1, { read: true, write: writable[i] ?? true }));
      this.ranges.set(at, 1);
      this.counters.pagesMapped += 1;
    }
    this.counters.maps += 1;
    return this.flush(ctx, iova, gpas.length);
  }

  private overlaps(iova: number, pages: number): boolean {
    const end = iova + pages * PAGE_SIZE;
    for (const [start, n] of this.ranges) if (start < end && start + n * PAGE_SIZE > iova) return true;
    return false;
  }

  private fail(status: number): number {
    this.counters.mapErrors += 1;
    return status;
  }

  /** TLBI_S2_IPA over the range + CMD_SYNC on every pSMMU of the VM, one after another. */
  private async flush(ctx: OpContext, iova: number, pages: number): Promise<number> {
    const cmds = [...tlbiS2IpaRange(this.vmid, iova, pages), cmdSync()];
    const buf = Buffer.alloc(cmds.length * CMD_SIZE);
    cmds.forEach((c, i) => encodeCommand(c, buf, i * CMD_SIZE));
    let status = 0;
    for (const p of this.psmmus) {
      this.counters.flushes += 1;
      ctx.charge('kernel.cmdq_insert', cmds.length);
      const s = await this.submit(ctx, p, buf);
      if (s !== 0) status = s;
    }
    return status;
  }
}
