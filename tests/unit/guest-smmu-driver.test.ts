import { describe, expect, it } from 'vitest';
import { tlbiRangePages } from '../../services/formats/smmu/commands.js';
import { tlbiNhVaRange as tlbiRange } from '../../services/formats/smmu/commands.js';

describe('guest range TLBI construction', () => {
  it.each([1, 2, 3, 5, 31, 32, 33, 64, 100, 511, 512])('covers exactly %i pages with contiguous commands', (pages) => {
    const cmds = tlbiRange(1, 0x10_0000, pages);
    let va = 0x10_0000;
    let covered = 0;
    for (const c of cmds) {
      expect(Number(c.fields.va)).toBe(va);
      const { granule, pages: n } = tlbiRangePages(c.fields);
      expect(granule).toBe(4096);
      va += n * granule;
      covered += n;
    }
    expect(covered).toBe(pages);
  });

  it('uses one command for a single page', () => {
    expect(tlbiRange(1, 0x1000, 1)).toHaveLength(1);
  });

  it('covers ranges past 2^32 pages with few commands, in order, with nothing left over', () => {
    const pages = 2 ** 33 + 5;
    const cmds = tlbiRange(1, 0, pages);
    expect(cmds.length).toBeLessThan(10);
    let covered = 0;
    for (const c of cmds) covered += ((c.fields.num ?? 0) + 1) * 2 ** (c.fields.scale ?? 0);
    expect(covered).toBe(pages);
  });
});
