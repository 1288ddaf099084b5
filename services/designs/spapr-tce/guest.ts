import { Errno } from '../../runtime/errors.js';
import type { OpContext } from '../../runtime/op-context.js';
import {
  DMA32_WINDOW_ENTRIES, DMA32_WINDOW_OFFSET, H_RC, TCE_PAGE_SIZE, encodeHcall, encodeTceList, liobnOf, tceListGpa, tceOf,
} from '../../formats/spapr-tce.js';
import { type DmaApi, type DmaApiFactory, type GuestDevice, type GuestKernel } from '../../guest/driver.js';
import { IommuTable } from './iommu-table.js';
import { planClearHcalls, planMapHcalls, type PlannedHcall, type TceHcallMode } from './tce-hcalls.js';

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
 */
class PseriesIommu implements DmaApi {
  private hcalls = 0;
  /** Of `hcalls`, those the hypervisor refused (any return code but H_SUCCESS). */
  private failed = 0;
  private readonly table: IommuTable;
  private readonly liobn: number;
  private readonly mode: TceHcallMode;

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

  async map(ctx: OpContext, cpu: number, _device: GuestDevice, pa: number, pages: number): Promise<number> {
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
    if (!call.list) status = (await ctx.call('kvm', 'HCALL', payload)).status;
    else {
      const gpa = Number(call.hcall.args[2]);
      const data = encodeTceList(call.list);
      this.kernel.ram.write(gpa, data);
      ctx.charge('guest.pte_write', call.list.length);
      status = (await ctx.call('kvm', 'HCALL', payload, [{ gpa, data }])).status;
    }
    if (status !== H_RC.SUCCESS) this.failed += 1;
    return status;
  }

  async drain(): Promise<void> {}

  close(): void {}
}

/** Linux's pSeries IOMMU code: the same whether QEMU or KVM serves its hypercalls. */
export const dmaApi: DmaApiFactory = (kernel) => new PseriesIommu(kernel);
