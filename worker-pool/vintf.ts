/**
 * The VINTF registers the VCMDQ workers read while consuming, in one SharedArrayBuffer for all of
 * a CMDQV's VINTFs: CONFIG (EN, HYP_OWN), the VMID stamped into guest TLBIs, and the
 * SID_MATCH/SID_REPLACE pairs (SID_MATCH = (vSID << 1) | 1, bit 0 the valid bit; SID_REPLACE =
 * pSID). The main thread (cmdqv.ts) writes them with Atomics.store; workers read them with
 * Atomics.load, so reprogramming takes effect for the next command consumed.
 */

export const V_CONFIG = 0;
export const V_VMID = 1;
export const V_PAIRS = 2;
export const V_PAIR_BASE = 16;

export const VINTF_EN = 1;
export const VINTF_HYP_OWN = 2;

/** Int32 words per VINTF, a multiple of 16 so each VINTF starts on its own 64-byte line. */
export function vintfStride(sidPairs: number): number {
  return Math.ceil((V_PAIR_BASE + 2 * sidPairs) / 16) * 16;
}

export function sidMatch(vsid: number): number {
  return ((vsid << 1) | 1) >>> 0;
}

/**
 * The pSID a valid SID_MATCH pair maps `vsid` to, or -1 when no pair matches (hardware then refuses
 * the command as an invalid SID). `base` is the VINTF's first word.
 */
export function replaceSid(table: Int32Array, base: number, vsid: number): number {
  const pairs = Atomics.load(table, base + V_PAIRS);
  const match = sidMatch(vsid) | 0;
  for (let i = 0, w = base + V_PAIR_BASE; i < pairs; i++, w += 2) {
    if (Atomics.load(table, w) === match) return Atomics.load(table, w + 1) >>> 0;
  }
  return -1;
}
