import { GUEST_RAM_SIZE, vmRamBase } from '../machine/board.js';
import { Errno } from '../runtime/errors.js';
import { PAGE_SIZE } from '../machine/memory.js';
import type { OpContext } from '../runtime/op-context.js';
import type { PageTable } from '../machine/pagetable.js';
import { iobaInWindow } from '../formats/spapr-tce.js';
import type { HOST_IOMMU_COUNTERS } from './host-iommu.js';

/** A PE (an IOMMU group) the table is programmed into: its PHB (a pSMMU here) and its StreamID there. */
export interface TablePe {
  psmmu: number;
  sid: number;
}

/** What the table needs from vfio: one TCE cache kill on one PE. Returns 0 or an error status. */
export type KillTces = (ctx: OpContext, pe: TablePe, ioba: number, npages: number) => Promise<number>;

/**
 * One guest PHB's TCE table on a POWER host (sPAPR): the hardware table of the VM's one DMA window
 * (its liobn), shared by the VFIO sPAPR container of the PHB and KVM's in-kernel handlers, and
 * programmed into every PE of the container (tce_iommu_create_window -> set_window per group). The
 * pSMMUs walk it as the PHBs would (a single-level table stood in for by the stage-2 format).
 *
 * Guest memory is preregistered (VFIO_IOMMU_SPAPR_REGISTER_MEMORY, pinned once at VM start): a TCE
 * write pins nothing and keeps no vfio_dma tree, it exchanges the entry (iommu_tce_xchg_no_kill),
 * whatever it held; no container lock is taken on this path (VFIO_IOMMU_MAP_DMA and KVM's handlers
 * exchange entries atomically). Every change is followed by a TCE cache kill on every PE of the
 * table (iommu_tce_kill -> pnv_pci_ioda2_tce_invalidate walks the table's it_group_list): once per
 * VFIO ioctl (tce_iommu_build_v2, tce_iommu_clear), once per TCE from KVM (kvmppc_tce_iommu_map /
 * unmap). kernel.tce_put prices one entry's validation and preregistered-address lookup,
 * kernel.iommu_pte_write its exchange.
 */
export class TceTableDomain {
  constructor(
    private readonly vm: number,
    private readonly table: PageTable,
    private readonly pes: readonly TablePe[],
    private readonly kill: KillTces,
    readonly counters: Record<(typeof HOST_IOMMU_COUNTERS)[number], number>,
  ) {}

  /** Host-physical address of a preregistered guest page, or undefined outside the VM's RAM. */
  private hpaOf(gpa: number): number | undefined {
    if (gpa < 0 || gpa % PAGE_SIZE !== 0 || gpa + PAGE_SIZE > GUEST_RAM_SIZE) return undefined;
    return vmRamBase(this.vm) + gpa;
  }

  /**
   * VFIO_IOMMU_MAP_DMA on the sPAPR v2 container (tce_iommu_build_v2): `pages` TCEs from `ioba`
   * mapping guest memory from `gpa`, then one kill. A range outside the window is EINVAL
   * (iommu_tce_put_param_check), memory outside the preregistered RAM EINVAL
   * (tce_iommu_prereg_ua_to_hpa); both are refused before any entry changes (Linux clears the
   * entries it had written, to the same end).
   */
  async build(ctx: OpContext, ioba: number, gpa: number, pages: number, write: boolean): Promise<number> {
    if (!iobaInWindow(BigInt(ioba), BigInt(pages))) return this.fail(-Errno.EINVAL);
    const gpas = Array.from({ length: pages }, (_, i) => gpa + i * PAGE_SIZE);
    if (gpas.some((g) => this.hpaOf(g) === undefined)) return this.fail(-Errno.EINVAL);
    gpas.forEach((g, i) => this.xchg(ctx, ioba + i * PAGE_SIZE, g, write));
    this.counters.maps += 1;
    return this.killAll(ctx, ioba, pages);
  }

  /** VFIO_IOMMU_UNMAP_DMA (tce_iommu_clear): every entry of the range cleared, then one kill. */
  async clear(ctx: OpContext, ioba: number, pages: number): Promise<number> {
    if (!iobaInWindow(BigInt(ioba), BigInt(pages))) return this.fail(-Errno.EINVAL);
    for (let i = 0; i < pages; i++) this.xchg(ctx, ioba + i * PAGE_SIZE, undefined, false);
    this.counters.unmaps += 1;
    return this.killAll(ctx, ioba, pages);
  }

  /**
   * KVM's in-kernel handlers: each TCE written (or cleared), then killed, one by one. Every entry
   * is checked first (KVM validates a whole list before it writes one), so a refused update
   * changes nothing.
   */
  async putEach(ctx: OpContext, ioba: number, gpas: readonly (number | undefined)[], writable: readonly boolean[]): Promise<number> {
    if (!iobaInWindow(BigInt(ioba), BigInt(gpas.length))) return this.fail(-Errno.EINVAL);
    if (gpas.some((g) => g !== undefined && this.hpaOf(g) === undefined)) return this.fail(-Errno.EFAULT);
    let status = 0;
    for (let i = 0; i < gpas.length; i++) {
      const at = ioba + i * PAGE_SIZE;
      this.xchg(ctx, at, gpas[i], writable[i] ?? true);
      const s = await this.killAll(ctx, at, 1);
      if (s !== 0) status = s;
    }
    if (gpas.length > 0) this.counters.maps += 1;
    return status;
  }

  /** iommu_tce_xchg_no_kill: one entry replaced by a mapping of `gpa`, or cleared (undefined). */
  private xchg(ctx: OpContext, ioba: number, gpa: number | undefined, write: boolean): void {
    ctx.charge('kernel.tce_put');
    // iommu_tce_xchg_no_kill: the one hardware entry.
    ctx.charge('kernel.iommu_pte_write');
    if (this.table.walk(ioba).pa >= 0) {
      this.table.unmap(ioba, 1);
      this.counters.pagesUnmapped += 1;
    }
    const hpa = gpa === undefined ? undefined : this.hpaOf(gpa);
    if (hpa === undefined) return;
    this.table.map(ioba, hpa, 1, { read: true, write });
    this.counters.pagesMapped += 1;
  }

  /** iommu_tce_kill: one kill on each PE of the table, one after another. */
  private async killAll(ctx: OpContext, ioba: number, npages: number): Promise<number> {
    let status = 0;
    for (const pe of this.pes) {
      this.counters.flushes += 1;
      const s = await this.kill(ctx, pe, ioba, npages);
      if (s !== 0) status = s;
    }
    return status;
  }

  private fail(status: number): number {
    this.counters.mapErrors += 1;
    return status;
  }
}
