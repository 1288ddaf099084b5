import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  CERROR,
  MAX_LOG2,
  assertLog2,
  consErr,
  free,
  inc,
  index,
  isEmpty,
  isFull,
  ptr,
  size,
  slotOffset,
  used,
  withConsErr,
  wrap,
} from '../../services/formats/smmu/queue.js';

const SIZES = [0, 1, 3, 5, 8, 19, MAX_LOG2];

describe('index and wrap', () => {
  it('split a register at bit log2', () => {
    // log2 = 3: index [2:0], wrap bit 3
    expect(index(0b1101, 3)).toBe(0b101);
    expect(wrap(0b1101, 3)).toBe(1);
    expect(wrap(0b0101, 3)).toBe(0);
    expect(ptr(0x7f00000d, 3)).toBe(0b1101);
    // log2 = 0: one entry, no index bits, wrap is bit 0
    expect(index(1, 0)).toBe(0);
    expect(wrap(1, 0)).toBe(1);
    expect(size(5)).toBe(32);
  });

  it('ignore CONS.ERR and bit 31', () => {
    const reg = withConsErr(0x80000000 | 0b10110, CERROR.ABT);
    expect(index(reg, 4)).toBe(0b0110);
    expect(wrap(reg, 4)).toBe(1);
  });
});

describe('empty and full', () => {
  for (const log2 of SIZES) {
    const n = 2 ** log2;
    it(`2^${log2} entries`, () => {
      expect(isEmpty(0, 0, log2)).toBe(true);
      expect(isFull(0, 0, log2)).toBe(false);
      // Same index, different wrap: full.
      expect(isFull(n, 0, log2)).toBe(true);
      expect(isEmpty(n, 0, log2)).toBe(false);
      expect(isFull(0, n, log2)).toBe(true);
      // Same index and wrap after both wrapped: empty.
      expect(isEmpty(n + (n > 1 ? 1 : 0), n + (n > 1 ? 1 : 0), log2)).toBe(true);
      // ERR in CONS does not make a queue look non-empty or full.
      expect(isEmpty(3 & (2 * n - 1), withConsErr(3 & (2 * n - 1), CERROR.ILL), log2)).toBe(true);
      expect(isFull(n, withConsErr(0, CERROR.ATC_INV_SYNC), log2)).toBe(true);
    });
  }

  it('fill a queue to full and drain it back to empty, across the wrap', () => {
    for (const log2 of [0, 1, 2, 4]) {
      const n = 2 ** log2;
      // Start near the end so the walk crosses the wrap boundary.
      let prod = inc(0, log2, n - 1);
      let cons = prod;
      for (let i = 0; i < n; i++) {
        expect(isFull(prod, cons, log2)).toBe(false);
        expect(used(prod, cons, log2)).toBe(i);
        prod = inc(prod, log2);
      }
      expect(isFull(prod, cons, log2)).toBe(true);
      expect(used(prod, cons, log2)).toBe(n);
      expect(free(prod, cons, log2)).toBe(0);
      for (let i = 0; i < n; i++) {
        expect(isEmpty(prod, cons, log2)).toBe(false);
        cons = inc(cons, log2);
      }
      expect(isEmpty(prod, cons, log2)).toBe(true);
      expect(free(prod, cons, log2)).toBe(n);
    }
  });
});

describe('inc', () => {
  it('toggles wrap when passing the end', () => {
    // log2 = 3: index 7, wrap 0 -> index 0, wrap 1
    expect(inc(0b0111, 3)).toBe(0b1000);
    // index 7, wrap 1 -> index 0, wrap 0
    expect(inc(0b1111, 3)).toBe(0b0000);
    expect(inc(0b0110, 3, 3)).toBe(0b1001);
    expect(inc(0b1110, 3, 3)).toBe(0b0001);
    // n = queue size: same index, wrap toggled
    expect(inc(0b0101, 3, 8)).toBe(0b1101);
    expect(inc(0b0101, 3, 0)).toBe(0b0101);
    // one-entry queue: every inc toggles wrap
    expect(inc(0, 0)).toBe(1);
    expect(inc(1, 0)).toBe(0);
    // largest queue
    expect(inc(2 ** MAX_LOG2 - 1, MAX_LOG2)).toBe(2 ** MAX_LOG2);
    expect(inc(2 ** (MAX_LOG2 + 1) - 1, MAX_LOG2)).toBe(0);
  });

  it('keeps CONS.ERR and bit 31 and stays unsigned', () => {
    const cons = withConsErr(0x80000000 | 0b1111, CERROR.ILL);
    const next = inc(cons, 3);
    expect(next).toBeGreaterThanOrEqual(0);
    expect(consErr(next)).toBe(CERROR.ILL);
    expect(next >>> 31).toBe(1);
    expect(ptr(next, 3)).toBe(0);
  });

  it('agrees with a model counter for random sizes and steps', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MAX_LOG2 }).chain((log2) =>
          fc.tuple(
            fc.constant(log2),
            fc.integer({ min: 0, max: 2 ** (log2 + 1) - 1 }),
            fc.integer({ min: 0, max: 2 ** log2 }),
            fc.integer({ min: 0, max: 0x7f }),
          ),
        ),
        ([log2, start, n, err]) => {
          const reg = withConsErr(start, err);
          const next = inc(reg, log2, n);
          const model = (start + n) % 2 ** (log2 + 1);
          expect(ptr(next, log2)).toBe(model);
          expect(index(next, log2)).toBe(model % 2 ** log2);
          expect(wrap(next, log2)).toBe(Math.floor(model / 2 ** log2));
          expect(consErr(next)).toBe(err);
          // Advancing prod by n from an empty queue leaves exactly n used.
          expect(used(next, reg, log2)).toBe(n);
          expect(free(next, reg, log2)).toBe(2 ** log2 - n);
        },
      ),
    );
  });
});

describe('used and free', () => {
  it('count across the wrap boundary', () => {
    // log2 = 4 (16 entries): prod at index 2 wrap 1, cons at index 14 wrap 0 -> 4 used
    const prod = 0b1_0010;
    const cons = 0b0_1110;
    expect(used(prod, cons, 4)).toBe(4);
    expect(free(prod, cons, 4)).toBe(12);
    // both wrapped once more
    expect(used(0b0_0010, 0b1_1110, 4)).toBe(4);
    expect(used(0b1_0000, 0b0_0000, 4)).toBe(16);
    expect(used(0b0_0000, 0b1_0000, 4)).toBe(16);
  });
});

describe('CONS.ERR', () => {
  it('sets and clears bits [30:24] leaving index and wrap intact', () => {
    const cons = 0b1_0110; // log2 = 4: index 6, wrap 1
    for (const err of [CERROR.ILL, CERROR.ABT, CERROR.ATC_INV_SYNC, 0x7f]) {
      const withErr = withConsErr(cons, err);
      expect(consErr(withErr)).toBe(err);
      expect(withErr).toBe((cons | (err << 24)) >>> 0);
      expect(index(withErr, 4)).toBe(6);
      expect(wrap(withErr, 4)).toBe(1);
      const cleared = withConsErr(withErr, CERROR.NONE);
      expect(cleared).toBe(cons);
      expect(consErr(cleared)).toBe(CERROR.NONE);
    }
    expect(withConsErr(0x80000000, CERROR.ILL)).toBe(0x81000000);
    expect(consErr(0xffffffff)).toBe(0x7f);
    expect(consErr(0)).toBe(0);
  });

  it('replaces an existing error instead of OR-ing into it', () => {
    expect(consErr(withConsErr(withConsErr(5, CERROR.ABT), CERROR.ILL))).toBe(CERROR.ILL);
  });

  it('rejects a value that does not fit', () => {
    expect(() => withConsErr(0, 0x80)).toThrow(RangeError);
    expect(() => withConsErr(0, -1)).toThrow(RangeError);
  });
});

describe('helpers', () => {
  it('slotOffset is index times entry size', () => {
    expect(slotOffset(0b1_0011, 4, 16)).toBe(48);
    expect(slotOffset(withConsErr(0b0_1111, CERROR.ILL), 4, 32)).toBe(480);
  });

  it('assertLog2 accepts 0..MAX_LOG2 only', () => {
    expect(() => assertLog2(0)).not.toThrow();
    expect(() => assertLog2(MAX_LOG2)).not.toThrow();
    expect(() => assertLog2(MAX_LOG2 + 1)).toThrow(RangeError);
    expect(() => assertLog2(-1)).toThrow(RangeError);
    expect(() => assertLog2(2.5)).toThrow(RangeError);
  });
});
