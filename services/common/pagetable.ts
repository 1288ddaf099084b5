import { PAGE_SHIFT, PAGE_SIZE, type PhysMemory } from './memory.js';

/**
 * A VMSAv8-64 translation table with the 4 KiB granule and 4 levels (48-bit input addresses), in
 * a PhysMemory: level 0-2 entries are table descriptors, level 3 entries page descriptors. Used for
 * guest stage-1 tables and host stage-2 tables; the SMMU walks the same bytes the owner wrote.
 */
export const LEVELS = 4;
const ENTRIES = 512;
const VALID = 1;
const TABLE_OR_PAGE = 2;
/** Access flag; set on every page we write so no access-flag fault is modelled. */
const AF = 1 << 10;
/** AP[2] (bit 7): read-only. */
const AP_RO = 1 << 7;
const HI_OA_MASK = 0xffff; // OA bits [47:32] live in the high word's low 16 bits

export interface Perms {
  read: boolean;
  write: boolean;
}

export interface WalkResult {
  /** Output address, or -1 on a translation fault. */
  pa: number;
  writable: boolean;
  /** Descriptor addresses read, in order (each is a memory access the walk pays for). */
  reads: number[];
  /** Level at which a fault was found (-1 when none). */
  faultLevel: number;
}

function index(va: number, level: number): number {
  // level 0 uses VA[47:39], level 3 VA[20:12]
  const shift = PAGE_SHIFT + 9 * (LEVELS - 1 - level);
  return Math.floor(va / 2 ** shift) % ENTRIES;
}

export class PageTable {
  /** Physical address of the level-0 table (TTBR / S2TTB). */
  readonly root: number;

  constructor(private readonly mem: PhysMemory) {
    this.root = mem.allocFrame();
  }

  private readDesc(addr: number): { lo: number; hi: number } {
    return { lo: this.mem.read32(addr), hi: this.mem.read32(addr + 4) };
  }

  private writeDesc(addr: number, oa: number, lo: number): void {
    const oaLo = oa % 2 ** 32;
    const oaHi = Math.floor(oa / 2 ** 32) & HI_OA_MASK;
    this.mem.write32(addr, ((oaLo & ~(PAGE_SIZE - 1)) | lo) >>> 0);
    this.mem.write32(addr + 4, oaHi);
  }

  private static oa(d: { lo: number; hi: number }): number {
    return (d.hi & HI_OA_MASK) * 2 ** 32 + ((d.lo & ~(PAGE_SIZE - 1)) >>> 0);
  }

  /** The level-3 table holding `va`, created on the way down. Returns its address and descriptor writes made. */
  private leafTable(va: number): { table: number; writes: number } {
    let table = this.root;
    let writes = 0;
    for (let level = 0; level < LEVELS - 1; level++) {
      const addr = table + index(va, level) * 8;
      const d = this.readDesc(addr);
      if (d.lo & VALID) {
        table = PageTable.oa(d);
      } else {
        const next = this.mem.allocFrame();
        this.writeDesc(addr, next, VALID | TABLE_OR_PAGE);
        writes += 1;
        table = next;
      }
    }
    return { table, writes };
  }

  /** Maps `pages` consecutive pages; returns the number of descriptors written. */
  map(va: number, pa: number, pages: number, perms: Perms = { read: true, write: true }): number {
    let writes = 0;
    for (let i = 0; i < pages; i++) {
      const v = va + i * PAGE_SIZE;
      const { table, writes: w } = this.leafTable(v);
      writes += w;
      this.writeDesc(table + index(v, LEVELS - 1) * 8, pa + i * PAGE_SIZE, VALID | TABLE_OR_PAGE | AF | (perms.write ? 0 : AP_RO));
      writes += 1;
    }
    return writes;
  }

  /** Clears the leaf entries of `pages` pages; returns how many were mapped (and so were cleared). */
  unmap(va: number, pages: number): number {
    let cleared = 0;
    for (let i = 0; i < pages; i++) {
      const v = va + i * PAGE_SIZE;
      let table = this.root;
      let level = 0;
      for (; level < LEVELS - 1; level++) {
        const d = this.readDesc(table + index(v, level) * 8);
        if (!(d.lo & VALID)) break;
        table = PageTable.oa(d);
      }
      if (level < LEVELS - 1) continue;
      const addr = table + index(v, LEVELS - 1) * 8;
      if (this.mem.read32(addr) & VALID) {
        this.mem.write32(addr, 0);
        this.mem.write32(addr + 4, 0);
        cleared += 1;
      }
    }
    return cleared;
  }

  /**
   * Walks `va` from `root`. `translateTable` turns each table address into the address actually
   * read (identity for a single stage; a stage-2 walk for a nested stage-1 table) and may add the
   * reads it made itself.
   */
  static walk(mem: PhysMemory, root: number, va: number, translateTable?: (addr: number, reads: number[]) => number): WalkResult {
    const reads: number[] = [];
    let table = root;
    for (let level = 0; level < LEVELS; level++) {
      const ipa = table + index(va, level) * 8;
      const addr = translateTable ? translateTable(ipa, reads) : ipa;
      if (addr < 0) return { pa: -1, writable: false, reads, faultLevel: level };
      reads.push(addr);
      const d = { lo: mem.read32(addr), hi: mem.read32(addr + 4) };
      if (!(d.lo & VALID) || !(d.lo & TABLE_OR_PAGE)) return { pa: -1, writable: false, reads, faultLevel: level };
      const oa = PageTable.oa(d);
      if (level === LEVELS - 1) return { pa: oa + (va % PAGE_SIZE), writable: (d.lo & AP_RO) === 0, reads, faultLevel: -1 };
      table = oa;
    }
    return { pa: -1, writable: false, reads, faultLevel: LEVELS - 1 };
  }

  walk(va: number): WalkResult {
    return PageTable.walk(this.mem, this.root, va);
  }
}
