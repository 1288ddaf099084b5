/**
 * Stream table entries and context descriptors (smmuv3.md), encoded as the host kernel and the
 * guest write them and decoded as the SMMU reads them. Only the fields vmsim models.
 */
export const STE_CONFIG = { ABORT: 0, BYPASS: 4, S1: 5, S2: 6, NESTED: 7 } as const;

export interface Ste {
  valid: boolean;
  config: number;
  /** Context-descriptor table address (an IPA when nested). */
  s1ContextPtr: number;
  /** log2 of the CD table's entries (S1CDMax): 0, one CD for SubstreamID 0 only. */
  s1CdMax?: number;
  vmid: number;
  /** Stage-2 table root (host-physical). */
  s2ttb: number;
}

export interface Cd {
  valid: boolean;
  asid: number;
  /** Stage-1 table root (an IPA when nested). */
  ttb0: number;
}

const LO = 2 ** 32;

/** STE: w0 V[0], CONFIG[3:1], S1CTXPTR[51:6], S1CDMAX[63:59]; w2 S2VMID[15:0]; w3 S2TTB[51:4]. */
export function encodeSte(s: Ste): Buffer {
  const b = Buffer.alloc(64);
  const ctx = s.s1ContextPtr - (s.s1ContextPtr % 64);
  b.writeUInt32LE(((ctx % LO) | ((s.config & 7) << 1) | (s.valid ? 1 : 0)) >>> 0, 0);
  b.writeUInt32LE(((Math.floor(ctx / LO) & 0xfffff) | (((s.s1CdMax ?? 0) & 0x1f) << 27)) >>> 0, 4);
  b.writeUInt32LE(s.vmid & 0xffff, 16);
  const ttb = s.s2ttb - (s.s2ttb % 16);
  b.writeUInt32LE(ttb % LO >>> 0, 24);
  b.writeUInt32LE(Math.floor(ttb / LO) & 0xfffff, 28);
  return b;
}

export function decodeSte(b: Buffer): Ste {
  const w0lo = b.readUInt32LE(0);
  return {
    valid: (w0lo & 1) === 1,
    config: (w0lo >>> 1) & 7,
    s1ContextPtr: (b.readUInt32LE(4) & 0xfffff) * LO + ((w0lo & ~0x3f) >>> 0),
    s1CdMax: b.readUInt32LE(4) >>> 27,
    vmid: b.readUInt32LE(16) & 0xffff,
    s2ttb: (b.readUInt32LE(28) & 0xfffff) * LO + ((b.readUInt32LE(24) & ~0xf) >>> 0),
  };
}

/** CD: w0 V[31], ASID[63:48]; w1 TTB0[51:4]. */
export function encodeCd(c: Cd): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(c.valid ? 0x8000_0000 : 0, 0);
  b.writeUInt32LE((c.asid & 0xffff) << 16 >>> 0, 4);
  const ttb = c.ttb0 - (c.ttb0 % 16);
  b.writeUInt32LE(ttb % LO >>> 0, 8);
  b.writeUInt32LE(Math.floor(ttb / LO) & 0xfffff, 12);
  return b;
}

export function decodeCd(b: Buffer): Cd {
  return {
    valid: (b.readUInt32LE(0) & 0x8000_0000) !== 0,
    asid: b.readUInt32LE(4) >>> 16,
    ttb0: (b.readUInt32LE(12) & 0xfffff) * LO + ((b.readUInt32LE(8) & ~0xf) >>> 0),
  };
}

/** Event record types (smmuv3.md). */
export const EVENT = {
  C_BAD_STE: 0x04,
  F_STREAM_DISABLED: 0x06,
  C_BAD_SUBSTREAMID: 0x08,
  C_BAD_CD: 0x0a,
  F_WALK_EABT: 0x0b,
  F_TRANSLATION: 0x10,
  F_ADDR_SIZE: 0x11,
  F_ACCESS: 0x12,
  F_PERMISSION: 0x13,
  F_TLB_CONFLICT: 0x20,
  F_CFG_CONFLICT: 0x21,
} as const;

/** A 32-byte event record: type [7:0], SID [63:32] of w0; input address in w2; S2 flag in w1 bit 39. */
export function encodeEvent(type: number, sid: number, inputAddr: number, stage2: boolean): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(type & 0xff, 0);
  b.writeUInt32LE(sid >>> 0, 4);
  b.writeUInt32LE(stage2 ? 1 << 7 : 0, 12);
  b.writeUInt32LE(inputAddr % LO >>> 0, 16);
  b.writeUInt32LE(Math.floor(inputAddr / LO) >>> 0, 20);
  return b;
}
