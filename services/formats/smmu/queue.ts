/**
 * Queue pointer arithmetic for SMMU-style circular queues (CMDQ, EVTQ, each CMDQV VCMDQ) of
 * 2^log2 entries. PROD and CONS are 32-bit register values: bits [log2-1:0] the index, bit log2 the
 * wrap flag, and for CONS bits [30:24] the ERR field. All functions are pure and allocation-free
 * so they can run on SharedArrayBuffer rings in worker threads; results are unsigned 32-bit.
 *
 * log2 must be 0..23 so the wrap bit stays below CONS.ERR; the functions do not check it (hot
 * path), call assertLog2 once when a queue is configured.
 */

export const CERROR = { NONE: 0, ILL: 1, ABT: 2, ATC_INV_SYNC: 3 } as const;
export type CError = (typeof CERROR)[keyof typeof CERROR];

/** Largest log2 whose wrap bit (bit log2) does not collide with CONS.ERR [30:24]. */
export const MAX_LOG2 = 23;

const ERR_SHIFT = 24;
const ERR_MASK = 0x7f << ERR_SHIFT;

export function assertLog2(log2: number): void {
  if (!Number.isInteger(log2) || log2 < 0 || log2 > MAX_LOG2) {
    throw new RangeError(`queue log2size ${log2} out of range 0..${MAX_LOG2}`);
  }
}

/** Number of entries in the queue. */
export function size(log2: number): number {
  return 1 << log2;
}

/** Index part, bits [log2-1:0]. */
export function index(reg: number, log2: number): number {
  return (reg & ((1 << log2) - 1)) >>> 0;
}

/** Wrap flag, bit log2 (0 or 1). */
export function wrap(reg: number, log2: number): number {
  return (reg >>> log2) & 1;
}

/** Index and wrap together, bits [log2:0]: the part that takes part in queue arithmetic. */
export function ptr(reg: number, log2: number): number {
  return (reg & ((2 << log2) - 1)) >>> 0;
}

/** Empty: index and wrap both equal. */
export function isEmpty(prod: number, cons: number, log2: number): boolean {
  return ((prod ^ cons) & ((2 << log2) - 1)) === 0;
}

/** Full: index equal, wrap different. */
export function isFull(prod: number, cons: number, log2: number): boolean {
  return ((prod ^ cons) & ((2 << log2) - 1)) === 1 << log2;
}

/** Entries written by the producer and not yet consumed, 0..2^log2. */
export function used(prod: number, cons: number, log2: number): number {
  // Index+wrap is a counter modulo 2^(log2+1); their difference is the fill level.
  return (prod - cons) & ((2 << log2) - 1);
}

/** Entries the producer may still write, 0..2^log2. */
export function free(prod: number, cons: number, log2: number): number {
  return (1 << log2) - used(prod, cons, log2);
}

/**
 * Advances index+wrap by n (0 <= n <= 2^log2), toggling wrap when the index passes the end.
 * Bits above the wrap flag (CONS.ERR, overflow flags) are kept as they are.
 */
export function inc(reg: number, log2: number, n = 1): number {
  const mask = (2 << log2) - 1;
  return ((reg & ~mask) | ((reg + n) & mask)) >>> 0;
}

/** Byte offset of the entry a PROD/CONS value points at, for entries of entrySize bytes. */
export function slotOffset(reg: number, log2: number, entrySize: number): number {
  return (reg & ((1 << log2) - 1)) * entrySize;
}

/** CONS.ERR, bits [30:24]. */
export function consErr(cons: number): number {
  return (cons >>> ERR_SHIFT) & 0x7f;
}

/** CONS with ERR replaced by err (0 clears it); index, wrap and bit 31 are kept. */
export function withConsErr(cons: number, err: number): number {
  if (!Number.isInteger(err) || err < 0 || err > 0x7f) {
    throw new RangeError(`CONS.ERR = ${err} does not fit bits [30:24] (limit 127)`);
  }
  return ((cons & ~ERR_MASK) | (err << ERR_SHIFT)) >>> 0;
}
