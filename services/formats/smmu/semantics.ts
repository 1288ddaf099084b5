/**
 * What each SMMUv3 command means, in one table: the IDs its scope covers, which queues accept it
 * and what cached state it drops. Every consumer of commands reads it: the executor (executor.ts)
 * that the pSMMU's main CMDQ and every VCMDQ worker run, the allow-lists (allow-lists.ts), the
 * kernel's HWPT_INVALIDATE conversion, the pSMMU's wasted-delivery accounting and the accelerated
 * vSMMU's dispatch. QEMU's emulated vSMMU (qemu/vsmmu-emulated.ts) keeps QEMU's own rules.
 *
 * Sources: reference/smmuv3.md (command fields and scopes), cmdqv.md (what a guest-owned VCMDQ
 * takes), iommufd.md (what IOMMU_HWPT_INVALIDATE takes and how it rewrites it).
 *
 * OPCODE_SEMANTICS is the table as records, for reading; the hot paths read the same facts as typed
 * arrays indexed by opcode (built from the records below), and decodeScope() reads a command's scope
 * from its four 32-bit dwords without allocating.
 */
import { Opcode } from './commands.js';

/** Bits of a command's scope: which IDs and ranges it names. */
export const Scope = {
  /** One StreamID (w0 SID [63:32]). */
  SID: 1 << 0,
  /** 2^(RANGE+1) StreamIDs from w0 SID aligned down (CFGI_STE_RANGE; RANGE 31 is every StreamID: CFGI_ALL). */
  SID_RANGE: 1 << 1,
  /** One SubstreamID (w0 SSID [31:12]), always. */
  SSID: 1 << 2,
  /** One SubstreamID when w0 SSV (bit 11) is set, else every substream of the stream. */
  SSID_IF_SSV: 1 << 3,
  /** One VMID (w0 [47:32]). */
  VMID: 1 << 4,
  /** One ASID (w0 [63:48]). */
  ASID: 1 << 5,
  /** A VA range: (NUM+1) << SCALE granules of TG from w1 VA [63:12]; TG=0 is the one page of VA. */
  VA: 1 << 6,
  /** An IPA range, as VA but from w1 IPA [51:12]. */
  IPA: 1 << 7,
  /** An ATS address range: 2^SIZE 4K pages from w1 ADDR [63:12] aligned down; SIZE 52 is every address. */
  ATS_ADDR: 1 << 8,
  /** Everything of its translation regime. */
  ALL: 1 << 9,
  /** The EL2 (host) regime instead of the non-secure EL1 one the guests use; carries no VMID. */
  EL2: 1 << 10,
} as const;

/** IOTLB entries a command drops, by its scope's IDs (the entry kinds of worker-pool/iotlb.ts). */
export const TlbDrop = {
  NONE: 0,
  /** Stage-1 and nested entries of the VMID and ASID in the VA range. */
  VA: 1,
  /** Stage-1 and nested entries of the VMID, every ASID, in the VA range. */
  VAA: 2,
  /** Every stage-1 and nested entry of the VMID and ASID. */
  ASID: 3,
  /** Every stage-1 and nested entry of the VMID (stage-2-only entries stay). */
  STAGE1: 4,
  /** Stage-2-only entries of the VMID in the IPA range (nested entries stay, see iotlb.ts). */
  IPA: 5,
  /** Every entry of the VMID. */
  VMID: 6,
  /** Every non-secure, non-EL2 entry: every entry this model holds. */
  ALL: 7,
} as const;
export type TlbDropKind = (typeof TlbDrop)[keyof typeof TlbDrop];

/**
 * Configuration-cache entries a command drops. The pSMMU caches a stream's STE and the CD read
 * through it as one entry per StreamID (as QEMU's SMMUTransCfg), so every kind drops the entries
 * of the StreamIDs in scope.
 */
export const ConfigDrop = {
  NONE: 0,
  /** The STE of the StreamID (and what was read through it). */
  STE: 1,
  /** The STEs of the StreamID range. */
  STE_RANGE: 2,
  /** The CD of the StreamID and SubstreamID. */
  CD: 3,
  /** Every CD of the StreamID. */
  CD_ALL: 4,
} as const;
export type ConfigDropKind = (typeof ConfigDrop)[keyof typeof ConfigDrop];

export interface OpcodeSemantics {
  /** Scope bits. */
  readonly scope: number;
  readonly tlb: TlbDropKind;
  readonly config: ConfigDropKind;
  /** Drops the device's ATC entries in scope (ATS). No device ATC is modelled: nothing to act on. */
  readonly atc: boolean;
  /** A guest-owned (HYP_OWN=0) VCMDQ takes it (cmdqv.md); anything else halts that queue with CERROR_ILL. */
  readonly guestVcmdq: boolean;
  /**
   * IOMMU_HWPT_INVALIDATE takes it, as this opcode (arm_vsmmu_convert_user_cmd rewrites
   * TLBI_NSNH_ALL to TLBI_NH_ALL); absent: refused with EIO (iommufd.md).
   */
  readonly hwptAs?: keyof typeof Opcode;
}

// Both a guest VCMDQ and HWPT_INVALIDATE substitute IDs the guest cannot be trusted with: the VMID
// of every command whose scope has one (the VINTF's or the vIOMMU's) and the StreamID of every
// command scoped to one StreamID (vSID -> pSID). The scope bits say which; nothing else needs to.

const NOTHING = { tlb: TlbDrop.NONE, config: ConfigDrop.NONE, atc: false, guestVcmdq: false } as const;

/** The table. Prefetches, PRI responses and stall commands name a stream but drop nothing. */
export const OPCODE_SEMANTICS = {
  PREFETCH_CONFIG: { ...NOTHING, scope: Scope.SID },
  PREFETCH_ADDR: { ...NOTHING, scope: Scope.SID | Scope.SSID_IF_SSV },
  CFGI_STE: { ...NOTHING, scope: Scope.SID, config: ConfigDrop.STE },
  CFGI_ALL: { ...NOTHING, scope: Scope.SID_RANGE, config: ConfigDrop.STE_RANGE },
  CFGI_CD: { ...NOTHING, scope: Scope.SID | Scope.SSID, config: ConfigDrop.CD, hwptAs: 'CFGI_CD' },
  CFGI_CD_ALL: { ...NOTHING, scope: Scope.SID, config: ConfigDrop.CD_ALL, hwptAs: 'CFGI_CD_ALL' },
  TLBI_NH_ALL: { ...NOTHING, scope: Scope.VMID, tlb: TlbDrop.STAGE1, hwptAs: 'TLBI_NH_ALL' },
  TLBI_NH_ASID: { ...NOTHING, scope: Scope.VMID | Scope.ASID, tlb: TlbDrop.ASID, guestVcmdq: true, hwptAs: 'TLBI_NH_ASID' },
  TLBI_NH_VA: { ...NOTHING, scope: Scope.VMID | Scope.ASID | Scope.VA, tlb: TlbDrop.VA, guestVcmdq: true, hwptAs: 'TLBI_NH_VA' },
  TLBI_NH_VAA: { ...NOTHING, scope: Scope.VMID | Scope.VA, tlb: TlbDrop.VAA, hwptAs: 'TLBI_NH_VAA' },
  // The EL2 regime's entries belong to host streams (StreamWorld EL2), which no scenario has.
  TLBI_EL2_ALL: { ...NOTHING, scope: Scope.EL2 | Scope.ALL },
  TLBI_EL2_ASID: { ...NOTHING, scope: Scope.EL2 | Scope.ASID },
  TLBI_EL2_VA: { ...NOTHING, scope: Scope.EL2 | Scope.ASID | Scope.VA },
  TLBI_EL2_VAA: { ...NOTHING, scope: Scope.EL2 | Scope.VA },
  TLBI_S12_VMALL: { ...NOTHING, scope: Scope.VMID, tlb: TlbDrop.VMID },
  TLBI_S2_IPA: { ...NOTHING, scope: Scope.VMID | Scope.IPA, tlb: TlbDrop.IPA },
  TLBI_NSNH_ALL: { ...NOTHING, scope: Scope.ALL, tlb: TlbDrop.ALL, hwptAs: 'TLBI_NH_ALL' },
  ATC_INV: { ...NOTHING, scope: Scope.SID | Scope.SSID_IF_SSV | Scope.ATS_ADDR, atc: true, guestVcmdq: true, hwptAs: 'ATC_INV' },
  PRI_RESP: { ...NOTHING, scope: Scope.SID | Scope.SSID_IF_SSV },
  RESUME: { ...NOTHING, scope: Scope.SID },
  STALL_TERM: { ...NOTHING, scope: Scope.SID },
  // Completes when everything before it in its queue has: the queue does that, no cache is touched.
  CMD_SYNC: { ...NOTHING, scope: 0, guestVcmdq: true },
} as const satisfies Record<keyof typeof Opcode, OpcodeSemantics>;

// ---- The same table as typed arrays indexed by opcode (read-only by convention; hot paths). ----

/** ACCEPT_BY_OPCODE bits. */
export const Accept = {
  /** A legal opcode (CMD_SYNC's CS=3 is still illegal: see illegalCommand in commands.ts). */
  LEGAL: 1,
  GUEST_VCMDQ: 2,
  HWPT_INVALIDATE: 4,
  ATC: 8,
} as const;

/** Scope bits by opcode (0 for an illegal one). */
export const SCOPE_BY_OPCODE = new Uint16Array(256);
/** TlbDrop by opcode. */
export const TLB_DROP_BY_OPCODE = new Uint8Array(256);
/** ConfigDrop by opcode. */
export const CONFIG_DROP_BY_OPCODE = new Uint8Array(256);
/** Accept bits by opcode. */
export const ACCEPT_BY_OPCODE = new Uint8Array(256);
/** The opcode HWPT_INVALIDATE issues for a guest's opcode; 0 (an illegal opcode) when it refuses it. */
export const HWPT_OPCODE = new Uint8Array(256);

for (const name of Object.keys(OPCODE_SEMANTICS) as (keyof typeof Opcode)[]) {
  const s: OpcodeSemantics = OPCODE_SEMANTICS[name];
  const op = Opcode[name];
  SCOPE_BY_OPCODE[op] = s.scope;
  TLB_DROP_BY_OPCODE[op] = s.tlb;
  CONFIG_DROP_BY_OPCODE[op] = s.config;
  ACCEPT_BY_OPCODE[op] =
    Accept.LEGAL | (s.guestVcmdq ? Accept.GUEST_VCMDQ : 0) | (s.hwptAs !== undefined ? Accept.HWPT_INVALIDATE : 0) | (s.atc ? Accept.ATC : 0);
  HWPT_OPCODE[op] = s.hwptAs === undefined ? 0 : Opcode[s.hwptAs];
}

/** The opcodes whose record satisfies `pick`. */
export function opcodesWhere(pick: (s: OpcodeSemantics) => boolean): ReadonlySet<number> {
  const out = new Set<number>();
  for (const name of Object.keys(OPCODE_SEMANTICS) as (keyof typeof Opcode)[]) if (pick(OPCODE_SEMANTICS[name])) out.add(Opcode[name]);
  return out;
}

// ---- Scope decoding ----

/** Every StreamID: the count of a CFGI_ALL's range. */
export const ALL_SIDS = 2 ** 32;
/** Every 4K page of a 64-bit address space. */
const ALL_PAGES = 2 ** 52;

/**
 * One command's scope, decoded. Fields the scope does not name hold their "none" value. A consumer
 * keeps one and reuses it for every command (no allocation per command).
 */
export class CommandScope {
  opcode = 0;
  /** Scope bits. */
  flags = 0;
  /** First StreamID in scope, and how many (0: none; ALL_SIDS: every StreamID). */
  sid = 0;
  sids = 0;
  /** SubstreamID, or -1 for every substream (or none named). */
  ssid = -1;
  /** VMID and ASID, or -1 when the scope names none. */
  vmid = -1;
  asid = -1;
  /** The VA, IPA or ATS range as 4K page numbers: first, and how many (0 when there is none). */
  firstPage = 0;
  pages = 0;
}

/** 2^i for i in 0..31 (SCALE reaches 31, past a 32-bit shift). */
const POW2 = Float64Array.from({ length: 32 }, (_, i) => 2 ** i);
/** 4K pages per TLBI granule by TG; TG=0 is "not a range". */
const GRANULE_PAGES = Uint8Array.of(1, 1, 4, 16);
const TWO20 = 0x10_0000;

/** Pages a TLBI range covers: (NUM+1) << SCALE granules of TG, or one page when TG=0. */
function tlbiPages(d0: number, d2: number): number {
  const tg = (d2 >>> 10) & 3;
  if (tg === 0) return 1;
  return (((d0 >>> 12) & 31) + 1) * POW2[(d0 >>> 20) & 31]! * GRANULE_PAGES[tg]!;
}

/**
 * Decodes the scope of the command in dwords d0..d3 (w0[31:0], w0[63:32], w1[31:0], w1[63:32]) into
 * `out`. Does not check legality (see illegalCommand); an illegal opcode decodes to an empty scope.
 */
export function decodeScope(d0: number, d1: number, d2: number, d3: number, out: CommandScope): void {
  const op = d0 & 0xff;
  const f = SCOPE_BY_OPCODE[op]!;
  out.opcode = op;
  out.flags = f;
  out.sid = 0;
  out.sids = 0;
  out.ssid = -1;
  out.vmid = -1;
  out.asid = -1;
  out.firstPage = 0;
  out.pages = 0;
  if ((f & Scope.SID) !== 0) {
    out.sid = d1 >>> 0;
    out.sids = 1;
  } else if ((f & Scope.SID_RANGE) !== 0) {
    const span = POW2[d2 & 31]! * 2;
    const sid = d1 >>> 0;
    out.sid = sid - (sid % span);
    out.sids = span;
  }
  if ((f & Scope.SSID) !== 0 || ((f & Scope.SSID_IF_SSV) !== 0 && (d0 & 0x800) !== 0)) out.ssid = (d0 >>> 12) & 0xfffff;
  if ((f & Scope.VMID) !== 0) out.vmid = d1 & 0xffff;
  if ((f & Scope.ASID) !== 0) out.asid = d1 >>> 16;
  if ((f & Scope.VA) !== 0) {
    out.firstPage = (d3 >>> 0) * TWO20 + (d2 >>> 12);
    out.pages = tlbiPages(d0, d2);
  } else if ((f & Scope.IPA) !== 0) {
    out.firstPage = (d3 & 0xfffff) * TWO20 + (d2 >>> 12);
    out.pages = tlbiPages(d0, d2);
  } else if ((f & Scope.ATS_ADDR) !== 0) {
    const size = d2 & 63;
    if (size >= 52) {
      out.pages = ALL_PAGES;
    } else {
      const page = (d3 >>> 0) * TWO20 + (d2 >>> 12);
      const span = 2 ** size;
      out.firstPage = page - (page % span);
      out.pages = span;
    }
  }
}

/** decodeScope for the 16 bytes at `offset` of a buffer. */
export function readScope(buf: Buffer, offset: number, out: CommandScope): void {
  decodeScope(buf.readInt32LE(offset), buf.readInt32LE(offset + 4), buf.readInt32LE(offset + 8), buf.readInt32LE(offset + 12), out);
}

/** Whether a StreamID is in the scope (always false for a command that names none). */
export function scopeHasSid(scope: Readonly<CommandScope>, sid: number): boolean {
  return sid >= scope.sid && sid - scope.sid < scope.sids;
}

/** Whether the scope names StreamIDs (one or a range). */
export function scopeNamesSids(scope: Readonly<CommandScope>): boolean {
  return scope.sids > 0;
}
