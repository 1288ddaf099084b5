import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IovaTree, type IovaMapping } from '../../services/machine/iova-tree.js';

const m = (iova: number, size: number, gpa = 0): IovaMapping => ({ iova, size, gpa, read: true, write: true });

describe('the VMM IOVA tree (QEMU util/iova-tree.c)', () => {
  it('finds any range overlapping the one asked, and nothing beside it', () => {
    const t = new IovaTree();
    expect(t.insert(m(0x2000, 0x1000))).toBe(true);
    expect(t.insert(m(0x10_0000, 0x20_0000))).toBe(true);
    expect(t.find(0x2000, 0x1000)?.iova).toBe(0x2000);
    expect(t.find(0, 0x20_0000)?.iova).toBe(0x2000);
    expect(t.find(0x1000, 0x1000)).toBeUndefined();
    expect(t.find(0x3000, 0x1000)).toBeUndefined();
    expect(t.find(0x1f_f000, 0x1000)?.iova).toBe(0x10_0000);
    expect(t.find(0x30_0000, 0x1000)).toBeUndefined();
  });

  it('refuses an overlapping insert and removes every range a removal overlaps', () => {
    const t = new IovaTree();
    for (let i = 0; i < 8; i++) expect(t.insert(m(i * 0x1000, 0x1000, i))).toBe(true);
    expect(t.insert(m(0x3000, 0x2000))).toBe(false);
    expect(t.remove(0x2800, 0x2000).map((r) => r.iova)).toEqual([0x2000, 0x3000, 0x4000]);
    expect(t.size).toBe(5);
    expect(t.bytes).toBe(5 * 0x1000);
    expect(t.remove(0, 2 ** 48)).toHaveLength(5);
    expect(t.size).toBe(0);
  });

  it('agrees with a plain list of ranges under any sequence of inserts and removals', () => {
    const op = fc.record({ insert: fc.boolean(), page: fc.integer({ min: 0, max: 63 }), pages: fc.integer({ min: 1, max: 8 }) });
    fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const t = new IovaTree();
      let list: IovaMapping[] = [];
      const overlaps = (r: IovaMapping, iova: number, size: number): boolean => r.iova < iova + size && iova < r.iova + r.size;
      for (const o of ops) {
        const iova = o.page * 0x1000;
        const size = o.pages * 0x1000;
        if (o.insert) {
          const free = !list.some((r) => overlaps(r, iova, size));
          expect(t.insert(m(iova, size))).toBe(free);
          if (free) list.push(m(iova, size));
        } else {
          const gone = t.remove(iova, size).map((r) => r.iova).sort((a, b) => a - b);
          expect(gone).toEqual(list.filter((r) => overlaps(r, iova, size)).map((r) => r.iova).sort((a, b) => a - b));
          list = list.filter((r) => !overlaps(r, iova, size));
        }
        expect(t.entries().map((r) => r.iova)).toEqual(list.map((r) => r.iova).sort((a, b) => a - b));
      }
    }));
  });
});

describe('the IOVA tree with its users\' own records', () => {
  it('lists every overlap in address order and deletes one record exactly', () => {
    const t = new IovaTree<{ iova: number; size: number; tag: string }>();
    for (const iova of [0x5000, 0x1000, 0x9000, 0x3000]) t.insert({ iova, size: 0x1000, tag: iova.toString(16) });
    expect(t.entries().map((x) => x.iova)).toEqual([0x1000, 0x3000, 0x5000, 0x9000]);
    expect(t.overlapping(0x1fff, 0x3002).map((x) => x.tag)).toEqual(['1000', '3000', '5000']);
    expect(t.overlapping(0x6000, 0x3000)).toEqual([]);
    const second = t.entries()[1] as { iova: number; size: number; tag: string };
    expect(t.delete({ ...second })).toBe(false); // an equal record is not this one
    expect(t.delete(second)).toBe(true);
    expect(t.entries().map((x) => x.iova)).toEqual([0x1000, 0x5000, 0x9000]);
    expect(t.size).toBe(3);
  });
});
