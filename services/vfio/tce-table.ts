import { GUEST_RAM_SIZE, vmRamBase } from '../machine/board.js';
import { Errno } from '../runtime/errors.js';
import { PAGE_SIZE } from '../machine/memory.js';
import type { OpContext } from '../runtime/op-context.js';
import type { PageTable } from '../machine/pagetable.js';
import { DDW_PAGE_SHIFT, TCE_PAGE_SHIFT, iobaInWindow, tcePageSize, windowOfIoba, type TceWindow } from '../formats/spapr-tce.js';
import type { HOST_IOMMU_COUNTERS } from './host-iommu.js';

/** A PE (an IOMMU group) the table is programmed into: its PHB (a pSMMU here) and its StreamID there. */
export interface TablePe {
  psmmu: number;
  sid: number;
}

/** What the table needs from vfio: one TCE cache kill on one PE (TCEs of 2^pageShift bytes). Returns 0 or an error status. */
export type KillTces = (ctx: OpContext, pe: TablePe, ioba: number, npages: number, pageShift: number) => Promise<number>;

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
 *
 * The container holds the PHB's windows (container->tables[]): the 32-bit default window of 4 KiB
 * TCEs and, with guest.ddw, the dynamic window of 16 MiB TCEs, both in the one table the pSMMUs
 * walk (a 16 MiB TCE written as eight 2 MiB blocks).
 */
export class TceTableDomain {
  constructor(
    private readonly vm: number,
    private readonly table: PageTable,
    private readonly pes: readonly TablePe[],
    private readonly kill: KillTces,
    readonly counters: Record<(typeof HOST_IOMMU_COUNTERS)[number], number>,
  ) {}

  /** Host-physical address of a preregistered guest page of `size` bytes, or undefined outside the VM's RAM. */
  private hpaOf(gpa: number, size: number): number | undefined {
    if (gpa < 0 || gpa % size !== 0 || gpa + size > GUEST_RAM_SIZE) return undefined;
    return vmRamBase(this.vm) + gpa;
  }

  /**
   * VFIO_IOMMU_MAP_DMA on the sPAPR v2 container (tce_iommu_build_v2): TCEs over [ioba, ioba +
   * size) mapping guest memory from `gpa`, then one kill. An IOVA in no window is ENXIO
   * (tce_iommu_find_table); a size or address not aligned to the window's TCE page, or a range past
   * it, EINVAL (iommu_tce_put_param_check); memory outside the preregistered RAM EINVAL
   * (tce_iommu_prereg_ua_to_hpa). All are refused before any entry changes (Linux clears the
   * entries it had written, to the same end).
   */
  async build(ctx: OpContext, ioba: number, gpa: number, size: number, write: boolean): Promise<number> {
    const w = windowOfIoba(ioba);
    if (!w) return this.fail(-Errno.ENXIO);
    const page = tcePageSize(w);
    if (size % page !== 0 || gpa % page !== 0 || !iobaInWindow(BigInt(ioba), BigInt(size / page), w)) return this.fail(-Errno.EINVAL);
    const gpas = Array.from({ length: size / page }, (_, i) => gpa + i * page);
    if (gpas.some((g) => this.hpaOf(g, page) === undefined)) return this.fail(-Errno.EINVAL);
    gpas.forEach((g, i) => this.xchg(ctx, w, ioba + i * page, g, write));
    this.counters.maps += 1;
    return this.killAll(ctx, ioba, gpas.length, w.pageShift);
  }

  /** VFIO_IOMMU_UNMAP_DMA (tce_iommu_clear): every entry of the range cleared, then one kill. */
  async clear(ctx: OpContext, ioba: number, size: number): Promise<number> {
    const w = windowOfIoba(ioba);
    if (!w) return this.fail(-Errno.ENXIO);
    const page = tcePageSize(w);
    if (size % page !== 0 || !iobaInWindow(BigInt(ioba), BigInt(size / page), w)) return this.fail(-Errno.EINVAL);
    for (let i = 0; i < size / page; i++) this.xchg(ctx, w, ioba + i * page, undefined, false);
    this.counters.unmaps += 1;
    return this.killAll(ctx, ioba, size / page, w.pageShift);
  }

  /**
   * KVM's in-kernel handlers on window `w`: each TCE written (or cleared), then killed, one by one.
   * Every entry is checked first (KVM validates a whole list before it writes one), so a refused
   * update changes nothing.
   */
  async putEach(ctx: OpContext, w: TceWindow, ioba: number, gpas: readonly (number | undefined)[], writable: readonly boolean[]): Promise<number> {
    const page = tcePageSize(w);
    if (!iobaInWindow(BigInt(ioba), BigInt(gpas.length), w)) return this.fail(-Errno.EINVAL);
    if (gpas.some((g) => g !== undefined && this.hpaOf(g, page) === undefined)) return this.fail(-Errno.EFAULT);
    let status = 0;
    for (let i = 0; i < gpas.length; i++) {
      const at = ioba + i * page;
      this.xchg(ctx, w, at, gpas[i], writable[i] ?? true);
      const s = await this.killAll(ctx, at, 1, w.pageShift);
      if (s !== 0) status = s;
    }
    if (gpas.length > 0) this.counters.maps += 1;
    return status;
  }

  /**
   * iommu_tce_xchg_no_kill: one entry of window `w` replaced by a mapping of `gpa`, or cleared
   * (undefined). A 4 KiB TCE is one page entry of the walked table; a 16 MiB one is eight 2 MiB
   * blocks. Page counters count 4 KiB pages.
   */
  private xchg(ctx: OpContext, w: TceWindow, ioba: number, gpa: number | undefined, write: boolean): void {
    ctx.charge('kernel.tce_put');
    // iommu_tce_xchg_no_kill: the one hardware entry, whatever the TCE's size.
    ctx.charge('kernel.iommu_pte_write');
    const page = tcePageSize(w);
    const big = w.pageShift === DDW_PAGE_SHIFT;
    if (this.table.walk(ioba).pa >= 0) {
      if (big) this.table.unmapBlocks(ioba, page, 2);
      else this.table.unmap(ioba, 1);
      this.counters.pagesUnmapped += page / PAGE_SIZE;
    }
    const hpa = gpa === undefined ? undefined : this.hpaOf(gpa, page);
    if (hpa === undefined) return;
    if (big) this.table.mapBlocks(ioba, hpa, page, 2, { read: true, write });
    else this.table.map(ioba, hpa, 1, { read: true, write });
    this.counters.pagesMapped += page / PAGE_SIZE;
  }

  /** iommu_tce_kill: one kill on each PE of the table, one after another. */
  private async killAll(ctx: OpContext, ioba: number, npages: number, pageShift: number = TCE_PAGE_SHIFT): Promise<number> {
    let status = 0;
    for (const pe of this.pes) {
      this.counters.flushes += 1;
      const s = await this.kill(ctx, pe, ioba, npages, pageShift);
      if (s !== 0) status = s;
    }
    return status;
  }

  private fail(status: number): number {
    this.counters.mapErrors += 1;
    return status;
  }
}
