import { GUEST_RAM_SIZE, vmRamBase } from '../machine/board.js';
import { Errno } from '../runtime/errors.js';
import { IovaTree, type IovaRange } from '../machine/iova-tree.js';
import { PAGE_SIZE } from '../machine/memory.js';
import { Mutex } from '../machine/mutex.js';
import type { OpContext } from '../runtime/op-context.js';
import type { PageTable } from '../machine/pagetable.js';
import { CMD_SIZE, cmdSync, encodeCommand, tlbiNhVaRange, type SmmuCommand } from '../formats/smmu/commands.js';

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

/** The host table's input address size: a 4-level, 4 KiB-granule table translates 48 bits. */
export const HOST_IOVA_LIMIT = 2 ** 48;
/** Pages of one piece of a flush's range (see flush). */
const FLUSH_PIECE_PAGES = 2 ** 30;
/** VFIO type1's dma_entry_limit module parameter (U16_MAX): mappings per container. */
export const VFIO_DMA_ENTRY_LIMIT = 65535;

/**
 * What a host domain does to the IOMMU's caches after it changed its table. Returns 0 or the
 * status of the submission that failed.
 */
export interface DomainInvalidation {
  afterMap(ctx: OpContext, iova: number, pages: number): Promise<number>;
  afterUnmap(ctx: OpContext, iova: number, pages: number): Promise<number>;
}

/** Encodes commands into one CMDQ submission, charging the host driver's insert of each. */
function submission(ctx: OpContext, cmds: SmmuCommand[]): Buffer {
  const buf = Buffer.alloc(cmds.length * CMD_SIZE);
  cmds.forEach((c, i) => encodeCommand(c, buf, i * CMD_SIZE));
  ctx.charge('kernel.cmdq_insert', cmds.length);
  return buf;
}

/** Range commands in pieces (the range helpers take 32-bit page counts), then one CMD_SYNC. */
function rangeThenSync(iova: number, pages: number, range: (at: number, n: number) => SmmuCommand[]): SmmuCommand[] {
  const cmds: SmmuCommand[] = [];
  for (let done = 0; done < pages; done += FLUSH_PIECE_PAGES) cmds.push(...range(iova + done * PAGE_SIZE, Math.min(FLUSH_PIECE_PAGES, pages - done)));
  cmds.push(cmdSync());
  return cmds;
}

/**
 * An SMMUv3 stage-1 paging domain of one device on its pSMMU (what VFIO type1 allocates there:
 * arm_smmu_domain_alloc_paging prefers stage 1). A map invalidates nothing: arm_smmu_ops has no
 * iotlb_sync_map, and nothing invalid is cached. An unmap is arm_smmu_iotlb_sync ->
 * arm_smmu_tlb_inv_range_domain: TLBI_NH_VA over the range with the domain's ASID (TLBI_EL2_VA
 * on a host with E2H, not modeled) and one CMD_SYNC, on the domain's one SMMU.
 */
export function stage1DomainInvalidation(asid: number, psmmu: number, submit: SubmitCommands, counters: Record<(typeof HOST_IOMMU_COUNTERS)[number], number>): DomainInvalidation {
  return {
    afterMap: async () => 0,
    async afterUnmap(ctx, iova, pages) {
      const buf = submission(ctx, rangeThenSync(iova, pages, (at, n) => tlbiNhVaRange(asid, at, n)));
      counters.flushes += 1;
      return submit(ctx, psmmu, buf);
    },
  };
}

/**
 * A host IOMMU domain when the host shadows the guest's mappings into a page table (a VFIO type1
 * container's domain, the domain vhost-iommu maps into; an sPAPR TCE table is tce-table.ts): the
 * table from guest IOVA to host-physical that the pSMMU walks, the ranges mapped in it (type1's
 * vfio_dma tree), the lock VFIO holds over both (the container's iommu->lock), and what is
 * invalidated after a change (DomainInvalidation).
 */
export class HostIommuDomain {
  /** Mapped ranges, in bytes (type1's tree of vfio_dma). */
  private readonly ranges = new IovaTree<IovaRange>();
  readonly lock: Mutex;

  constructor(
    private readonly vm: number,
    private readonly table: PageTable,
    private readonly invalidation: DomainInvalidation,
    readonly counters: Record<(typeof HOST_IOMMU_COUNTERS)[number], number>,
    lockName = `vfio.container-${vm}`,
  ) {
    this.lock = new Mutex(lockName);
  }

  /** Host-physical address of a guest-physical one, or undefined outside the VM's RAM. */
  hpaOf(gpa: number, pages: number): number | undefined {
    if (gpa < 0 || gpa + pages * PAGE_SIZE > GUEST_RAM_SIZE) return undefined;
    return vmRamBase(this.vm) + gpa;
  }

  /** Mappings in the domain (VFIO type1 counts them against dma_entry_limit). */
  get mappings(): number {
    return this.ranges.size;
  }

  /** True when [iova, iova + pages) lies inside the table's input range (the domain's aperture). */
  static inAperture(iova: number, pages: number): boolean {
    return iova >= 0 && pages >= 0 && iova + pages * PAGE_SIZE <= HOST_IOVA_LIMIT;
  }

  /**
   * Maps a range not mapped yet. Outside the table's input range is ERANGE (io-pgtable refuses an
   * input address above its IAS), an overlap EEXIST (type1), memory outside the VM's RAM EFAULT
   * (nothing to pin). Caller holds the lock.
   */
  async map(ctx: OpContext, m: MapRequest): Promise<number> {
    if (!HostIommuDomain.inAperture(m.iova, m.pages)) return this.fail(-Errno.ERANGE);
    const hpa = this.hpaOf(m.gpa, m.pages);
    if (hpa === undefined) return this.fail(-Errno.EFAULT);
    const size = m.pages * PAGE_SIZE;
    if (this.ranges.find(m.iova, size)) return this.fail(-Errno.EEXIST);
    if (m.pin) ctx.charge('kernel.vfio_pin_page', m.pages);
    ctx.charge('kernel.iommu_pte_write', this.table.map(m.iova, hpa, m.pages, { read: true, write: m.write }));
    this.ranges.insert({ iova: m.iova, size });
    this.counters.maps += 1;
    this.counters.pagesMapped += m.pages;
    return this.invalidation.afterMap(ctx, m.iova, m.pages);
  }

  /**
   * Unmaps every mapping inside [iova, iova + pages). A range that would split a mapping is refused
   * with EINVAL, as type1 does. Returns the pages unmapped, or -errno. Caller holds the lock.
   */
  async unmap(ctx: OpContext, iova: number, pages: number, unpin: boolean): Promise<number> {
    const size = pages * PAGE_SIZE;
    const inside = this.ranges.overlapping(iova, size);
    if (inside.some((r) => r.iova < iova || r.iova + r.size > iova + size)) return this.fail(-Errno.EINVAL);
    let unmapped = 0;
    for (const r of inside) {
      const n = r.size / PAGE_SIZE;
      ctx.charge('kernel.iommu_pte_write', this.table.unmap(r.iova, n));
      if (unpin) ctx.charge('kernel.vfio_unpin_page', n);
      this.ranges.delete(r);
      unmapped += n;
    }
    const first = inside[0];
    const last = inside[inside.length - 1];
    if (unmapped === 0 || !first || !last) return 0;
    this.counters.unmaps += 1;
    this.counters.pagesUnmapped += unmapped;
    // The range the unmap gathered (iommu_iotlb_gather), not the whole range asked.
    const status = await this.invalidation.afterUnmap(ctx, first.iova, (last.iova + last.size - first.iova) / PAGE_SIZE);
    return status < 0 ? status : unmapped;
  }

  private fail(status: number): number {
    this.counters.mapErrors += 1;
    return status;
  }
}
