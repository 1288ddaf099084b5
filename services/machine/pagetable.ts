import { FrameAllocator, PAGE_SHIFT, PAGE_SIZE, type Memory } from './memory.js';

/**
 * A VMSAv8-64 translation table with the 4 KiB granule and 4 levels (48-bit input addresses) in a
 * Memory: level 0-2 entries are table (or, at levels 1-2, block) descriptors, level 3 entries page
 * descriptors. Guest stage-1 tables and host stage-2 tables use it; the SMMU walks the same bytes
 * the owner wrote.
 */
export const LEVELS = 4;
const ENTRIES = 512;
const VALID = 1;
/** Bit 1: table (levels 0-2) or page (level 3); clear at levels 1-2 means a block. */
const TABLE_OR_PAGE = 2;
/** Access flag; set on every leaf written so no access-flag fault is modelled. */
const AF = 1 << 10;
/** AP[2] (bit 7): read-only. */
const AP_RO = 1 << 7;
/** OA bits [47:32] live in the high word's low 16 bits. */
const HI_OA_MASK = 0xffff;

export interface Perms {
  read: boolean;
  write: boolean;
}

export interface WalkResult {
  /** Output address, or -1 on a translation fault. */
  pa: number;
  writable: boolean;
  /** Descriptor addresses read, in order (each is a memory access the walk pays for). */
  reads: number;
  /** Level at which a fault was found (-1 when none). */
  faultLevel: number;
  /** Address (in the walked memory's space) of the leaf descriptor that gave the result. */
  leafDescAddr: number;
}

/** Bytes covered by one entry at a level: 512 GiB, 1 GiB, 2 MiB, 4 KiB. */
export function levelSpan(level: number): number {
  return 2 ** (PAGE_SHIFT + 9 * (LEVELS - 1 - level));
}

function index(va: number, level: number): number {
  return Math.floor(va / levelSpan(level)) % ENTRIES;
}

function descOa(lo: number, hi: number): number {
  return (hi & HI_OA_MASK) * 2 ** 32 + ((lo & ~(PAGE_SIZE - 1)) >>> 0);
}

function writeDesc(mem: Memory, addr: number, oa: number, low: number): void {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(((oa % 2 ** 32 & ~(PAGE_SIZE - 1)) | low) >>> 0, 0);
  b.writeUInt32LE(Math.floor(oa / 2 ** 32) & HI_OA_MASK, 4);
  mem.write(addr, b);
}

export class PageTable {
  /** Address of the level-0 table (TTBR / S2TTB). */
  readonly root: number;

  constructor(
    private readonly mem: Memory,
    private readonly frames: FrameAllocator,
  ) {
    this.root = frames.alloc();
    mem.write(this.root, Buffer.alloc(PAGE_SIZE));
  }

  /** The table at `level` holding `va`, created on the way down; counts descriptor writes. */
  private tableAt(va: number, level: number, counter: { writes: number }): number {
    let table = this.root;
    for (let l = 0; l < level; l++) {
      const addr = table + index(va, l) * 8;
      const d = this.mem.view(addr, 8);
      const lo = d.readUInt32LE(0);
      const hi = d.readUInt32LE(4);
      if (lo & VALID && lo & TABLE_OR_PAGE) {
        table = descOa(lo, hi);
      } else {
        const next = this.frames.alloc();
        this.mem.write(next, Buffer.alloc(PAGE_SIZE));
        writeDesc(this.mem, addr, next, VALID | TABLE_OR_PAGE);
        counter.writes += 1;
        table = next;
      }
    }
    return table;
  }

  /** Maps `pages` consecutive 4 KiB pages; returns the number of descriptors written. */
  map(va: number, pa: number, pages: number, perms: Perms = { read: true, write: true }): number {
    const counter = { writes: 0 };
    for (let i = 0; i < pages; i++) {
      const v = va + i * PAGE_SIZE;
      const table = this.tableAt(v, LEVELS - 1, counter);
      writeDesc(this.mem, table + index(v, LEVELS - 1) * 8, pa + i * PAGE_SIZE, VALID | TABLE_OR_PAGE | AF | (perms.write ? 0 : AP_RO));
      counter.writes += 1;
    }
    return counter.writes;
  }

  /** Maps [va, va+size) with block descriptors of `level` (1: 1 GiB, 2: 2 MiB); both must be aligned. */
  mapBlocks(va: number, pa: number, size: number, level: 1 | 2, perms: Perms = { read: true, write: true }): number {
    const span = levelSpan(level);
    if (va % span || pa % span || size % span) throw new RangeError(`block mapping needs ${span}-byte alignment`);
    const counter = { writes: 0 };
    for (let off = 0; off < size; off += span) {
      const table = this.tableAt(va + off, level, counter);
      writeDesc(this.mem, table + index(va + off, level) * 8, pa + off, VALID | AF | (perms.write ? 0 : AP_RO));
      counter.writes += 1;
    }
    return counter.writes;
  }

  /**
   * Clears the block descriptors of `level` over [va, va+size) (both aligned to the block size), as
   * io-pgtable does when an unmap covers whole blocks; returns how many were valid blocks.
   */
  unmapBlocks(va: number, size: number, level: 1 | 2): number {
    const span = levelSpan(level);
    if (va % span || size % span) throw new RangeError(`block unmapping needs ${span}-byte alignment`);
    let cleared = 0;
    for (let off = 0; off < size; off += span) {
      const table = this.existingTableAt(va + off, level);
      if (table === undefined) continue;
      const addr = table + index(va + off, level) * 8;
      const lo = this.mem.view(addr, 8).readUInt32LE(0);
      if (!(lo & VALID) || lo & TABLE_OR_PAGE) continue;
      this.mem.write(addr, Buffer.alloc(8));
      cleared += 1;
    }
    return cleared;
  }

  /** The table at `level` holding `va`, if the tables above lead there. */
  private existingTableAt(va: number, level: number): number | undefined {
    let table = this.root;
    for (let l = 0; l < level; l++) {
      const d = this.mem.view(table + index(va, l) * 8, 8);
      const lo = d.readUInt32LE(0);
      if (!(lo & VALID) || !(lo & TABLE_OR_PAGE)) return undefined;
      table = descOa(lo, d.readUInt32LE(4));
    }
    return table;
  }

  /** Clears the leaf entries of `pages` pages; returns how many were mapped (and so were cleared). */
  unmap(va: number, pages: number): number {
    let cleared = 0;
    const zero = Buffer.alloc(8);
    for (let i = 0; i < pages; i++) {
      const w = PageTable.walk(this.mem, this.root, va + i * PAGE_SIZE);
      if (w.pa < 0) continue;
      this.mem.write(w.leafDescAddr, zero);
      cleared += 1;
    }
    return cleared;
  }

  /**
   * Walks `va` from `root`. `translateTable`, when given, turns each table address into the
   * address actually read (a stage-2 walk for a nested stage-1 table, adding its own reads to
   * `reads` through the returned count) and returns -1 when that walk faults.
   */
  static walk(mem: Memory, root: number, va: number, translateTable?: (ipa: number) => { pa: number; reads: number }): WalkResult {
    let reads = 0;
    let table = root;
    for (let level = 0; level < LEVELS; level++) {
      let addr = table + index(va, level) * 8;
      if (translateTable) {
        const t = translateTable(addr);
        reads += t.reads;
        if (t.pa < 0) return { pa: -1, writable: false, reads, faultLevel: level, leafDescAddr: -1 };
        addr = t.pa;
      }
      reads += 1;
      const d = mem.view(addr, 8);
      const lo = d.readUInt32LE(0);
      const hi = d.readUInt32LE(4);
      if (!(lo & VALID)) return { pa: -1, writable: false, reads, faultLevel: level, leafDescAddr: addr };
      const isTable = (lo & TABLE_OR_PAGE) !== 0;
      const oa = descOa(lo, hi);
      if (level === LEVELS - 1 || (!isTable && level > 0)) {
        if (level === LEVELS - 1 && !isTable) return { pa: -1, writable: false, reads, faultLevel: level, leafDescAddr: addr };
        const span = levelSpan(level);
        return { pa: oa + (va % span), writable: (lo & AP_RO) === 0, reads, faultLevel: -1, leafDescAddr: addr };
      }
      if (!isTable) return { pa: -1, writable: false, reads, faultLevel: level, leafDescAddr: addr };
      table = oa;
    }
    return { pa: -1, writable: false, reads, faultLevel: LEVELS - 1, leafDescAddr: -1 };
  }

  walk(va: number): WalkResult {
    return PageTable.walk(this.mem, this.root, va);
  }
}
