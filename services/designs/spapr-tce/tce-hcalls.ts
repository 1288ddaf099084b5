import { H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, MAX_TCES_PER_HCALL, TCE_PAGE_SIZE, type Hcall } from '../../formats/spapr-tce.js';

/**
 * How the guest reaches the hypervisor: `indirect` when the firmware offers hcall-multi-tce
 * (FW_FEATURE_PUT_TCE_IND and FW_FEATURE_STUFF_TCE, as QEMU does), `per-entry` without it.
 */
export type TceHcallMode = 'indirect' | 'per-entry';

/** One hypercall the guest will make, with the TCE list it writes to its list page first (indirect). */
export interface PlannedHcall {
  hcall: Hcall;
  /** First IOBA and number of TCEs it covers. */
  ioba: number;
  pages: number;
  list?: bigint[];
}

/**
 * The hypercalls that set `tces` from `ioba` on (tce_buildmulti_pSeriesLP): a single page, or no
 * multi-TCE support, goes one H_PUT_TCE per page (tce_build_pSeriesLP); otherwise one
 * H_PUT_TCE_INDIRECT per up to 512 TCEs, the list in the CPU's TCE page at `listGpa`. TCEs map
 * `pageSize` bytes each (a DDW's are larger).
 */
export function planMapHcalls(liobn: number, ioba: number, tces: readonly bigint[], mode: TceHcallMode, listGpa: number, pageSize = TCE_PAGE_SIZE): PlannedHcall[] {
  const out: PlannedHcall[] = [];
  if (tces.length === 1 || mode === 'per-entry') {
    tces.forEach((tce, i) => {
      const at = ioba + i * pageSize;
      out.push({ hcall: { nr: H_PUT_TCE, args: [BigInt(liobn), BigInt(at), tce] }, ioba: at, pages: 1 });
    });
    return out;
  }
  for (let done = 0; done < tces.length; done += MAX_TCES_PER_HCALL) {
    const list = tces.slice(done, done + MAX_TCES_PER_HCALL);
    const at = ioba + done * pageSize;
    out.push({ hcall: { nr: H_PUT_TCE_INDIRECT, args: [BigInt(liobn), BigInt(at), BigInt(listGpa), BigInt(list.length)] }, ioba: at, pages: list.length, list });
  }
  return out;
}

/**
 * The hypercalls that clear `pages` TCEs from `ioba` on (tce_freemulti_pSeriesLP): one H_STUFF_TCE
 * of TCE 0 per up to 512 pages with multi-TCE support (for a single page too), else one
 * H_PUT_TCE(0) per page (tce_free_pSeriesLP).
 */
export function planClearHcalls(liobn: number, ioba: number, pages: number, mode: TceHcallMode): PlannedHcall[] {
  const out: PlannedHcall[] = [];
  if (mode === 'per-entry') {
    for (let i = 0; i < pages; i++) {
      const at = ioba + i * TCE_PAGE_SIZE;
      out.push({ hcall: { nr: H_PUT_TCE, args: [BigInt(liobn), BigInt(at), 0n] }, ioba: at, pages: 1 });
    }
    return out;
  }
  for (let done = 0; done < pages; done += MAX_TCES_PER_HCALL) {
    const n = Math.min(MAX_TCES_PER_HCALL, pages - done);
    const at = ioba + done * TCE_PAGE_SIZE;
    out.push({ hcall: { nr: H_STUFF_TCE, args: [BigInt(liobn), BigInt(at), 0n, BigInt(n)] }, ioba: at, pages: n });
  }
  return out;
}
