/**
 * Intel VT-d (DMA remapping) as both its guest driver and the VMM's emulation see it: the
 * registers of the queued-invalidation interface, the 128-bit legacy invalidation descriptors, the
 * root and context entries, and the second-level (legacy mode) I/O page table. Field positions
 * follow Linux (drivers/iommu/intel/iommu.h QI_* macros) and QEMU
 * (hw/i386/intel_iommu_internal.h). Little-endian, as on the hosts simulated.
 */
import { PAGE_SHIFT, PAGE_SIZE } from './page.js';

// ---------------------------------------------------------------------------------------------
// Board: where the guest finds the remapping unit and keeps its structures (guest-physical).
// The guest driver's probe (RTADDR, IQA, GCMD.TE/QIE) is taken as done at these addresses, as the
// vSMMU's queue bases are fixed in smmu/registers.ts.

/** QEMU q35's DMAR register page (Q35_HOST_BRIDGE_IOMMU_ADDR). */
export const VTD_MMIO_BASE = 0xfed9_0000;
/** DMAR_REG_SIZE with QEMU's one fault recording register (DMAR_FRCD_REG_OFFSET + 16). */
export const VTD_REG_SIZE = 0x230;
/** The invalidation queue: 2^(QS+8) 16-byte descriptors; QS 0 is Linux's QI_LENGTH of 256. */
export const VTD_IQ_GPA = 0x5800_0000;
export const VTD_IQ_QS = 0;
export const VTD_IQ_ENTRIES = 1 << (VTD_IQ_QS + 8);
/** Linux's desc_status[] (one u32 per queue slot), where wait descriptors write their status. */
export const VTD_IQ_STATUS_GPA = 0x5800_1000;
/** Root table (256 root entries, one per bus) and one context table per bus after it. */
export const VTD_ROOT_TABLE_GPA = 0x5800_2000;
const VTD_CONTEXT_TABLE_BASE = 0x5800_3000;
/** Adjusted guest address width: 48 bits, a 4-level second-level table (context AW = 2). */
export const VTD_AW_BITS = 48;
export const VTD_LEVELS = 4;

export function vtdContextTableGpa(bus: number): number {
  return VTD_CONTEXT_TABLE_BASE + (bus & 0xff) * PAGE_SIZE;
}

export function vtdIqSlotGpa(index: number): number {
  return VTD_IQ_GPA + (index % VTD_IQ_ENTRIES) * DESC_SIZE;
}

export function vtdIqStatusGpa(index: number): number {
  return VTD_IQ_STATUS_GPA + (index % VTD_IQ_ENTRIES) * 4;
}

/** Bus and devfn of a PCI requester ID (the vSID the guest sees). */
export function ridParts(rid: number): { bus: number; devfn: number } {
  return { bus: (rid >>> 8) & 0xff, devfn: rid & 0xff };
}

// ---------------------------------------------------------------------------------------------
// Registers (offsets in the DMAR page) and their bits.

export const VTD_REG = {
  VER: 0x0,
  CAP: 0x8,
  ECAP: 0x10,
  GCMD: 0x18,
  GSTS: 0x1c,
  RTADDR: 0x20,
  CCMD: 0x28,
  FSTS: 0x34,
  FECTL: 0x38,
  FEDATA: 0x3c,
  FEADDR: 0x40,
  FEUADDR: 0x44,
  IQH: 0x80,
  IQT: 0x88,
  IQA: 0x90,
  ICS: 0x9c,
  IECTL: 0xa0,
  IEDATA: 0xa4,
  IEADDR: 0xa8,
  IEUADDR: 0xac,
  IVA: 0xf0,
  IOTLB: 0xf8,
} as const;

/** FSTS: primary fault overflow, primary pending fault, invalidation queue / completion / time-out errors. */
export const FSTS = { PFO: 1 << 0, PPF: 1 << 1, IQE: 1 << 4, ICE: 1 << 5, ITE: 1 << 6 } as const;
/** FECTL and IECTL: interrupt mask and interrupt pending. */
export const EVENT_CTL = { IM: 0x8000_0000, IP: 0x4000_0000 } as const;
/** ICS: invalidation wait descriptor complete. */
export const ICS_IWC = 1;
export const GSTS = { TES: 0x8000_0000, RTPS: 0x4000_0000, QIES: 1 << 26 } as const;
/** VER: architecture version 1.0, as QEMU reports. */
export const VTD_VERSION = 0x10;

/** IQH/IQT hold a descriptor index in bits 18:4 with 128-bit descriptors. */
export function iqIndexOf(register: number): number {
  return (register >>> 4) & 0x7fff;
}

export function iqRegisterOf(index: number): number {
  return (index & 0x7fff) << 4;
}

/** IQA: queue base (bits 63:12), DW (bit 11, 256-bit descriptors) and QS (bits 2:0). */
export function encodeIqa(base: number, qs: number): bigint {
  return (BigInt(base) & ~0xfffn) | BigInt(qs & 7);
}

// ---------------------------------------------------------------------------------------------
// Capabilities, as QEMU's intel-iommu with caching-mode=on, aw-bits=48 reports them.

const CAP_BITS = {
  ND: 6n, // 2^(4+2*6) = 64K domain ids
  CM: 1n << 7n,
  SAGAW_39: 0x2n << 8n,
  SAGAW_48: 0x4n << 8n,
  MGAW: BigInt(VTD_AW_BITS - 1) << 16n,
  FRO: (0x220n >> 4n) << 24n,
  SLLPS: (1n << 34n) | (1n << 35n),
  PSI: 1n << 39n,
  MAMV: 18n << 48n,
  DWD: 1n << 54n,
  DRD: 1n << 55n,
} as const;

/** QEMU's VTD_MAMV: the largest address mask a page-selective invalidation may carry. */
export const VTD_MAMV = 18;

export const VTD_CAP: bigint = Object.values(CAP_BITS).reduce((a, b) => a | b, 0n);
/** ECAP: queued invalidation, pass-through, IOTLB registers at 0xf0 (IRO). */
export const VTD_ECAP: bigint = (1n << 1n) | (1n << 6n) | ((BigInt(VTD_REG.IVA) >> 4n) << 8n);

export function capMaxAmask(cap: bigint): number {
  return Number((cap >> 48n) & 0x3fn);
}
export function capCachingMode(cap: bigint): boolean {
  return (cap & CAP_BITS.CM) !== 0n;
}
export function capPsi(cap: bigint): boolean {
  return (cap & CAP_BITS.PSI) !== 0n;
}
export function capReadDrain(cap: bigint): boolean {
  return (cap & CAP_BITS.DRD) !== 0n;
}
export function capWriteDrain(cap: bigint): boolean {
  return (cap & CAP_BITS.DWD) !== 0n;
}

// ---------------------------------------------------------------------------------------------
// Invalidation descriptors (128-bit, legacy mode).

export const DESC_SIZE = 16;

export const DescType = { CONTEXT_CACHE: 1, IOTLB: 2, DEVICE_TLB: 3, IEC: 4, WAIT: 5 } as const;
/** The G field (bits 5:4) of context-cache and IOTLB invalidations. */
export const Granularity = { GLOBAL: 1, DOMAIN: 2, DEVICE_OR_PAGE: 3 } as const;

export interface ContextCacheDesc {
  type: typeof DescType.CONTEXT_CACHE;
  /** 1 global, 2 domain-selective, 3 device-selective (0 is reserved). */
  granularity: number;
  did: number;
  sid: number;
  /** Function mask: how many low bits of the SID's function number to ignore. */
  fm: number;
}

export interface IotlbDesc {
  type: typeof DescType.IOTLB;
  /** 1 global, 2 domain-selective (DSI), 3 page-selective (PSI); 0 is reserved. */
  granularity: number;
  /** Drain reads / writes before the invalidation completes. */
  dr: boolean;
  dw: boolean;
  did: number;
  /** PSI: 4 KiB-aligned address of a 2^am-page naturally aligned range. */
  addr: number;
  /** Invalidation hint: only leaf entries changed, paging-structure caches may stay. */
  ih: boolean;
  am: number;
}

export interface DeviceTlbDesc {
  type: typeof DescType.DEVICE_TLB;
  sid: number;
  /** Physical function's SID (bits 15:12 and 63:52), used with device-TLB throttling. */
  pfsid: number;
  /** Max invalidations pending (the device's ATS queue depth). */
  mip: number;
  addr: number;
  /** S: the range size is encoded in the address's low bits (ATS). */
  size: boolean;
}

export interface IecDesc {
  type: typeof DescType.IEC;
  /** G: 0 global, 1 index-selective. */
  indexSelective: boolean;
  index: number;
  im: number;
}

export interface WaitDesc {
  type: typeof DescType.WAIT;
  /** IF: raise the invalidation completion event. */
  interrupt: boolean;
  /** SW: write statusData to statusAddr on completion. */
  statusWrite: boolean;
  /** FN: fence, later descriptors wait for this one. */
  fence: boolean;
  /** PD: page-request drain. */
  pageDrain: boolean;
  statusData: number;
  /** Guest-physical address of the 32-bit status (bits 63:2). */
  statusAddr: number;
}

export type VtdDescriptor = ContextCacheDesc | IotlbDesc | DeviceTlbDesc | IecDesc | WaitDesc;

const U64 = (1n << 64n) - 1n;
const PAGE_MASK_64 = U64 ^ 0xfffn;

function bit(v: boolean, pos: bigint): bigint {
  return v ? 1n << pos : 0n;
}

function field(value: number, bits: bigint, pos: bigint): bigint {
  return (BigInt(value) & ((1n << bits) - 1n)) << pos;
}

function get(q: bigint, bits: bigint, pos: bigint): number {
  return Number((q >> pos) & ((1n << bits) - 1n));
}

/** The two quadwords of a descriptor. */
export function descriptorWords(d: VtdDescriptor): [bigint, bigint] {
  const t = BigInt(d.type);
  switch (d.type) {
    case DescType.CONTEXT_CACHE:
      return [t | field(d.granularity, 2n, 4n) | field(d.did, 16n, 16n) | field(d.sid, 16n, 32n) | field(d.fm, 2n, 48n), 0n];
    case DescType.IOTLB:
      return [
        t | field(d.granularity, 2n, 4n) | bit(d.dw, 6n) | bit(d.dr, 7n) | field(d.did, 16n, 16n),
        (BigInt(d.addr) & PAGE_MASK_64) | bit(d.ih, 6n) | field(d.am, 6n, 0n),
      ];
    case DescType.DEVICE_TLB:
      return [
        t | field(d.pfsid & 0xf, 4n, 12n) | field(d.mip, 5n, 16n) | field(d.sid, 16n, 32n) | field(d.pfsid >>> 4, 12n, 52n),
        (BigInt(d.addr) & PAGE_MASK_64) | bit(d.size, 0n),
      ];
    case DescType.IEC:
      return [t | bit(d.indexSelective, 4n) | field(d.im, 5n, 27n) | field(d.index, 16n, 32n), 0n];
    case DescType.WAIT:
      return [
        t | bit(d.interrupt, 4n) | bit(d.statusWrite, 5n) | bit(d.fence, 6n) | bit(d.pageDrain, 7n) | field(d.statusData >>> 0, 32n, 32n),
        BigInt(d.statusAddr) & (U64 ^ 3n),
      ];
  }
}

export function encodeDescriptor(d: VtdDescriptor, out: Buffer, offset = 0): void {
  const [qw0, qw1] = descriptorWords(d);
  out.writeBigUInt64LE(qw0, offset);
  out.writeBigUInt64LE(qw1, offset + 8);
}

export function encodeDescriptors(ds: readonly VtdDescriptor[]): Buffer {
  const b = Buffer.alloc(ds.length * DESC_SIZE);
  ds.forEach((d, i) => encodeDescriptor(d, b, i * DESC_SIZE));
  return b;
}

/** The 7-bit descriptor type: bits 3:0 and, since VT-d 3.0, bits 11:9 above them. */
export function descriptorType(qw0: bigint): number {
  return Number((qw0 & 0xfn) | ((qw0 >> 5n) & 0x70n));
}

/** Decodes the fields of a known descriptor type; undefined for any other type. */
export function decodeDescriptor(b: Buffer, offset = 0): VtdDescriptor | undefined {
  const qw0 = b.readBigUInt64LE(offset);
  const qw1 = b.readBigUInt64LE(offset + 8);
  switch (descriptorType(qw0)) {
    case DescType.CONTEXT_CACHE:
      return { type: DescType.CONTEXT_CACHE, granularity: get(qw0, 2n, 4n), did: get(qw0, 16n, 16n), sid: get(qw0, 16n, 32n), fm: get(qw0, 2n, 48n) };
    case DescType.IOTLB:
      return {
        type: DescType.IOTLB, granularity: get(qw0, 2n, 4n), dw: (qw0 & (1n << 6n)) !== 0n, dr: (qw0 & (1n << 7n)) !== 0n,
        did: get(qw0, 16n, 16n), addr: Number(qw1 & PAGE_MASK_64), ih: (qw1 & (1n << 6n)) !== 0n, am: get(qw1, 6n, 0n),
      };
    case DescType.DEVICE_TLB:
      return {
        type: DescType.DEVICE_TLB, sid: get(qw0, 16n, 32n), pfsid: get(qw0, 4n, 12n) | (get(qw0, 12n, 52n) << 4), mip: get(qw0, 5n, 16n),
        addr: Number(qw1 & PAGE_MASK_64), size: (qw1 & 1n) !== 0n,
      };
    case DescType.IEC:
      return { type: DescType.IEC, indexSelective: (qw0 & (1n << 4n)) !== 0n, im: get(qw0, 5n, 27n), index: get(qw0, 16n, 32n) };
    case DescType.WAIT:
      return {
        type: DescType.WAIT, interrupt: (qw0 & (1n << 4n)) !== 0n, statusWrite: (qw0 & (1n << 5n)) !== 0n, fence: (qw0 & (1n << 6n)) !== 0n,
        pageDrain: (qw0 & (1n << 7n)) !== 0n, statusData: get(qw0, 32n, 32n), statusAddr: Number(qw1 & (U64 ^ 3n)),
      };
    default:
      return undefined;
  }
}

/**
 * Reserved bits of each legacy descriptor type on a remapping unit without device-TLB throttling
 * or page requests (QEMU's VTD_INV_DESC_*_RSVD masks): [qw0 mask, qw1 mask].
 */
const RESERVED: Record<number, [bigint, bigint]> = {
  [DescType.CONTEXT_CACHE]: [0xfffc_0000_0000_ffc0n, U64],
  [DescType.IOTLB]: [0xffff_ffff_0000_ff00n, 0xf80n],
  [DescType.DEVICE_TLB]: [0xffff_0000_ffe0_f1f0n, 0xffen],
  [DescType.IEC]: [0xffff_0000_07ff_f1e0n, U64],
  [DescType.WAIT]: [0xffff_ff80n, 3n],
};

/** True when a descriptor of a known type sets a bit its type reserves (an invalid descriptor). */
export function reservedBitsSet(b: Buffer, offset = 0): boolean {
  const qw0 = b.readBigUInt64LE(offset);
  const qw1 = b.readBigUInt64LE(offset + 8);
  const mask = RESERVED[descriptorType(qw0)];
  return mask === undefined || (qw0 & mask[0]) !== 0n || (qw1 & mask[1]) !== 0n;
}

/**
 * The page-selective invalidation covering [iova, iova + pages): the smallest naturally aligned
 * power-of-two range that contains it, as Linux's calculate_psi_aligned_address widens an
 * unaligned range (one descriptor with a larger AM, never a split). When that AM exceeds the
 * unit's MAMV the driver falls back to a domain-selective invalidation.
 */
export function psiRange(iova: number, pages: number): { addr: number; am: number } {
  let aligned = 1n;
  while (aligned < BigInt(pages)) aligned <<= 1n;
  let am = aligned.toString(2).length - 1;
  const bitmask = aligned - 1n;
  const pfn = BigInt(Math.floor(iova / PAGE_SIZE));
  if ((bitmask & pfn) !== 0n) {
    const endPfn = pfn + BigInt(pages) - 1n;
    const shared = ~(pfn ^ endPfn) & ~bitmask & U64;
    // __ffs of the bits pfn and end_pfn share above the mask; MAX_AGAW_PFN_WIDTH when none.
    am = shared === 0n ? 64 - PAGE_SHIFT : (shared & -shared).toString(2).length - 1;
  }
  const span = PAGE_SIZE * 2 ** am;
  return { addr: Math.floor(iova / span) * span, am };
}

// ---------------------------------------------------------------------------------------------
// Root and context entries (legacy mode, 16 bytes each).

export interface RootEntry {
  present: boolean;
  /** Context-table pointer. */
  ctp: number;
}

export const ContextTT = { MULTI_LEVEL: 0, DEV_IOTLB: 1, PASS_THROUGH: 2 } as const;

export interface ContextEntry {
  present: boolean;
  /** Fault processing disable. */
  fpd: boolean;
  /** Translation type (ContextTT). */
  tt: number;
  /** Second-level page-table pointer. */
  slptptr: number;
  /** Address width: 1 = 39-bit 3-level, 2 = 48-bit 4-level. */
  aw: number;
  did: number;
}

export const ROOT_ENTRY_SIZE = 16;
export const CONTEXT_ENTRY_SIZE = 16;

export function encodeRootEntry(r: RootEntry): Buffer {
  const b = Buffer.alloc(ROOT_ENTRY_SIZE);
  b.writeBigUInt64LE((BigInt(r.ctp) & PAGE_MASK_64) | bit(r.present, 0n), 0);
  return b;
}

export function decodeRootEntry(b: Buffer): RootEntry & { reserved: boolean } {
  const lo = b.readBigUInt64LE(0);
  const hi = b.readBigUInt64LE(8);
  const haw = (1n << BigInt(VTD_AW_BITS)) - 1n;
  return { present: (lo & 1n) !== 0n, ctp: Number(lo & PAGE_MASK_64), reserved: hi !== 0n || (lo & (0xffen | (U64 ^ haw))) !== 0n };
}

export function encodeContextEntry(c: ContextEntry): Buffer {
  const b = Buffer.alloc(CONTEXT_ENTRY_SIZE);
  b.writeBigUInt64LE((BigInt(c.slptptr) & PAGE_MASK_64) | field(c.tt, 2n, 2n) | bit(c.fpd, 1n) | bit(c.present, 0n), 0);
  b.writeBigUInt64LE(field(c.aw, 3n, 0n) | field(c.did, 16n, 8n), 8);
  return b;
}

export function decodeContextEntry(b: Buffer): ContextEntry & { reserved: boolean } {
  const lo = b.readBigUInt64LE(0);
  const hi = b.readBigUInt64LE(8);
  const haw = (1n << BigInt(VTD_AW_BITS)) - 1n;
  return {
    present: (lo & 1n) !== 0n, fpd: (lo & 2n) !== 0n, tt: get(lo, 2n, 2n), slptptr: Number(lo & PAGE_MASK_64), aw: get(hi, 3n, 0n), did: get(hi, 16n, 8n),
    // QEMU's VTD_CONTEXT_ENTRY_RSVD_LO(aw) and _HI.
    reserved: (lo & (0xff0n | (U64 ^ haw))) !== 0n || (hi & 0xffff_ffff_ff00_0080n) !== 0n,
  };
}

/** Levels of a second-level table by context AW (1: 3 levels, 2: 4, 3: 5). */
export function levelsOfAw(aw: number): number {
  return aw + 2;
}

// ---------------------------------------------------------------------------------------------
// Second-level I/O page table (legacy mode): 4 KiB tables of 512 8-byte entries. Bit 0 Read,
// bit 1 Write, bit 7 page size (a 2 MiB or 1 GiB leaf at levels 2 and 3), bits 51:12 the address
// of the next table or the page. An entry with neither R nor W is not present.

export const SL_R = 1;
export const SL_W = 2;
export const SL_PS = 1 << 7;
export const ENTRIES = 512;
export const ENTRY_SIZE = 8;
/** Bits 51:32 of the address live in the high word's low 20 bits. */
const HI_ADDR_MASK = 0xf_ffff;

export interface SlPerms {
  read: boolean;
  write: boolean;
}

/** Bytes one entry of `level` covers (level 1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB, 4 = 512 GiB). */
export function slLevelSpan(level: number): number {
  return 2 ** (PAGE_SHIFT + 9 * (level - 1));
}

export function slIndex(iova: number, level: number): number {
  return Math.floor(iova / slLevelSpan(level)) % ENTRIES;
}

export interface SlEntry {
  lo: number;
  hi: number;
}

export function entryAt(table: Buffer, index: number): SlEntry {
  return { lo: table.readUInt32LE(index * ENTRY_SIZE), hi: table.readUInt32LE(index * ENTRY_SIZE + 4) };
}

export function entryAddr(e: SlEntry): number {
  return (e.hi & HI_ADDR_MASK) * 2 ** 32 + ((e.lo & ~(PAGE_SIZE - 1)) >>> 0);
}

export function encodeEntry(addr: number, low: number): Buffer {
  const b = Buffer.alloc(ENTRY_SIZE);
  b.writeUInt32LE(((addr % 2 ** 32 & ~(PAGE_SIZE - 1)) | low) >>> 0, 0);
  b.writeUInt32LE(Math.floor(addr / 2 ** 32) & HI_ADDR_MASK, 4);
  return b;
}

export function present(e: SlEntry): boolean {
  return (e.lo & (SL_R | SL_W)) !== 0;
}

export function isLeaf(e: SlEntry, level: number): boolean {
  return level === 1 || (e.lo & SL_PS) !== 0;
}

/**
 * Reserved bits of an entry at `level` for a unit of VTD_AW_BITS host address width, as QEMU's
 * vtd_slpte_nonzero_rsvd checks them: SNP (bit 11, no snoop control), PS at level 4, the unused
 * address bits of a large page, and every bit above the address width but the ignored ones
 * (bits 52-61 and 63; bit 62 TM is reserved without device-TLB support).
 */
export function reservedBits(e: SlEntry, level: number): boolean {
  const highWordReserved = ((0xffff_ffff << (VTD_AW_BITS - 32)) >>> 0) & ~0xbff0_0000 & 0xffff_ffff;
  if ((e.hi & highWordReserved) !== 0) return true;
  if (e.lo & 0x800) return true;
  if (level === 4 && e.lo & SL_PS) return true;
  if (e.lo & SL_PS && level === 2 && (e.lo & 0x1f_f000) !== 0) return true;
  if (e.lo & SL_PS && level === 3 && (e.lo & 0x3fff_f000) !== 0) return true;
  return false;
}
