import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameAllocator, OwnedMemory, PAGE_SIZE, PhysMemory } from '../../services/machine/memory.js';
import { PageTable } from '../../services/machine/pagetable.js';

describe('4-level, 4 KiB-granule page table', () => {
  it('walks a mapped page in four reads and faults once it is unmapped', () => {
    const pt = new PageTable(new PhysMemory(), new FrameAllocator(0x8000_0000));
    const writes = pt.map(0x1234_5000, 0x9_0000_0000, 1);
    expect(writes).toBe(4); // three new tables on the way down plus the leaf
    const w = pt.walk(0x1234_5678);
    expect(w.pa).toBe(0x9_0000_0678);
    expect(w.reads).toBe(4);
    expect(w.faultLevel).toBe(-1);
    expect(pt.unmap(0x1234_5000, 1)).toBe(1);
    expect(pt.walk(0x1234_5678).pa).toBe(-1);
    expect(pt.walk(0x1234_5678).faultLevel).toBe(3);
  });

  it('reuses tables: a neighbouring page costs one descriptor write', () => {
    const pt = new PageTable(new PhysMemory(), new FrameAllocator(0x8000_0000));
    pt.map(0x4000_0000, 0x1000, 1);
    expect(pt.map(0x4000_1000, 0x2000, 1)).toBe(1);
  });

  it('faults at level 0 for an address under no table', () => {
    const pt = new PageTable(new PhysMemory(), new FrameAllocator(0x8000_0000));
    expect(pt.walk(0x7f00_0000_0000).faultLevel).toBe(0);
  });

  it('walks 1 GiB and 2 MiB blocks in two and three reads', () => {
    const pt = new PageTable(new PhysMemory(), new FrameAllocator(0x8000_0000));
    expect(pt.mapBlocks(0x4000_0000, 0x1_4000_0000, 2 * 2 ** 30, 1)).toBe(3); // one new level-1 table, two blocks
    const big = pt.walk(0x7fff_f123);
    expect(big.pa).toBe(0x1_7fff_f123);
    expect(big.reads).toBe(2);
    pt.mapBlocks(0x1_0000_0000, 0x2_0000_0000, 2 ** 21, 2);
    expect(pt.walk(0x1_0000_1000)).toMatchObject({ pa: 0x2_0000_1000, reads: 3 });
    expect(() => pt.mapBlocks(0x1000, 0, 2 ** 21, 2)).toThrow(RangeError);
  });

  it('keeps read-only mappings read-only', () => {
    const pt = new PageTable(new PhysMemory(), new FrameAllocator(0x8000_0000));
    pt.map(0x1000, 0x5000, 1, { read: true, write: false });
    expect(pt.walk(0x1000).writable).toBe(false);
  });

  it('translates every mapped page to its own output address (property)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 2 ** 36 - 1 }), { minLength: 1, maxLength: 40 }), (pfns) => {
        const pt = new PageTable(new PhysMemory(), new FrameAllocator(2 ** 47));
        pfns.forEach((pfn, i) => pt.map(pfn * PAGE_SIZE, (i + 1) * PAGE_SIZE, 1));
        pfns.forEach((pfn, i) => expect(pt.walk(pfn * PAGE_SIZE + 8).pa).toBe((i + 1) * PAGE_SIZE + 8));
      }),
      { numRuns: 50 },
    );
  });
});

describe('a table its owner walks from its own copy (OwnedMemory)', () => {
  /** Counts what reaches the shared memory. */
  class Counting extends PhysMemory {
    reads = 0;
    writes = 0;
    override view(addr: number, len: number): Buffer {
      this.reads += 1;
      return super.view(addr, len);
    }
    override read(addr: number, len: number): Buffer {
      this.reads += 1;
      return super.read(addr, len);
    }
    override read32(addr: number): number {
      this.reads += 1;
      return super.read32(addr);
    }
    override write(addr: number, data: Buffer): void {
      this.writes += 1;
      super.write(addr, data);
    }
  }

  it('writes every descriptor through, and walks without reading the shared memory', () => {
    const shared = new Counting();
    const frames = new FrameAllocator(0x8000_0000);
    const owner = new PageTable(new OwnedMemory(shared), frames);
    owner.map(0x1234_5000, 0x9_0000_0000, 2);
    const writes = shared.writes;
    expect(writes).toBeGreaterThan(0);
    // Table frames are written whole when made, so nothing was read to fill the copy.
    expect(shared.reads).toBe(0);
    // The SMMU's walk of the shared memory sees what the owner wrote.
    expect(PageTable.walk(shared, owner.root, 0x1234_6678).pa).toBe(0x9_0000_1678);
    const read = shared.reads;
    expect(owner.walk(0x1234_6678).pa).toBe(0x9_0000_1678);
    expect(owner.unmap(0x1234_5000, 2)).toBe(2);
    expect(shared.reads).toBe(read);
    expect(shared.writes).toBeGreaterThan(writes);
    expect(PageTable.walk(shared, owner.root, 0x1234_6678).pa).toBe(-1);
  });

  it('reads a frame it did not write once, then from its copy', () => {
    const shared = new Counting();
    shared.write32(0x5000, 0xdead_beef);
    const mem = new OwnedMemory(shared);
    expect(mem.read32(0x5004 - 4)).toBe(0xdead_beef);
    expect(mem.view(0x5000, 4).readUInt32LE(0)).toBe(0xdead_beef);
    expect(shared.reads).toBe(1);
    mem.write32(0x5ffc, 7);
    expect(shared.read32(0x5ffc)).toBe(7);
    // A range across two frames brings in the second one only.
    expect(mem.read(0x5ffc, 8).readUInt32LE(0)).toBe(7);
    expect(shared.reads).toBe(3);
  });
});
