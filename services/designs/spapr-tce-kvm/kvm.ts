import { readGuestRam } from '../../machine/guest-ram.js';
import type { OpContext } from '../../runtime/op-context.js';
import { EMPTY, type HandlerResult, type RoleEnv, type Request } from '../../runtime/role-api.js';
import {
  DMA32_WINDOW, DDW_WINDOW, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_RC, H_STUFF_TCE, MAX_TCES_PER_HCALL, TCE_ENTRY_SIZE, TCE_PAGE_SIZE, TCE_READ, TCE_WRITE, decodeHcall, decodeTceList, encodeTceUpdate, iobaInWindow, liobnParts, tcePageSize, tceValid, type Hcall, type TceWindow,
} from '../../formats/spapr-tce.js';
import { tceInRam, tceTableFile } from '../../machine/tce-table.js';
import { TceTable } from '../../machine/tce-table.js';
import type { KvmDevice, KvmDeviceFactory } from '../../kvm/device.js';

/** What KVM's in-kernel handler makes of one TCE hypercall. */
export type TceDecision =
  /** H_TOO_HARD: the kernel cannot finish; KVM_EXIT_PAPR_HCALL hands it to the VMM. */
  | { kind: 'punt'; why: 'liobn' | 'tce' | 'list' }
  /** Refused in the kernel with this PAPR code; nothing changed. */
  | { kind: 'reject'; status: number }
  /** Write these TCEs from `ioba` on. */
  | { kind: 'update'; ioba: number; tces: bigint[] };

/**
 * The checks of KVM's in-kernel TCE handlers (arch/powerpc/kvm/book3s_64_vio.c kvmppc_h_put_tce,
 * kvmppc_h_put_tce_indirect, kvmppc_h_stuff_tce), in their order:
 *  - a liobn with no table registered in the kernel: H_TOO_HARD (the VMM may own that window);
 *  - ioba not TCE-aligned or the range outside the window: H_PARAMETER; for INDIRECT, more than 512
 *    TCEs or a list not 4 KiB aligned: H_PARAMETER first; for STUFF, a value with permission bits
 *    (the kernel only stuffs clears): H_PARAMETER;
 *  - the punt: a TCE list page, or a TCE's page, outside the guest RAM preregistered for VFIO
 *    (kvmppc_tce_to_ua finds no memslot, mm_iommu_lookup no preregistered region), or a TCE whose
 *    address has stray bits below its page (iommu_tce_check_gpa): H_TOO_HARD, and the VMM does it.
 * A TCE granting no access is a clear, whatever its address (the kernel lets user space poison).
 * `window` is the window the liobn names when the kernel has a table for it (undefined: none).
 * `readList` reads the guest's TCE list (big-endian, as the guest wrote it).
 */
export function decideTce(h: Hcall, window: TceWindow | undefined, readList: (gpa: number, n: number) => bigint[]): TceDecision {
  if (!window) return { kind: 'punt', why: 'liobn' };
  const w = window;
  const [, ioba = 0n, a2 = 0n, a3 = 0n] = h.args;
  const parameter: TceDecision = { kind: 'reject', status: H_RC.PARAMETER };
  // iommu_tce_check_gpa: no address bits below the window's TCE page (but the permission bits).
  const below = BigInt(tcePageSize(w) - 1) & ~BigInt(TCE_READ | TCE_WRITE);
  const usable = (tce: bigint): boolean => !tceValid(tce) || ((tce & below) === 0n && tceInRam(tce, w));
  if (h.nr === H_PUT_TCE) {
    if (!iobaInWindow(ioba, 1n, w)) return parameter;
    if (!usable(a2)) return { kind: 'punt', why: 'tce' };
    return { kind: 'update', ioba: Number(ioba), tces: [a2] };
  }
  if (h.nr === H_PUT_TCE_INDIRECT) {
    if (a3 > BigInt(MAX_TCES_PER_HCALL) || a2 % BigInt(TCE_PAGE_SIZE) !== 0n) return parameter;
    if (!iobaInWindow(ioba, a3, w)) return parameter;
    // The list is one 4 KiB page of guest RAM, whatever the window's TCE size.
    if (!tceInRam(a2)) return { kind: 'punt', why: 'list' };
    const tces = readList(Number(a2), Number(a3));
    if (!tces.every(usable)) return { kind: 'punt', why: 'tce' };
    return { kind: 'update', ioba: Number(ioba), tces };
  }
  // H_STUFF_TCE
  if (!iobaInWindow(ioba, a3, w)) return parameter;
  if ((a2 & BigInt(TCE_READ | TCE_WRITE)) !== 0n) return parameter;
  return { kind: 'update', ioba: Number(ioba), tces: Array.from({ length: Number(a3) }, () => a2) };
}

/**
 * spapr-tce-kvm: KVM serves H_PUT_TCE, H_PUT_TCE_INDIRECT and H_STUFF_TCE in the kernel against
 * the TCE table the VMM registered in advance (KVM_CREATE_SPAPR_TCE_64, shared with the VMM), with
 * guest RAM preregistered for VFIO. The handlers run in virtual mode (kvmppc_h_put_tce and friends
 * in book3s_64_vio.c, called from kvmppc_pseries_do_hcall; the real-mode twins of
 * book3s_64_vio_hv.c were removed around v5.19): a full guest exit and entry (exit.hcall), no exit
 * to user space, no ioctl. Each TCE is written into the hardware table and its TCE cache entry
 * killed before the next (kvmppc_tce_iommu_map / kvmppc_tce_iommu_unmap end with iommu_tce_kill),
 * so an N-TCE hypercall kills N times on each PE: one TCE_UPDATE to vfio per hypercall carries the
 * list, and vfio kills per TCE. What it cannot finish (H_TOO_HARD) it leaves unclaimed, and KVM
 * exits to QEMU, which serves it on the same table (services/designs/spapr-tce/vmm.ts).
 */
class InKernelTce implements KvmDevice {
  private readonly tables = new Map<string, TceTable>();
  private readonly counters = { tceHcalls: 0, tcesWritten: 0, tceUpdates: 0, punts: 0, rejected: 0 };

  constructor(private readonly env: RoleEnv) {}

  /**
   * VM `vm`'s table of window `w` (kvmppc_find_table), once its VMM created it; none means the
   * liobn is not KVM's. A DDW exists only when the guest makes one (guest.ddw).
   */
  private table(vm: number, w: TceWindow): TceTable | undefined {
    if (w.num === DDW_WINDOW.num && !this.env.topology.guest?.ddw) return undefined;
    const key = `${vm}/${w.num}`;
    let t = this.tables.get(key);
    if (!t) {
      t = TceTable.open(tceTableFile(this.env.topology.ramDir, vm, w.num), w.entries);
      if (t) this.tables.set(key, t);
    }
    return t;
  }

  async hcall(req: Request, ctx: OpContext, vm: number): Promise<HandlerResult | undefined> {
    const h = decodeHcall(req.payload);
    if (!h || (h.nr !== H_PUT_TCE && h.nr !== H_PUT_TCE_INDIRECT && h.nr !== H_STUFF_TCE)) return undefined;
    this.counters.tceHcalls += 1;
    const liobn = h.args[0] ?? 0n;
    const parts = liobnParts(Number(liobn & 0xffff_ffffn));
    const w = parts && parts.vm === vm && liobn <= 0xffff_ffffn ? parts.window : undefined;
    const table = w ? this.table(vm, w) : undefined;
    const readList = (gpa: number, n: number): bigint[] =>
      decodeTceList(readGuestRam(req.guestMemory, this.env.topology.ramDir, vm, gpa, n * TCE_ENTRY_SIZE), n);
    const d = decideTce(h, table ? w : undefined, readList);
    if (d.kind === 'punt' || !table) {
      this.counters.punts += 1;
      return undefined;
    }
    if (d.kind === 'reject') {
      this.counters.rejected += 1;
      return { status: d.status, payload: EMPTY };
    }
    // One TCE_UPDATE per hypercall (vfio kills the TCE cache after each of its TCEs); a stuff
    // beyond one list's worth (Linux never sends one) goes in list-sized pieces, as TceUpdate is bounded.
    const window = w ?? DMA32_WINDOW;
    const page = tcePageSize(window);
    for (let done = 0; done < d.tces.length; done += MAX_TCES_PER_HCALL) {
      const tces = d.tces.slice(done, done + MAX_TCES_PER_HCALL);
      const ioba = d.ioba + done * page;
      this.counters.tceUpdates += 1;
      const r = await ctx.call('vfio', 'TCE_UPDATE', encodeTceUpdate({ liobn: Number(liobn), ioba, tces }));
      if (r.status !== H_RC.SUCCESS) return { status: r.status, payload: EMPTY };
      // kvmppc_tce_put: the guest's view, once the hardware table holds the entries.
      const first = (ioba - window.offset) / page;
      tces.forEach((t, i) => table.set(first + i, t));
      this.counters.tcesWritten += tces.length;
    }
    return { status: H_RC.SUCCESS, payload: EMPTY };
  }

  stats(): Record<string, number> {
    return { ...this.counters };
  }
}

export const kvmDevice: KvmDeviceFactory = (env) => new InKernelTce(env);
