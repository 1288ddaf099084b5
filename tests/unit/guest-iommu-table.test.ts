import { describe, expect, it } from 'vitest';
import { IommuTable } from '../../services/designs/spapr-tce/iommu-table.js';

describe('the pseries guest IOBA allocator', () => {
  it('never hands out entry 0 and moves small allocations to the next 16-entry block', () => {
    const t = new IommuTable(1024, 1);
    expect(t.isSet(0)).toBe(true);
    expect(t.alloc(0, 1)).toBe(1);
    expect(t.alloc(0, 1)).toBe(16);
    expect(t.alloc(0, 8)).toBe(32);
  });

  it('does not round the hint after a large allocation (more than 15 pages)', () => {
    const t = new IommuTable(1024, 1);
    expect(t.alloc(0, 20)).toBe(1);
    expect(t.alloc(0, 20)).toBe(21);
  });

  it('gives each CPU its own pool slice', () => {
    const t = new IommuTable(1024, 4);
    expect(t.alloc(0, 1)).toBe(1);
    expect(t.alloc(1, 1)).toBe(256);
    expect(t.alloc(3, 2)).toBe(768);
    expect(t.alloc(5, 1)).toBe(272); // CPU 5 shares pool 1 (modulo the pool count)
  });

  it('wraps to the start of its pool when the hint reaches the end, reusing freed entries', () => {
    const t = new IommuTable(64, 1);
    const a = t.alloc(0, 30) as number;
    const b = t.alloc(0, 30) as number;
    expect([a, b]).toEqual([1, 31]);
    expect(t.alloc(0, 30)).toBeUndefined();
    expect(t.free(a, 30)).toBe(true);
    expect(t.alloc(0, 30)).toBe(1);
  });

  it('falls back to the other pools when its own is full, and fails when all are', () => {
    const t = new IommuTable(64, 2);
    expect(t.alloc(0, 31)).toBe(1);
    expect(t.alloc(0, 16)).toBe(32);
    expect(t.alloc(0, 16)).toBe(48);
    expect(t.alloc(1, 1)).toBeUndefined();
  });

  it('refuses to free a range outside the table', () => {
    const t = new IommuTable(64, 1);
    expect(t.free(60, 8)).toBe(false);
    expect(t.free(-1, 1)).toBe(false);
  });
});
