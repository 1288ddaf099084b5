/**
 * sPAPR (PAPR) TCE hypercalls and entries, as a pseries guest issues them and KVM / QEMU serve
 * them (arch/powerpc/include/asm/hvcall.h, arch/powerpc/include/asm/tce.h).
 */

/** Hypercall numbers. */
export const H_PUT_TCE = 0x20;
export const H_STUFF_TCE = 0x138;
export const H_PUT_TCE_INDIRECT = 0x13c;

/** PAPR return codes. */
export const H_RC = { SUCCESS: 0, HARDWARE: -1, FUNCTION: -2, PARAMETER: -4, TOO_HARD: 9999 } as const;

/** TCE permission bits (TCE_PCI_READ, TCE_PCI_WRITE); the real page number is in bits 63:12. */
export const TCE_READ = 1;
export const TCE_WRITE = 2;
export const TCE_PAGE_SHIFT = 12;
export const TCE_PAGE_SIZE = 1 << TCE_PAGE_SHIFT;
/** H_PUT_TCE_INDIRECT and H_STUFF_TCE take at most 512 TCEs (one 4 KiB page of 8-byte entries). */
export const MAX_TCES_PER_HCALL = 512;
export const TCE_ENTRY_SIZE = 8;

/**
 * The PHB's default 32-bit DMA window, the one a pseries guest's devices use: IOBA 0, 1 GiB
 * (QEMU's SPAPR_PCI_DMA32_SIZE), 4 KiB TCEs. One per VM here (one PHB holds its devices, and
 * Linux's pci_dma_bus_setup_pSeriesLP gives them the PHB's one iommu_table).
 */
export const DMA32_WINDOW_OFFSET = 0;
export const DMA32_WINDOW_SIZE = 0x4000_0000;
export const DMA32_WINDOW_ENTRIES = DMA32_WINDOW_SIZE / TCE_PAGE_SIZE;

/** A DMA window of the PHB: its bus address, its TCEs, their page size. */
export interface TceWindow {
  /** Its number on the PHB (QEMU's SPAPR_PCI_LIOBN(phb, n)): 0 the default 32-bit window, 1 a DDW. */
  readonly num: number;
  readonly offset: number;
  readonly entries: number;
  readonly pageShift: number;
}

export const DMA32_WINDOW: TceWindow = { num: 0, offset: DMA32_WINDOW_OFFSET, entries: DMA32_WINDOW_ENTRIES, pageShift: TCE_PAGE_SHIFT };

/**
 * The dynamic DMA window a pseries guest creates for a 64-bit-capable device (guest.ddw; Linux's
 * enable_ddw through RTAS ibm,create-pe-dma-window) when it can map all its RAM: 16 MiB TCEs, the
 * largest page QEMU's PHB offers (pgsz 4K|64K|16M, with guest RAM backed by 16 MiB pages; Linux
 * takes the largest, iommu_get_page_shift), as many as cover the guest's RAM (DDW_WINDOW_SIZE, the
 * board's GUEST_RAM_SIZE; a test keeps them equal), from 1 TiB: QEMU places it at 2^59
 * (dma64_win_addr), but the host tables here translate 48 bits.
 */
export const DDW_PAGE_SHIFT = 24;
export const DDW_WINDOW_OFFSET = 2 ** 40;
export const DDW_WINDOW_SIZE = 0x4_0000_0000;
export const DDW_WINDOW: TceWindow = { num: 1, offset: DDW_WINDOW_OFFSET, entries: DDW_WINDOW_SIZE / 2 ** DDW_PAGE_SHIFT, pageShift: DDW_PAGE_SHIFT };

const WINDOWS: readonly TceWindow[] = [DMA32_WINDOW, DDW_WINDOW];

/** A window's TCE page size in bytes. */
export function tcePageSize(w: TceWindow): number {
  return 2 ** w.pageShift;
}

/**
 * kvmppc_ioba_validate (and QEMU's window check): `ioba` is aligned to the window's TCE page and
 * `npages` entries from it lie inside the window.
 */
export function iobaInWindow(ioba: bigint, npages: bigint, w: TceWindow = DMA32_WINDOW): boolean {
  const page = BigInt(tcePageSize(w));
  if (ioba % page !== 0n) return false;
  const first = BigInt(w.offset) / page;
  const idx = ioba / page;
  return idx >= first && idx - first + npages <= BigInt(w.entries);
}

/** The window an IOVA falls in (tce_iommu_find_table), or undefined. */
export function windowOfIoba(ioba: number): TceWindow | undefined {
  return WINDOWS.find((w) => ioba >= w.offset && ioba < w.offset + w.entries * tcePageSize(w));
}

/** True when the TCE grants any access (a TCE with neither bit is a clear entry, whatever its address). */
export function tceValid(tce: bigint): boolean {
  return (tce & BigInt(TCE_READ | TCE_WRITE)) !== 0n;
}

/**
 * Guest-physical page of each CPU's TCE list (Linux's per-CPU tce_page, allocated once), in a
 * hole of the board's guest RAM map below the guest's page tables.
 */
export const GUEST_TCE_LIST_BASE = 0x7000_0000;
export function tceListGpa(cpu: number): number {
  return GUEST_TCE_LIST_BASE + cpu * TCE_PAGE_SIZE;
}

/** A TCE list page as the guest fills it: big-endian entries (tcep[l] = cpu_to_be64(...)). */
export function encodeTceList(tces: readonly bigint[]): Buffer {
  const b = Buffer.alloc(tces.length * TCE_ENTRY_SIZE);
  tces.forEach((t, i) => b.writeBigUInt64BE(BigInt.asUintN(64, t), i * TCE_ENTRY_SIZE));
  return b;
}

/** The first `n` entries of a TCE list (be64_to_cpu / ldq_be_phys); bytes past the buffer read 0. */
export function decodeTceList(b: Buffer, n: number): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < n; i++) out.push((i + 1) * TCE_ENTRY_SIZE <= b.length ? b.readBigUInt64BE(i * TCE_ENTRY_SIZE) : 0n);
  return out;
}

/**
 * Liobn of VM n's DMA window `window` (its PHB's 32-bit window by default, or the DDW): bit 31 set,
 * the window number in bits 23:16, the VM (its PHB) below.
 */
export function liobnOf(vm: number, window = 0): number {
  return (0x8000_0000 | ((window & 0xff) << 16) | (vm & 0xffff)) >>> 0;
}

/** The VM and window of a liobn, or undefined when it names no window. */
export function liobnParts(liobn: number): { vm: number; window: TceWindow } | undefined {
  // `&` yields a signed 32-bit value: bring it back to unsigned before comparing with bit 31 set.
  if (((liobn & 0xff00_0000) >>> 0) !== 0x8000_0000) return undefined;
  const window = WINDOWS.find((w) => w.num === ((liobn >>> 16) & 0xff));
  return window ? { vm: liobn & 0xffff, window } : undefined;
}

/** The VM of a liobn naming its 32-bit window. */
export function vmOfLiobn(liobn: number): number | undefined {
  const p = liobnParts(liobn);
  return p && p.window.num === 0 ? p.vm : undefined;
}

export function tceOf(gpa: number, read: boolean, write: boolean): bigint {
  return (BigInt(gpa) & ~0xfffn) | (read ? BigInt(TCE_READ) : 0n) | (write ? BigInt(TCE_WRITE) : 0n);
}

export function tceGpa(tce: bigint): number {
  return Number(tce & ~0xfffn);
}

export function tcePerms(tce: bigint): { read: boolean; write: boolean } {
  return { read: (tce & BigInt(TCE_READ)) !== 0n, write: (tce & BigInt(TCE_WRITE)) !== 0n };
}

/** A hypercall as the guest's registers hold it: r3 = number, r4.. = arguments. */
export interface Hcall {
  nr: number;
  args: bigint[];
}

const HCALL_ARGS = 4;
export const HCALL_SIZE = 8 + HCALL_ARGS * 8;

export function encodeHcall(h: Hcall): Buffer {
  const b = Buffer.alloc(HCALL_SIZE);
  b.writeBigUInt64LE(BigInt(h.nr), 0);
  for (let i = 0; i < HCALL_ARGS; i++) b.writeBigUInt64LE(h.args[i] ?? 0n, 8 + i * 8);
  return b;
}

export function decodeHcall(b: Buffer): Hcall | undefined {
  if (b.length < HCALL_SIZE) return undefined;
  const args: bigint[] = [];
  for (let i = 0; i < HCALL_ARGS; i++) args.push(b.readBigUInt64LE(8 + i * 8));
  return { nr: Number(b.readBigUInt64LE(0)), args };
}

/**
 * TCEs written into the hardware table of one DMA window, from `ioba` on, each followed by the kill
 * of its TCE cache entry: what KVM's in-kernel handlers ask of the host IOMMU
 * (kvmppc_tce_iommu_map / kvmppc_tce_iommu_unmap end with iommu_tce_kill, per TCE). A TCE granting
 * no access clears the entry.
 */
export interface TceUpdate {
  liobn: number;
  ioba: number;
  tces: bigint[];
}

export function encodeTceUpdate(u: TceUpdate): Buffer {
  const b = Buffer.alloc(16 + u.tces.length * 8);
  b.writeUInt32LE(u.liobn >>> 0, 0);
  b.writeUInt32LE(u.tces.length, 4);
  b.writeBigUInt64LE(BigInt(u.ioba), 8);
  u.tces.forEach((t, i) => b.writeBigUInt64LE(t, 16 + i * 8));
  return b;
}

export function decodeTceUpdate(b: Buffer): TceUpdate | undefined {
  if (b.length < 16) return undefined;
  const n = b.readUInt32LE(4);
  if (n > MAX_TCES_PER_HCALL || b.length < 16 + n * 8) return undefined;
  const tces: bigint[] = [];
  for (let i = 0; i < n; i++) tces.push(b.readBigUInt64LE(16 + i * 8));
  return { liobn: b.readUInt32LE(0), ioba: Number(b.readBigUInt64LE(8)), tces };
}

/**
 * One TCE cache kill on one PE (iommu_tce_kill -> pnv_pci_ioda2_tce_invalidate, for each PE of the
 * table's group list): `npages` TCEs from `ioba` on, of the PE whose (host) StreamID is `pe`.
 */
export interface TceKill {
  pe: number;
  ioba: number;
  npages: number;
  /** The TCEs' page shift (opal_pci_tce_kill's tce_size). */
  pageShift: number;
}

/** pe (u32), npages (u32), ioba (u64), page shift (u32), 4 bytes of padding. */
export const TCE_KILL_SIZE = 24;

export function encodeTceKill(k: TceKill): Buffer {
  const b = Buffer.alloc(TCE_KILL_SIZE);
  b.writeUInt32LE(k.pe >>> 0, 0);
  b.writeUInt32LE(k.npages >>> 0, 4);
  b.writeBigUInt64LE(BigInt(k.ioba), 8);
  b.writeUInt32LE(k.pageShift >>> 0, 16);
  return b;
}

export function decodeTceKill(b: Buffer): TceKill | undefined {
  if (b.length < TCE_KILL_SIZE) return undefined;
  return { pe: b.readUInt32LE(0), npages: b.readUInt32LE(4), ioba: Number(b.readBigUInt64LE(8)), pageShift: b.readUInt32LE(16) };
}
