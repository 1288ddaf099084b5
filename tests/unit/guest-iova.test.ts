import { describe, expect, it } from 'vitest';
import { CpuIovaSpace, IovaAllocator } from '../../services/guest/iova.js';

const PAGE = 0x1000;

describe('the guest IOVA allocator', () => {
  it('carves top-down and hands back the most recently freed range of a size first', () => {
    const a = new IovaAllocator(0x10_0000, 0x20_0000);
    const x = a.alloc(1);
    const y = a.alloc(2);
    expect([x, y]).toEqual([0x20_0000 - PAGE, 0x20_0000 - 3 * PAGE]);
    a.release(x, 1);
    a.release(y, 2);
    expect(a.alloc(2)).toBe(y);
    expect(a.alloc(1)).toBe(x);
  });

  it('reports a full window as undefined from tryAlloc, as a RangeError from alloc', () => {
    const a = new IovaAllocator(0, 4 * PAGE);
    expect(a.tryAlloc(3)).toBe(PAGE);
    expect(a.tryAlloc(2)).toBeUndefined();
    expect(() => a.alloc(2)).toThrow(RangeError);
    expect(a.tryAlloc(1)).toBe(0);
  });

  it('gives each CPU its own allocator over its own slice of the window', () => {
    const s = new CpuIovaSpace(0x1_0000_0000, 0x1000_0000);
    expect(s.of(0)).toBe(s.of(0));
    expect(s.of(0).alloc(1)).toBe(0x1_1000_0000 - PAGE);
    expect(s.of(3).alloc(1)).toBe(0x1_4000_0000 - PAGE);
  });
});
