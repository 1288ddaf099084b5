import { Errno } from '../../runtime/errors.js';
import type { OpContext } from '../../runtime/op-context.js';
import {
  DDW_WINDOW, DMA32_WINDOW_ENTRIES, DMA32_WINDOW_OFFSET, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_RC, H_STUFF_TCE, TCE_PAGE_SIZE, encodeHcall, encodeTceList, liobnOf,
  tceListGpa, tceOf, tcePageSize,
} from '../../formats/spapr-tce.js';
import { DDW_BOOT_OP } from '../../machine/setup-ops.js';
import { type DmaApi, type DmaApiFactory, type GuestDevice, type GuestKernel } from '../../guest/driver.js';
import { IommuTable } from './iommu-table.js';
import { planClearHcalls, planMapHcalls, type PlannedHcall, type TceHcallMode } from './tce-hcalls.js';

/** Each TCE hypercall as the guest kernel makes it, for vmmsim explain (plpar_wrappers.h). */
const HCALL_LABELS = new Map<number, string>([
  [H_PUT_TCE, 'H_PUT_TCE (plpar_tce_put)'],
  [H_PUT_TCE_INDIRECT, 'H_PUT_TCE_INDIRECT (plpar_tce_put_indirect)'],
  [H_STUFF_TCE, 'H_STUFF_TCE (plpar_tce_stuff)'],
]);

/**
 * dma-iommu of a pseries guest (arch/powerpc/kernel/iommu.c over platforms/pseries/iommu.c's
 * iommu_table_lpar_multi_ops): the VM's devices sit on one PHB whose default DMA window is one
 * iommu_table; dma_map allocates IOBAs from its bitmap and sets their TCEs by hypercall, dma_unmap
 * clears them by hypercall and frees the IOBAs. The hypervisor owns the TCE table, so every change
 * is a hypercall: under spapr-tce each reaches QEMU, under spapr-tce-kvm KVM serves it.
 *
 * The pseries IOMMU has no flush queue (its iommu_table_ops have no flush, and the hypervisor
 * kills its TCE cache inside the hypercall): under dma=lazy an unmap still clears its TCEs at
 * once, so lazy behaves as strict here and has no stale window.
 *
 * guest.ddw: the devices are 64-bit capable and the guest makes a dynamic DMA window that covers
 * all its RAM (enable_ddw, reached through iommu_bypass_supported_pSeriesLP for a 64-bit mask; the
 * RTAS query and create are taken as done): at boot it maps all RAM into it once
 * (walk_system_ram_range -> tce_setrange_multi_pSeriesLP: H_PUT_TCE_INDIRECT of 512 TCEs at a
 * time), reported as the operation ddw-boot, and from then on dma_map is direct (the DDW's offset
 * added to the RAM address, dma_direct_map_page through dma_ops_bypass): no hypercall per I/O. If
 * the boot mapping fails, the guest stays on the 32-bit window, as enable_ddw falls back.
 */
class PseriesIommu implements DmaApi {
  private hcalls = 0;
  /** Of `hcalls`, those the hypervisor refused (any return code but H_SUCCESS). */
  private failed = 0;
  private readonly table: IommuTable;
  private readonly liobn: number;
  private readonly mode: TceHcallMode;
  /** guest.ddw: every buffer is mapped through the DDW that covers all RAM, with no hypercall. */
  private direct = false;

  constructor(private readonly kernel: GuestKernel) {
    const t = kernel.env.topology;
    this.liobn = liobnOf(kernel.env.self.index);
    this.mode = t.guest?.tceHcalls === 'per-entry' ? 'per-entry' : 'indirect';
    this.table = new IommuTable(DMA32_WINDOW_ENTRIES, Math.max(1, t.workload?.threads ?? 1));
  }

  /** Hypercalls made (each one the guest's request to the host IOMMU). */
  get guestCommands(): number {
    return this.hcalls;
  }

  get guestCommandsFailed(): number {
    return this.failed;
  }

  /** guest.ddw: the DDW over all RAM, mapped once at boot (enable_ddw's direct mapping). */
  async boot(): Promise<void> {
    if (!this.kernel.env.topology.guest?.ddw) return;
    const page = tcePageSize(DDW_WINDOW);
    const tces = Array.from({ length: DDW_WINDOW.entries }, (_, i) => tceOf(i * page, true, true));
    const liobn = liobnOf(this.kernel.env.self.index, DDW_WINDOW.num);
    let ok = true;
    await this.kernel.setup(DDW_BOOT_OP, async (ctx) => {
      for (const call of planMapHcalls(liobn, DDW_WINDOW.offset, tces, this.mode, tceListGpa(0), page)) {
        if ((await this.hcall(ctx, call)) === H_RC.SUCCESS) continue;
        ok = false;
        break;
      }
    });
    if (!ok) this.kernel.env.log.warn('the DDW boot mapping failed: the devices stay on the 32-bit window');
    this.direct = ok;
  }

  async map(ctx: OpContext, cpu: number, _device: GuestDevice, pa: number, pages: number): Promise<number> {
    if (this.direct) {
      // dma_direct_map_page with the DDW's dma_offset: no TCE to set.
      ctx.charge('guest.dma_direct');
      return DDW_WINDOW.offset + pa;
    }
    const entry = this.table.alloc(cpu, pages);
    if (entry === undefined) return -Errno.ENOMEM;
    ctx.charge('guest.iova_alloc');
    const ioba = DMA32_WINDOW_OFFSET + entry * TCE_PAGE_SIZE;
    // Streaming mappings here are DMA_BIDIRECTIONAL: TCE_PCI_READ | TCE_PCI_WRITE.
    const tces = Array.from({ length: pages }, (_, i) => tceOf(pa + i * TCE_PAGE_SIZE, true, true));
    for (const call of planMapHcalls(this.liobn, ioba, tces, this.mode, tceListGpa(cpu))) {
      if ((await this.hcall(ctx, call)) === H_RC.SUCCESS) continue;
      // iommu_alloc on a failed build: __iommu_free clears the whole range and frees the IOBAs.
      await this.clear(ctx, ioba, pages);
      this.table.free(entry, pages);
      return -Errno.EIO;
    }
    return ioba;
  }

  async unmap(ctx: OpContext, _cpu: number, _device: GuestDevice, iova: number, pages: number): Promise<number> {
    if (this.direct && iova >= DDW_WINDOW.offset) {
      ctx.charge('guest.dma_direct');
      return 0;
    }
    const entry = (iova - DMA32_WINDOW_OFFSET) / TCE_PAGE_SIZE;
    // iommu_free_check: an IOBA outside the window is refused before anything is cleared.
    if (!Number.isInteger(entry) || entry < 0 || entry + pages > DMA32_WINDOW_ENTRIES) return -Errno.EINVAL;
    const ok = await this.clear(ctx, iova, pages);
    this.table.free(entry, pages);
    ctx.charge('guest.iova_free');
    return ok ? 0 : -Errno.EIO;
  }

  /** Clears TCEs; false if a hypercall failed (Linux only logs it and goes on). */
  private async clear(ctx: OpContext, ioba: number, pages: number): Promise<boolean> {
    let ok = true;
    for (const call of planClearHcalls(this.liobn, ioba, pages, this.mode)) {
      if ((await this.hcall(ctx, call)) !== H_RC.SUCCESS) ok = false;
    }
    return ok;
  }

  /** One hypercall; an indirect one first fills the CPU's TCE list page in guest RAM. */
  private async hcall(ctx: OpContext, call: PlannedHcall): Promise<number> {
    this.hcalls += 1;
    const payload = encodeHcall(call.hcall);
    let status: number;
    const label = HCALL_LABELS.get(call.hcall.nr);
    if (!call.list) status = (await ctx.call('kvm', 'HCALL', payload, undefined, label)).status;
    else {
      const gpa = Number(call.hcall.args[2]);
      const data = encodeTceList(call.list);
      this.kernel.ram.write(gpa, data);
      ctx.charge('guest.pte_write', call.list.length);
      status = (await ctx.call('kvm', 'HCALL', payload, [{ gpa, data }], label)).status;
    }
    if (status !== H_RC.SUCCESS) this.failed += 1;
    return status;
  }

  async drain(): Promise<void> {}

  close(): void {}
}

/** Linux's pSeries IOMMU code: the same whether QEMU or KVM serves its hypercalls. */
export const dmaApi: DmaApiFactory = (kernel) => new PseriesIommu(kernel);
