/**
 * A VT-d second-level I/O page table in a Memory: the walker QEMU's vtd_page_walk follows, and the
 * table a guest driver writes. The entry format is services/formats/vtd.ts.
 */
import { GUEST_RAM_SIZE } from './board.js';
import { PAGE_SIZE, type FrameAllocator, type Memory } from './memory.js';
import { ENTRIES, ENTRY_SIZE, SL_R, SL_W, VTD_LEVELS, type SlEntry, type SlPerms, encodeEntry, entryAddr, entryAt, isLeaf, present, reservedBits, slIndex, slLevelSpan } from '../formats/vtd.js';

export interface SlTranslation {
  /** Output address, or -1 when the walk found no present leaf. */
  pa: number;
  read: boolean;
  write: boolean;
  /** Entries read. */
  reads: number;
}

/** What a range walk reports for each leaf or non-present entry it meets (QEMU's IOMMUTLBEvent). */
export interface SlWalkEvent {
  /** First IOVA the entry covers (aligned down to its span). */
  iova: number;
  span: number;
  /** A present leaf (a mapping) or a hole (nothing mapped in the whole span). */
  present: boolean;
  /** Output address of a present leaf. */
  pa: number;
  read: boolean;
  write: boolean;
}

/** A table address the walker can read: inside guest RAM, 4 KiB aligned. */
function readable(addr: number): boolean {
  return addr >= 0 && addr % PAGE_SIZE === 0 && addr + PAGE_SIZE <= GUEST_RAM_SIZE;
}

/**
 * Walks [start, end) of a second-level table as QEMU's vtd_page_walk_level does: every entry of
 * every table the range reaches is read once, permissions stack with the parents', a present
 * non-leaf entry is descended into, and every leaf or non-present entry is reported with the whole
 * span it covers. Entries with reserved bits set, and tables outside guest RAM, are skipped.
 * Returns the number of entries read; `onReads` learns them as the walk goes.
 */
export async function walkSecondLevel(
  mem: Memory,
  root: number,
  levels: number,
  start: number,
  end: number,
  visit: (e: SlWalkEvent) => Promise<void> | void,
  onReads?: (n: number) => void,
): Promise<number> {
  let reads = 0;
  // Reads are reported before each visit, so whoever charges them does so in walk order.
  let unreported = 0;
  const report = (): void => {
    if (unreported > 0) onReads?.(unreported);
    unreported = 0;
  };
  const level = async (table: number, from: number, to: number, lvl: number, read: boolean, write: boolean): Promise<void> => {
    const span = slLevelSpan(lvl);
    const bytes = readable(table) ? mem.read(table, PAGE_SIZE) : undefined;
    let iova = from;
    while (iova < to) {
      const base = Math.floor(iova / span) * span;
      const next = base + span;
      reads += 1;
      unreported += 1;
      if (bytes) {
        const e = entryAt(bytes, slIndex(iova, lvl));
        if (!reservedBits(e, lvl)) {
          const r = read && (e.lo & SL_R) !== 0;
          const w = write && (e.lo & SL_W) !== 0;
          if (!isLeaf(e, lvl) && (r || w)) await level(entryAddr(e), iova, Math.min(next, to), lvl - 1, r, w);
          else {
            report();
            await visit({ iova: base, span, present: r || w, pa: entryAddr(e), read: r, write: w });
          }
        }
      }
      iova = next;
    }
  };
  await level(root, start, Math.min(end, slLevelSpan(levels + 1)), levels, true, true);
  report();
  return reads;
}

/**
 * A second-level table in a Memory, written by its owner (the guest driver). Non-leaf entries
 * carry R and W as Linux writes them, so permissions come from the leaves. Unmapping frees the
 * tables a range covers entirely, as Linux's dma_pte_clear_level does; their frames are handed
 * back only after the caller invalidated (release), as Linux frees its freelist after the flush.
 */
export class VtdPageTable {
  readonly root: number;
  private readonly spare: number[] = [];

  constructor(
    private readonly mem: Memory,
    private readonly frames: FrameAllocator,
    readonly levels: number = VTD_LEVELS,
  ) {
    this.root = this.newTable();
  }

  private newTable(): number {
    const t = this.spare.pop() ?? this.frames.alloc();
    this.mem.write(t, Buffer.alloc(PAGE_SIZE));
    return t;
  }

  private entry(table: number, index: number): SlEntry {
    const b = this.mem.view(table + index * ENTRY_SIZE, ENTRY_SIZE);
    return { lo: b.readUInt32LE(0), hi: b.readUInt32LE(4) };
  }

  /** Maps `pages` 4 KiB pages; returns the entries written (new tables' pointers included). */
  map(iova: number, pa: number, pages: number, perms: SlPerms = { read: true, write: true }): number {
    let writes = 0;
    const prot = (perms.read ? SL_R : 0) | (perms.write ? SL_W : 0);
    for (let i = 0; i < pages; i++) {
      const v = iova + i * PAGE_SIZE;
      let table = this.root;
      for (let lvl = this.levels; lvl > 1; lvl--) {
        const idx = slIndex(v, lvl);
        const e = this.entry(table, idx);
        if (present(e) && !isLeaf(e, lvl)) {
          table = entryAddr(e);
          continue;
        }
        const next = this.newTable();
        this.mem.write(table + idx * ENTRY_SIZE, encodeEntry(next, SL_R | SL_W));
        writes += 1;
        table = next;
      }
      this.mem.write(table + slIndex(v, 1) * ENTRY_SIZE, encodeEntry(pa + i * PAGE_SIZE, prot));
      writes += 1;
    }
    return writes;
  }

  /**
   * Clears [iova, iova + pages): leaves in the range, and every entry whose whole span is in the
   * range (its tables go to `freed`). Returns the entries written and the table frames freed.
   */
  unmap(iova: number, pages: number): { cleared: number; freed: number[] } {
    const out = { cleared: 0, freed: [] as number[] };
    const last = iova + pages * PAGE_SIZE - 1;
    const zero = Buffer.alloc(ENTRY_SIZE);
    const clear = (table: number, from: number, lvl: number): void => {
      const span = slLevelSpan(lvl);
      let at = from;
      do {
        const base = Math.floor(at / span) * span;
        const idx = slIndex(at, lvl);
        const e = this.entry(table, idx);
        if (present(e)) {
          if (base >= iova && base + span - 1 <= last) {
            if (!isLeaf(e, lvl)) this.listTables(entryAddr(e), lvl - 1, out.freed);
            this.mem.write(table + idx * ENTRY_SIZE, zero);
            out.cleared += 1;
          } else if (!isLeaf(e, lvl)) {
            clear(entryAddr(e), Math.max(at, base), lvl - 1);
          }
        }
        at = base + span;
      } while (slIndex(at, lvl) !== 0 && at <= last);
    };
    if (pages > 0) clear(this.root, iova, this.levels);
    return out;
  }

  /** A freed table and every table below it (dma_pte_list_pagetables). */
  private listTables(table: number, lvl: number, into: number[]): void {
    into.push(table);
    if (lvl === 1) return;
    const bytes = this.mem.read(table, PAGE_SIZE);
    for (let i = 0; i < ENTRIES; i++) {
      const e = entryAt(bytes, i);
      if (present(e) && !isLeaf(e, lvl)) this.listTables(entryAddr(e), lvl - 1, into);
    }
  }

  /** Table frames freed by unmap, reusable once the invalidation that covered them completed. */
  release(frames: readonly number[]): void {
    this.spare.push(...frames);
  }

  translate(iova: number): SlTranslation {
    return VtdPageTable.translate(this.mem, this.root, this.levels, iova);
  }

  static translate(mem: Memory, root: number, levels: number, iova: number): SlTranslation {
    let table = root;
    let read = true;
    let write = true;
    let reads = 0;
    for (let lvl = levels; lvl >= 1; lvl--) {
      reads += 1;
      const b = mem.view(table + slIndex(iova, lvl) * ENTRY_SIZE, ENTRY_SIZE);
      const e = { lo: b.readUInt32LE(0), hi: b.readUInt32LE(4) };
      if (reservedBits(e, lvl)) break;
      read = read && (e.lo & SL_R) !== 0;
      write = write && (e.lo & SL_W) !== 0;
      if (!read && !write) break;
      if (isLeaf(e, lvl)) return { pa: entryAddr(e) + (iova % slLevelSpan(lvl)), read, write, reads };
      table = entryAddr(e);
    }
    return { pa: -1, read: false, write: false, reads };
  }
}
