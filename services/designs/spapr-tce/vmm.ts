import { GUEST_RAM_SIZE } from '../../machine/board.js';
import { readGuestRam } from '../../machine/guest-ram.js';
import type { MmioAccess } from '../../formats/kvm-run.js';
import { Mutex } from '../../machine/mutex.js';
import type { OpContext } from '../../runtime/op-context.js';
import { EMPTY, type HandlerResult, type RoleEnv, type Request } from '../../runtime/role-api.js';
import {
  DDW_WINDOW, DMA32_WINDOW, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_RC, H_STUFF_TCE, MAX_TCES_PER_HCALL, TCE_ENTRY_SIZE, TCE_PAGE_SIZE, decodeHcall, decodeTceList, liobnParts, tceGpa, tcePageSize, tcePerms, tceValid,
  type TceWindow,
} from '../../formats/spapr-tce.js';
import { tceTableFile } from '../../machine/tce-table.js';
import { TceTable } from '../../machine/tce-table.js';
import { VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VMM_RAM_VADDR, encodeContainerIoctl, encodeDmaMap, encodeDmaUnmap } from '../../formats/vfio-type1.js';
import { VFIO_CONTAINER_FD_BASE } from '../../machine/vfio-containers.js';
import type { VmmDevice, VmmDeviceFactory } from '../../qemu/device.js';

/**
 * QEMU's sPAPR TCE tables (hw/ppc/spapr_iommu.c) for the PHB's DMA window, with VFIO devices
 * behind it: the guest's TCE hypercalls exit to here (KVM_EXIT_PAPR_HCALL) and run under the big
 * lock, as every hypercall does in QEMU. h_put_tce, h_put_tce_indirect and h_stuff_tce check the
 * liobn, the list and the window (H_PARAMETER), then put_tce_emu stores each TCE and notifies the
 * IOMMU listeners once per entry: VFIO's listener (vfio_iommu_map_notify) turns a valid TCE into
 * one VFIO_IOMMU_MAP_DMA of that 4 KiB page on the PHB's sPAPR v2 container, whose TCE exchange
 * replaces whatever the entry held (tce_iommu_build_v2: no unmap first), and a cleared one into one
 * VFIO_IOMMU_UNMAP_DMA. A listener failure is only logged by QEMU; the guest still gets H_SUCCESS.
 *
 * Under spapr-tce every TCE hypercall comes here and the table is QEMU's own. Under spapr-tce-kvm
 * the table is the one QEMU created in KVM (and maps), and only what KVM punted comes here.
 *
 * The PHB has its 32-bit default window and, with guest.ddw, the dynamic window the guest created
 * at boot (RTAS ibm,create-pe-dma-window, spapr_rtas_ddw.c, taken as done): its own liobn, table and
 * 16 MiB TCEs (each notified as one 16 MiB VFIO_IOMMU_MAP_DMA).
 */
class SpaprTce implements VmmDevice {
  private readonly bql: Mutex;
  /** The PHB's windows' tables, by window number (spapr_tce_find_by_liobn). */
  private readonly tables = new Map<number, { window: TceWindow; table: TceTable }>();
  private readonly vm: number;
  private readonly counters = { tceHcalls: 0, tcesWritten: 0, vfioMaps: 0, vfioUnmaps: 0, vfioErrors: 0, notRam: 0, rejected: 0 };

  constructor(
    private readonly env: RoleEnv,
    inKernel: boolean,
  ) {
    this.vm = env.self.index;
    this.bql = new Mutex(`${env.self.name}.bql`);
    const windows = env.topology.guest?.ddw ? [DMA32_WINDOW, DDW_WINDOW] : [DMA32_WINDOW];
    for (const w of windows) {
      const table = inKernel ? TceTable.create(tceTableFile(env.topology.ramDir, this.vm, w.num), w.entries) : TceTable.private(w.entries);
      this.tables.set(w.num, { window: w, table });
    }
  }

  /** No MMIO region of this device: an access to unassigned space, which QEMU ignores. */
  async mmioExit(_access: MmioAccess, req: Request, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('exit.to_user');
    return { status: 0, payload: req.payload };
  }

  async hcallExit(req: Request, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('exit.to_user');
    const status = await this.bql.with(() => this.hypercall(req, ctx), ctx);
    if (status !== H_RC.SUCCESS) this.counters.rejected += 1;
    return { status, payload: EMPTY };
  }

  /** spapr_hypercall for the TCE hypercalls; anything else is H_FUNCTION (not implemented). */
  private async hypercall(req: Request, ctx: OpContext): Promise<number> {
    const h = decodeHcall(req.payload);
    if (!h || (h.nr !== H_PUT_TCE && h.nr !== H_PUT_TCE_INDIRECT && h.nr !== H_STUFF_TCE)) return H_RC.FUNCTION;
    this.counters.tceHcalls += 1;
    const [liobn = 0n, ioba = 0n, a2 = 0n, a3 = 0n] = h.args;
    // spapr_tce_find_by_liobn: one of the PHB's windows.
    const parts = liobn <= 0xffff_ffffn ? liobnParts(Number(liobn)) : undefined;
    const t = parts && parts.vm === this.vm ? this.tables.get(parts.window.num) : undefined;
    if (!t) return H_RC.PARAMETER;
    const page = tcePageSize(t.window);
    // QEMU masks the IOBA to the TCE page rather than refusing it.
    const base = Number(ioba & ~BigInt(page - 1));
    if (h.nr === H_PUT_TCE) return this.put(ctx, t, base, a2);
    let tces: bigint[];
    if (h.nr === H_PUT_TCE_INDIRECT) {
      if (a3 > BigInt(MAX_TCES_PER_HCALL) || a2 % BigInt(TCE_PAGE_SIZE) !== 0n) return H_RC.PARAMETER;
      const n = Number(a3);
      tces = decodeTceList(readGuestRam(req.guestMemory, this.env.topology.ramDir, this.vm, Number(a2), n * TCE_ENTRY_SIZE), n);
    } else {
      // H_STUFF_TCE stores whatever value it is given; more entries than the table has are
      // refused before anything is stored, and the window check ends the loop.
      if (a3 > BigInt(t.table.entries)) return H_RC.PARAMETER;
      tces = Array.from({ length: Number(a3) }, () => a2);
    }
    // QEMU returns the last entry's result, starting from H_PARAMETER: a call of no entries fails.
    let rc: number = H_RC.PARAMETER;
    for (let i = 0; i < tces.length; i++) {
      rc = await this.put(ctx, t, base + i * page, tces[i] as bigint);
      if (rc !== H_RC.SUCCESS) break;
    }
    return rc;
  }

  /** put_tce_emu: one entry of a window, then one IOMMU notification. */
  private async put(ctx: OpContext, t: { window: TceWindow; table: TceTable }, ioba: number, tce: bigint): Promise<number> {
    const page = tcePageSize(t.window);
    const index = (ioba - t.window.offset) / page;
    if (index < 0 || index >= t.table.entries) return H_RC.PARAMETER;
    t.table.set(index, tce);
    ctx.charge('vmm.tce_entry');
    this.counters.tcesWritten += 1;
    await this.notify(ctx, ioba, page, tce);
    return H_RC.SUCCESS;
  }

  /** vfio_iommu_map_notify for one entry of `page` bytes. */
  private async notify(ctx: OpContext, iova: number, page: number, tce: bigint): Promise<void> {
    if (!tceValid(tce)) {
      await this.unmap(ctx, iova, page);
      return;
    }
    const gpa = tceGpa(tce);
    if (gpa + page > GUEST_RAM_SIZE) {
      // vfio_get_xlat_addr: "iommu map to non memory area"; nothing reaches the kernel.
      this.counters.notRam += 1;
      return;
    }
    this.counters.vfioMaps += 1;
    const flags = VFIO_DMA_MAP_FLAG_READ | (tcePerms(tce).write ? VFIO_DMA_MAP_FLAG_WRITE : 0);
    const r = await ctx.call('vfio', 'VFIO_DMA_MAP', encodeContainerIoctl(VFIO_CONTAINER_FD_BASE, encodeDmaMap({ flags, vaddr: VMM_RAM_VADDR + gpa, iova, size: page })));
    if (r.status !== 0) this.counters.vfioErrors += 1;
  }

  private async unmap(ctx: OpContext, iova: number, page: number): Promise<void> {
    this.counters.vfioUnmaps += 1;
    const r = await ctx.call('vfio', 'VFIO_DMA_UNMAP', encodeContainerIoctl(VFIO_CONTAINER_FD_BASE, encodeDmaUnmap({ flags: 0, iova, size: page })));
    if (r.status !== 0) this.counters.vfioErrors += 1;
  }

  stats(): Record<string, number> {
    return { ...this.counters, bqlContended: this.bql.contended };
  }
}

/** QEMU's sPAPR TCE table: every hypercall reaches it. */
export const vmmDevice: VmmDeviceFactory = (env) => new SpaprTce(env, false);
/** With in-kernel acceleration QEMU still serves what KVM punts, on the table it created in KVM. */
export const vmmDeviceInKernelTable: VmmDeviceFactory = (env) => new SpaprTce(env, true);
