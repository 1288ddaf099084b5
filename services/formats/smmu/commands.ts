/**
 * SMMUv3 command codec: the 16-byte command format shared by the SMMU CMDQ and every CMDQV VCMDQ.
 * Field positions follow /work/shared/reference/smmuv3.md. A command is two little-endian 64-bit
 * words w0 and w1; internally they are handled as four 32-bit dwords (dw0 = w0[31:0],
 * dw1 = w0[63:32], dw2 = w1[31:0], dw3 = w1[63:32]) so the numeric fields never need a BigInt.
 * Only the address fields (all inside w1) go through BigInt.
 */

export const CMD_SIZE = 16;

export const Opcode = {
  PREFETCH_CONFIG: 0x01,
  PREFETCH_ADDR: 0x02,
  CFGI_STE: 0x03,
  CFGI_ALL: 0x04,
  CFGI_CD: 0x05,
  CFGI_CD_ALL: 0x06,
  TLBI_NH_ALL: 0x10,
  TLBI_NH_ASID: 0x11,
  TLBI_NH_VA: 0x12,
  TLBI_NH_VAA: 0x13,
  TLBI_EL2_ALL: 0x20,
  TLBI_EL2_ASID: 0x21,
  TLBI_EL2_VA: 0x22,
  TLBI_EL2_VAA: 0x23,
  TLBI_S12_VMALL: 0x28,
  TLBI_S2_IPA: 0x2a,
  TLBI_NSNH_ALL: 0x30,
  ATC_INV: 0x40,
  PRI_RESP: 0x41,
  RESUME: 0x44,
  STALL_TERM: 0x45,
  CMD_SYNC: 0x46,
} as const;

export type OpcodeName = keyof typeof Opcode | 'ILLEGAL';

/** CMD_SYNC completion signal (CS). 3 is reserved and makes the command illegal. */
export const SyncCs = { NONE: 0, IRQ: 1, SEV: 2 } as const;

/** TLBI granule (TG) code to bytes; index 0 means "not a range". */
const TG_BYTES = [0, 4096, 16384, 65536] as const;

export type NumberFieldName =
  | 'vmid' | 'asid' | 'num' | 'scale' | 'leaf' | 'ttl' | 'tg' | 'sid' | 'ssid' | 'ssv' | 'global'
  | 'size' | 'cs' | 'msh' | 'msiattr' | 'msidata' | 'range' | 'grpid' | 'resp' | 'stag';
export type AddressFieldName = 'va' | 'ipa' | 'addr' | 'msiaddr';
export type FieldName = NumberFieldName | AddressFieldName;

export interface CommandFields {
  vmid?: number;
  asid?: number;
  num?: number;
  scale?: number;
  leaf?: number;
  ttl?: number;
  tg?: number;
  /** Full virtual address, 4K aligned. */
  va?: bigint;
  /** Full intermediate physical address, 4K aligned, below 2^52. */
  ipa?: bigint;
  sid?: number;
  ssid?: number;
  ssv?: number;
  global?: number;
  size?: number;
  /** Full address (ATC_INV, PREFETCH_ADDR), 4K aligned. */
  addr?: bigint;
  cs?: number;
  msh?: number;
  msiattr?: number;
  msidata?: number;
  /** Full MSI address, 4-byte aligned, below 2^52. */
  msiaddr?: bigint;
  range?: number;
  grpid?: number;
  resp?: number;
  stag?: number;
}

export interface SmmuCommand {
  opcode: number;
  fields: CommandFields;
}

export type DecodedCommand = SmmuCommand & { name: OpcodeName; error?: 'CERROR_ILL' };

/** Where a field sits: bits [hi:lo] of 64-bit word `word` (0 = w0, 1 = w1). */
export interface FieldInfo {
  readonly name: FieldName;
  readonly kind: 'number' | 'address';
  readonly word: 0 | 1;
  readonly hi: number;
  readonly lo: number;
}

interface NumberLayout extends FieldInfo {
  readonly kind: 'number';
  readonly name: NumberFieldName;
  /** Byte offset of the 32-bit dword holding the field (0, 4, 8 or 12). */
  readonly byte: number;
  readonly shift: number;
  readonly mask: number;
  readonly max: number;
}

interface AddressLayout extends FieldInfo {
  readonly kind: 'address';
  readonly name: AddressFieldName;
  /** Bits of w1 the address occupies; the address is stored unshifted (bit n of the address is bit n of w1). */
  readonly mask: bigint;
}

type Layout = NumberLayout | AddressLayout;

function num(name: NumberFieldName, word: 0 | 1, hi: number, lo: number): NumberLayout {
  // Every numeric field sits inside one 32-bit half, so it can be read with one readUInt32LE.
  const byte = word * 8 + (lo >= 32 ? 4 : 0);
  const shift = lo % 32;
  const width = hi - lo + 1;
  if (shift + width > 32) throw new Error(`internal: field ${name} crosses a dword`);
  const max = 2 ** width - 1;
  return { name, kind: 'number', word, hi, lo, byte, shift, mask: max, max };
}

function address(name: AddressFieldName, hi: number, lo: number): AddressLayout {
  const mask = ((1n << BigInt(hi + 1)) - 1n) & ~((1n << BigInt(lo)) - 1n);
  return { name, kind: 'address', word: 1, hi, lo, mask };
}

// Field positions (smmuv3.md). Same-named fields at different positions get separate descriptors.
const SSV = num('ssv', 0, 11, 11);
const SSID = num('ssid', 0, 31, 12);
const SID = num('sid', 0, 63, 32);
const CFGI_LEAF = num('leaf', 1, 0, 0);
const CFGI_RANGE = num('range', 1, 4, 0);
const TLBI_NUM = num('num', 0, 16, 12);
const TLBI_SCALE = num('scale', 0, 24, 20);
const TLBI_VMID = num('vmid', 0, 47, 32);
const TLBI_ASID = num('asid', 0, 63, 48);
const TLBI_LEAF = num('leaf', 1, 0, 0);
const TLBI_TTL = num('ttl', 1, 9, 8);
const TLBI_TG = num('tg', 1, 11, 10);
const TLBI_VA = address('va', 63, 12);
const TLBI_IPA = address('ipa', 51, 12);
const ATC_GLOBAL = num('global', 0, 9, 9);
const ATC_SIZE = num('size', 1, 5, 0);
const ATC_ADDR = address('addr', 63, 12);
const PREFETCH_SIZE = num('size', 1, 4, 0);
const PREFETCH_ADDR = address('addr', 63, 12);
// PRI_RESP / RESUME positions are not in smmuv3.md; they follow Linux arm-smmu-v3.h.
const PRI_GRPID = num('grpid', 1, 8, 0);
const PRI_RESP = num('resp', 1, 13, 12);
const RESUME_RESP = num('resp', 0, 13, 12);
const RESUME_STAG = num('stag', 1, 15, 0);
const SYNC_CS = num('cs', 0, 13, 12);
const SYNC_MSH = num('msh', 0, 23, 22);
const SYNC_MSIATTR = num('msiattr', 0, 27, 24);
const SYNC_MSIDATA = num('msidata', 0, 63, 32);
const SYNC_MSIADDR = address('msiaddr', 51, 2);

const TLBI_RANGE_FIELDS = [TLBI_NUM, TLBI_SCALE, TLBI_LEAF, TLBI_TTL, TLBI_TG] as const;

/** The fields each legal opcode uses, in the order formatCommand prints them. */
const LAYOUT_BY_NAME: Record<keyof typeof Opcode, readonly Layout[]> = {
  PREFETCH_CONFIG: [SID],
  PREFETCH_ADDR: [SID, SSID, SSV, PREFETCH_SIZE, PREFETCH_ADDR],
  CFGI_STE: [SID, CFGI_LEAF],
  // CFGI_STE_RANGE: the SID is where the range starts (aligned down); CFGI_ALL is RANGE=31.
  CFGI_ALL: [SID, CFGI_RANGE],
  CFGI_CD: [SID, SSID, CFGI_LEAF],
  CFGI_CD_ALL: [SID],
  TLBI_NH_ALL: [TLBI_VMID],
  TLBI_NH_ASID: [TLBI_VMID, TLBI_ASID],
  TLBI_NH_VA: [TLBI_VMID, TLBI_ASID, ...TLBI_RANGE_FIELDS, TLBI_VA],
  TLBI_NH_VAA: [TLBI_VMID, ...TLBI_RANGE_FIELDS, TLBI_VA],
  TLBI_EL2_ALL: [],
  TLBI_EL2_ASID: [TLBI_ASID],
  TLBI_EL2_VA: [TLBI_ASID, ...TLBI_RANGE_FIELDS, TLBI_VA],
  TLBI_EL2_VAA: [...TLBI_RANGE_FIELDS, TLBI_VA],
  TLBI_S12_VMALL: [TLBI_VMID],
  TLBI_S2_IPA: [TLBI_VMID, ...TLBI_RANGE_FIELDS, TLBI_IPA],
  TLBI_NSNH_ALL: [],
  ATC_INV: [SID, SSID, SSV, ATC_GLOBAL, ATC_SIZE, ATC_ADDR],
  PRI_RESP: [SID, SSID, SSV, PRI_GRPID, PRI_RESP],
  RESUME: [SID, RESUME_RESP, RESUME_STAG],
  STALL_TERM: [SID],
  CMD_SYNC: [SYNC_CS, SYNC_MSH, SYNC_MSIATTR, SYNC_MSIDATA, SYNC_MSIADDR],
};

interface OpcodeEntry {
  readonly name: keyof typeof Opcode;
  readonly layout: readonly Layout[];
  readonly numbers: readonly NumberLayout[];
  readonly addresses: readonly AddressLayout[];
  readonly used: ReadonlySet<string>;
}

// Indexed by opcode byte; undefined means illegal (including the EL3 opcodes 0x18/0x1a).
const TABLE: (OpcodeEntry | undefined)[] = new Array<OpcodeEntry | undefined>(256).fill(undefined);
for (const name of Object.keys(Opcode) as (keyof typeof Opcode)[]) {
  const layout = LAYOUT_BY_NAME[name];
  TABLE[Opcode[name]] = {
    name,
    layout,
    numbers: layout.filter((l): l is NumberLayout => l.kind === 'number'),
    addresses: layout.filter((l): l is AddressLayout => l.kind === 'address'),
    used: new Set(layout.map((l) => l.name)),
  };
}

const NO_FIELDS: readonly FieldInfo[] = [];

export function opcodeName(op: number): OpcodeName {
  return (Number.isInteger(op) && op >= 0 && op <= 0xff ? TABLE[op]?.name : undefined) ?? 'ILLEGAL';
}

export function isLegalOpcode(op: number): boolean {
  return Number.isInteger(op) && op >= 0 && op <= 0xff && TABLE[op] !== undefined;
}

/**
 * Whether the command whose w0[31:0] is `dw0` is illegal (CERROR_ILL): an unknown opcode, or
 * CMD_SYNC with the reserved CS=3. The one rule every queue (CMDQ, VCMDQ, vSMMU) applies.
 */
export function illegalCommand(dw0: number): boolean {
  const op = dw0 & 0xff;
  return TABLE[op] === undefined || (op === Opcode.CMD_SYNC && ((dw0 >>> 12) & 3) === 3);
}

/** The fields an opcode uses with their bit positions; empty for an illegal opcode. */
export function opcodeFields(op: number): readonly FieldInfo[] {
  return (isLegalOpcode(op) ? TABLE[op]?.layout : undefined) ?? NO_FIELDS;
}

function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

function checkRoom(buf: Buffer, offset: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + CMD_SIZE > buf.length) {
    throw new RangeError(`command at offset ${offset} does not fit a ${buf.length}-byte buffer`);
  }
}

/**
 * Writes `cmd` as two little-endian 64-bit words at `out[offset..offset+16)`. Fields the opcode
 * does not use must be absent (or undefined); missing used fields encode as 0. Any opcode byte is
 * accepted, so tests and fault injection can write illegal commands (they carry no fields).
 */
export function encodeCommand(cmd: SmmuCommand, out: Buffer, offset = 0): void {
  const op = cmd.opcode;
  if (!Number.isInteger(op) || op < 0 || op > 0xff) {
    throw new RangeError(`opcode ${op} does not fit 8 bits (limit 0xff)`);
  }
  checkRoom(out, offset);
  const entry = TABLE[op];
  const f = cmd.fields;
  for (const key in f) {
    if (f[key as FieldName] !== undefined && !entry?.used.has(key)) {
      throw new TypeError(`field ${key} is not used by ${entry?.name ?? `illegal opcode 0x${op.toString(16)}`}`);
    }
  }
  // Four dword accumulators in locals rather than an array: encode runs in the hot loop.
  let d0 = op;
  let d1 = 0;
  let d2 = 0;
  let d3 = 0;
  if (entry !== undefined) {
    for (const l of entry.numbers) {
      const v = f[l.name];
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > l.max) {
        throw new RangeError(`field ${l.name} = ${String(v)} does not fit bits [${l.hi}:${l.lo}] (limit ${l.max})`);
      }
      const bits = v << l.shift;
      if (l.byte === 0) d0 |= bits;
      else if (l.byte === 4) d1 |= bits;
      else if (l.byte === 8) d2 |= bits;
      else d3 |= bits;
    }
    for (const l of entry.addresses) {
      const v = f[l.name];
      if (v === undefined) continue;
      if (typeof v !== 'bigint' || v < 0n || (v & ~l.mask) !== 0n) {
        throw new RangeError(
          `field ${l.name} = ${typeof v === 'bigint' ? hex(v) : String(v)} does not fit bits [${l.hi}:${l.lo}]` +
            ` (limit ${hex(l.mask)}: below 2^${l.hi + 1} and ${2 ** l.lo}-byte aligned)`,
        );
      }
      d2 |= Number(v & 0xffffffffn);
      d3 |= Number(v >> 32n);
    }
  }
  out.writeUInt32LE(d0 >>> 0, offset);
  out.writeUInt32LE(d1 >>> 0, offset + 4);
  out.writeUInt32LE(d2 >>> 0, offset + 8);
  out.writeUInt32LE(d3 >>> 0, offset + 12);
}

/**
 * Decodes the 16 bytes at `offset`. Never throws on command content: an unknown opcode gives
 * name ILLEGAL with no fields, CMD_SYNC with CS=3 keeps its name and fields but carries
 * error CERROR_ILL. Bits outside the opcode's fields are ignored.
 */
export function decodeCommand(buf: Buffer, offset = 0): DecodedCommand {
  checkRoom(buf, offset);
  const op = buf.readUInt8(offset);
  const entry = TABLE[op];
  const fields: CommandFields = {};
  if (entry === undefined) return { opcode: op, name: 'ILLEGAL', fields, error: 'CERROR_ILL' };
  for (const l of entry.layout) {
    if (l.kind === 'number') {
      fields[l.name] = ((buf.readUInt32LE(offset + l.byte) >>> l.shift) & l.mask) >>> 0;
    } else {
      fields[l.name] = buf.readBigUInt64LE(offset + 8) & l.mask;
    }
  }
  if (illegalCommand(buf.readUInt32LE(offset))) return { opcode: op, name: entry.name, fields, error: 'CERROR_ILL' };
  return { opcode: op, name: entry.name, fields };
}

// ---- Fast paths: single fields read or patched in place, no object built. ----
// They do not check the opcode; the caller knows which command sits in the slot.

export function readOpcode(buf: Buffer, offset = 0): number {
  return buf.readUInt8(offset);
}

/** TLBI VMID, w0[47:32]. */
export function readVmid(buf: Buffer, offset = 0): number {
  return buf.readUInt16LE(offset + 4);
}

/** TLBI ASID, w0[63:48]. */
export function readAsid(buf: Buffer, offset = 0): number {
  return buf.readUInt16LE(offset + 6);
}

/** SID of CFGI/PREFETCH/ATC_INV/PRI_RESP/RESUME/STALL_TERM, w0[63:32]. */
export function readSid(buf: Buffer, offset = 0): number {
  return buf.readUInt32LE(offset + 4);
}

/** SSID, w0[31:12]. */
export function readSsid(buf: Buffer, offset = 0): number {
  return (buf.readUInt32LE(offset) >>> 12) & 0xfffff;
}

/** Stamps a VMID into a TLBI command in place (what the kernel / CMDQV does for a guest's TLBI). */
export function writeVmid(buf: Buffer, offset: number, vmid: number): void {
  if (!Number.isInteger(vmid) || vmid < 0 || vmid > 0xffff) {
    throw new RangeError(`field vmid = ${vmid} does not fit bits [47:32] (limit 65535)`);
  }
  buf.writeUInt16LE(vmid, offset + 4);
}

/** Replaces the SID of a SID-carrying command in place (vSID -> pSID). */
export function writeSid(buf: Buffer, offset: number, sid: number): void {
  if (!Number.isInteger(sid) || sid < 0 || sid > 0xffffffff) {
    throw new RangeError(`field sid = ${sid} does not fit bits [63:32] (limit 4294967295)`);
  }
  buf.writeUInt32LE(sid, offset + 4);
}

// ---- Builders. Optional fields default to 0. ----

interface TlbiRangeArgs {
  num?: number;
  scale?: number;
  tg?: number;
  ttl?: number;
  leaf?: number;
}

function rangeFields(a: TlbiRangeArgs): CommandFields {
  return { num: a.num ?? 0, scale: a.scale ?? 0, leaf: a.leaf ?? 0, ttl: a.ttl ?? 0, tg: a.tg ?? 0 };
}

export function prefetchConfig(a: { sid: number }): SmmuCommand {
  return { opcode: Opcode.PREFETCH_CONFIG, fields: { sid: a.sid } };
}

export function cfgiSte(a: { sid: number; leaf?: number }): SmmuCommand {
  return { opcode: Opcode.CFGI_STE, fields: { sid: a.sid, leaf: a.leaf ?? 0 } };
}

/** CFGI_ALL is CFGI_STE_RANGE with RANGE=31. */
export function cfgiAll(): SmmuCommand {
  return { opcode: Opcode.CFGI_ALL, fields: { range: 31 } };
}

/** CFGI_STE_RANGE (opcode 0x04, named CFGI_ALL): the 2^(RANGE+1) StreamIDs from `sid` aligned down. */
export function cfgiSteRange(a: { sid: number; range: number }): SmmuCommand {
  return { opcode: Opcode.CFGI_ALL, fields: { sid: a.sid, range: a.range } };
}

export function cfgiCd(a: { sid: number; ssid: number; leaf?: number }): SmmuCommand {
  return { opcode: Opcode.CFGI_CD, fields: { sid: a.sid, ssid: a.ssid, leaf: a.leaf ?? 0 } };
}

export function cfgiCdAll(a: { sid: number }): SmmuCommand {
  return { opcode: Opcode.CFGI_CD_ALL, fields: { sid: a.sid } };
}

export function tlbiNhAll(a: { vmid: number }): SmmuCommand {
  return { opcode: Opcode.TLBI_NH_ALL, fields: { vmid: a.vmid } };
}

export function tlbiNhAsid(a: { vmid: number; asid: number }): SmmuCommand {
  return { opcode: Opcode.TLBI_NH_ASID, fields: { vmid: a.vmid, asid: a.asid } };
}

export function tlbiNhVa(a: { vmid: number; asid: number; va: bigint } & TlbiRangeArgs): SmmuCommand {
  return { opcode: Opcode.TLBI_NH_VA, fields: { vmid: a.vmid, asid: a.asid, ...rangeFields(a), va: a.va } };
}

export function tlbiNhVaa(a: { vmid: number; va: bigint } & TlbiRangeArgs): SmmuCommand {
  return { opcode: Opcode.TLBI_NH_VAA, fields: { vmid: a.vmid, ...rangeFields(a), va: a.va } };
}

export function tlbiS12Vmall(a: { vmid: number }): SmmuCommand {
  return { opcode: Opcode.TLBI_S12_VMALL, fields: { vmid: a.vmid } };
}

export function tlbiS2Ipa(a: { vmid: number; ipa: bigint } & TlbiRangeArgs): SmmuCommand {
  return { opcode: Opcode.TLBI_S2_IPA, fields: { vmid: a.vmid, ...rangeFields(a), ipa: a.ipa } };
}

export function tlbiNsnhAll(): SmmuCommand {
  return { opcode: Opcode.TLBI_NSNH_ALL, fields: {} };
}

/** ATC_INV; SSV defaults to 1 when an SSID is given, else 0. SIZE 52 invalidates everything. */
export function atcInv(a: {
  sid: number;
  ssid?: number;
  ssv?: number;
  global?: number;
  size: number;
  addr: bigint;
}): SmmuCommand {
  return {
    opcode: Opcode.ATC_INV,
    fields: {
      sid: a.sid,
      ssid: a.ssid ?? 0,
      ssv: a.ssv ?? (a.ssid === undefined ? 0 : 1),
      global: a.global ?? 0,
      size: a.size,
      addr: a.addr,
    },
  };
}

/** PRI_RESP; SSV defaults to 1 when an SSID is given, else 0. */
export function priResp(a: { sid: number; ssid?: number; ssv?: number; grpid: number; resp: number }): SmmuCommand {
  return {
    opcode: Opcode.PRI_RESP,
    fields: {
      sid: a.sid,
      ssid: a.ssid ?? 0,
      ssv: a.ssv ?? (a.ssid === undefined ? 0 : 1),
      grpid: a.grpid,
      resp: a.resp,
    },
  };
}

export function resume(a: { sid: number; stag: number; resp: number }): SmmuCommand {
  return { opcode: Opcode.RESUME, fields: { sid: a.sid, resp: a.resp, stag: a.stag } };
}

export function cmdSync(
  a: { cs?: number; msh?: number; msiattr?: number; msidata?: number; msiaddr?: bigint } = {},
): SmmuCommand {
  return {
    opcode: Opcode.CMD_SYNC,
    fields: {
      cs: a.cs ?? SyncCs.NONE,
      msh: a.msh ?? 0,
      msiattr: a.msiattr ?? 0,
      msidata: a.msidata ?? 0,
      msiaddr: a.msiaddr ?? 0n,
    },
  };
}

/**
 * Span of a TLBI: (NUM+1) << SCALE pages of granule TG. TG=0 is not a range: the command names a
 * single address, reported as granule 0 (no page size implied) and pages 1.
 */
export function tlbiRangePages(f: Pick<CommandFields, 'num' | 'scale' | 'tg'>): { granule: number; pages: number } {
  const granule = TG_BYTES[(f.tg ?? 0) & 3] ?? 0;
  if (granule === 0) return { granule: 0, pages: 1 };
  // SCALE can be 31: multiply instead of shifting so the count does not overflow 32 bits.
  return { granule, pages: ((f.num ?? 0) + 1) * 2 ** (f.scale ?? 0) };
}

/** The JSON shape the CLI prints: addresses as 0x hex strings, other fields as numbers. */
export function formatCommand(d: DecodedCommand): {
  opcode: number;
  name: string;
  fields: Record<string, number | string>;
  error?: string;
} {
  const fields: Record<string, number | string> = {};
  for (const l of opcodeFields(d.opcode)) {
    const v = d.fields[l.name];
    if (v === undefined) continue;
    fields[l.name] = typeof v === 'bigint' ? hex(v) : v;
  }
  const out: { opcode: number; name: string; fields: Record<string, number | string>; error?: string } = {
    opcode: d.opcode,
    name: d.name,
    fields,
  };
  if (d.error !== undefined) out.error = d.error;
  return out;
}

const HEX_WORD = /^0[xX]([0-9a-fA-F]+)$/;

/** Parses a 0x-prefixed hex number of at most 64 bits (CLI input for raw command words). */
export function parseHexWord(s: string): bigint {
  const m = HEX_WORD.exec(s.trim());
  if (m === null) throw new Error(`not a 0x-prefixed hex number: ${JSON.stringify(s)}`);
  const v = BigInt(`0x${m[1] ?? ''}`);
  if (v > 0xffffffffffffffffn) throw new Error(`hex number ${s.trim()} does not fit 64 bits`);
  return v;
}

/** TLBI range NUM is 5 bits (CMDQ_TLBI_RANGE_NUM_MAX). */
const RANGE_NUM_MAX = 31;
/** log2 of the leaf page size of every domain here (4 KiB): TG = (12 - 10) / 2 = 1. */
const LEAF_PAGE_LOG2 = 12;
const TG_4K = (LEAF_PAGE_LOG2 - 10) / 2;

/** How a driver asks for a range invalidation (the arguments of Linux's __arm_smmu_tlb_inv_range). */
export interface RangeInvalidation {
  /**
   * Leaf entries only (the unmap's gather: io-pgtable's tlb_add_page; default) or any level (a
   * table walk, SVA's MMU notifier): a leaf invalidation carries the TTL of its granule, a non-leaf
   * one TTL 0.
   */
  leaf?: boolean;
  /**
   * log2 of the granule the unmap gathered (gather->pgsize): 12 for 4 KiB pages (default), 21 for
   * 2 MiB blocks, 30 for 1 GiB blocks.
   */
  granuleLog2?: number;
  /** The SMMU implements range invalidation (IDR3.RIL, ARM_SMMU_FEAT_RANGE_INV); default true. */
  ril?: boolean;
}

/**
 * The TLBI commands covering `pages` 4 KiB pages from `addr`, as Linux's __arm_smmu_tlb_inv_range
 * builds them (arm_smmu_cmdq_batch_add_range in v6.13+):
 *  - with RIL: TG from the leaf page size; for a leaf invalidation TTL = 4 - (log2(granule) - 3) /
 *    (tg - 3) (3 for a 4 KiB page, 2 for a 2 MiB block, 1 for a 1 GiB one), for a non-leaf one TTL
 *    0 and, when the page count's low five bits are 1, one page more (so SCALE and NUM are not both
 *    0: the SVA corner case); then each command covers NUM+1 chunks of 2^SCALE pages, SCALE the
 *    lowest set bit of the pages left, NUM + 1 their next five bits;
 *  - without RIL: one command per granule, TG, TTL, NUM and SCALE 0 (the address alone).
 */
function rangeCommands(addr: number, pages: number, make: (at: bigint, r: TlbiRangeArgs) => SmmuCommand, opts: RangeInvalidation = {}): SmmuCommand[] {
  const leaf = opts.leaf ?? true;
  const granuleLog2 = opts.granuleLog2 ?? LEAF_PAGE_LOG2;
  const cmds: SmmuCommand[] = [];
  if (opts.ril === false) {
    const granulePages = 2 ** (granuleLog2 - LEAF_PAGE_LOG2);
    for (let done = 0; done < pages; done += granulePages) cmds.push(make(BigInt(addr + done * 4096), { leaf: leaf ? 1 : 0 }));
    return cmds;
  }
  const ttl = leaf ? 4 - Math.floor((granuleLog2 - 3) / (LEAF_PAGE_LOG2 - 3)) : 0;
  let at = addr;
  let left = pages;
  if (!leaf && left % 32 === 1) left += 1;
  while (left > 0) {
    // The lowest set bit of the count (SCALE is 5 bits), in arithmetic that holds past 2^32 pages.
    let scale = 0;
    while (scale < 31 && Math.floor(left / 2 ** scale) % 2 === 0) scale += 1;
    const num = Math.min(Math.floor(left / 2 ** scale) % 32 || 1, RANGE_NUM_MAX);
    cmds.push(make(BigInt(at), { num: num - 1, scale, tg: TG_4K, ttl, leaf: leaf ? 1 : 0 }));
    const covered = num * 2 ** scale;
    at += covered * 4096;
    left -= covered;
  }
  return cmds;
}

/** TLBI_NH_VA commands for a stage-1 range of one ASID (the guest's unmap; SVA's notifier with leaf false). */
export function tlbiNhVaRange(asid: number, iova: number, pages: number, vmid = 0, opts: RangeInvalidation = {}): SmmuCommand[] {
  return rangeCommands(iova, pages, (va, r) => tlbiNhVa({ vmid, asid, va, ...r }), opts);
}

/** TLBI_S2_IPA commands for a stage-2 range of one VMID (the host's unmap of a shadow or stage-2 table). */
export function tlbiS2IpaRange(vmid: number, ipa: number, pages: number, opts: RangeInvalidation = {}): SmmuCommand[] {
  return rangeCommands(ipa, pages, (at, r) => tlbiS2Ipa({ vmid, ipa: at, ...r }), opts);
}

/** ATC_INV SIZE that invalidates every address (ATC_INV_SIZE_ALL). */
export const ATC_INV_SIZE_ALL = 52;

/**
 * The ATC_INV for `pages` 4 KiB pages from `iova` of one StreamID, as arm_smmu_atc_inv_to_cmd builds
 * it: the smallest power-of-two span of pages that covers the range (log2 of it in SIZE), the address
 * aligned down to it; `pages` 0 invalidates everything (SIZE_ALL). With an SSID (a PASID), SSV is set.
 */
export function atcInvRange(sid: number, iova: number, pages: number, ssid?: number): SmmuCommand {
  const sub = ssid === undefined ? {} : { ssid };
  if (pages === 0) return atcInv({ sid, ...sub, size: ATC_INV_SIZE_ALL, addr: 0n });
  const first = BigInt(Math.floor(iova / 4096));
  const last = BigInt(Math.floor((iova + pages * 4096 - 1) / 4096));
  // fls_long(first ^ last): the bits above which first and last agree.
  const log2Span = (first ^ last).toString(2).length - ((first ^ last) === 0n ? 1 : 0);
  const start = first & ~((1n << BigInt(log2Span)) - 1n);
  return atcInv({ sid, ...sub, size: log2Span, addr: start * 4096n });
}
