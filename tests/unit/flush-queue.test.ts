import { describe, expect, it } from 'vitest';
import { FQ_POLICIES, FlushQueues } from '../../services/guest/flush-queue.js';

describe('lazy mode flush queues', () => {
  it('flush a per-CPU queue when it holds 256 entries, and only that CPU\'s entries', () => {
    const fq = new FlushQueues<number>('per-cpu');
    for (let i = 0; i < 255; i++) {
      expect(fq.push(0, i, i)).toBeUndefined();
      expect(fq.push(1, i, 1000 + i)).toBeUndefined();
    }
    const due = fq.push(0, 255, 255);
    expect(due).toHaveLength(256);
    expect(due?.every((e) => e < 1000)).toBe(true);
    expect(fq.pending()).toBe(255);
  });

  it('flush a queue whose oldest entry is 10 ms old on the vCPU\'s modeled clock', () => {
    const fq = new FlushQueues<string>('per-cpu');
    expect(fq.push(2, 1_000, 'a')).toBeUndefined();
    expect(fq.push(2, 1_000 + 9_999_999, 'b')).toBeUndefined();
    expect(fq.push(2, 1_000 + 10_000_000, 'c')).toEqual(['a', 'b', 'c']);
    // The clock of the next entry starts a new age.
    expect(fq.push(2, 50_000_000, 'd')).toBeUndefined();
  });

  it('share one queue of 32768 entries or 1000 ms between CPUs in single mode', () => {
    const fq = new FlushQueues<number>('single');
    expect(fq.policy).toEqual(FQ_POLICIES.single);
    for (let i = 0; i < 32767; i++) expect(fq.push(i % 4, 0, i)).toBeUndefined();
    expect(fq.push(3, 0, 32767)).toHaveLength(32768);
    expect(fq.push(1, 5, 1)).toBeUndefined();
    expect(fq.push(2, 5 + 999_999_999, 2)).toBeUndefined();
    expect(fq.push(0, 5 + 1_000_000_000, 3)).toEqual([1, 2, 3]);
  });

  it('drain what is left, queue by queue in CPU order', () => {
    const fq = new FlushQueues<number>('per-cpu');
    fq.push(3, 0, 30);
    fq.push(1, 0, 10);
    fq.push(1, 0, 11);
    expect(fq.drain()).toEqual([
      [1, [10, 11]],
      [3, [30]],
    ]);
    expect(fq.pending()).toBe(0);
  });
});
