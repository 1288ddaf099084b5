import { describe, expect, it } from 'vitest';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import type { GuestKernel } from '../../services/guest/driver.js';
import { FQ_POLICIES, FlushQueue } from '../../services/guest/flush-queue.js';
import { OpContext } from '../../services/runtime/op-context.js';

const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 0])));
const ctx = (): OpContext => new OpContext(1, 0, costs, new Map());

/**
 * One domain's flush queue over a kernel whose timer context records what ran there, and a
 * domain whose flush and frees are recorded: which context (an unmap's, or the timer's) paid them.
 */
function rig(kind: 'per-cpu' | 'single' = 'per-cpu', cpus = 2) {
  const flushes: { by: 'unmap' | 'timer'; cpu: number }[] = [];
  const freed: { by: 'unmap' | 'timer'; items: number[] }[] = [];
  const timers: { op: string; atNs: number }[] = [];
  let inTimer = false;
  const kernel = {
    env: { topology: { guest: { flushQueue: kind } }, newContext: () => ctx() },
    vcpuNs: new Array<number>(cpus).fill(0),
    timer: async (op: string, atNs: number, work: (c: OpContext) => Promise<void>) => {
      timers.push({ op, atNs });
      inTimer = true;
      await work(ctx());
      inTimer = false;
    },
  } as unknown as GuestKernel;
  const fq = new FlushQueue<number>(kind, kernel, {
    flush: async (_c, cpu) => {
      flushes.push({ by: inTimer ? 'timer' : 'unmap', cpu });
      return 0;
    },
    release: (_c, items) => freed.push({ by: inTimer ? 'timer' : 'unmap', items: [...items] }),
  });
  return { fq, kernel, flushes, freed, timers };
}

describe('lazy mode flush queues (dma-iommu queue_iova, fq_ring_free_locked, fq_flush_timeout)', () => {
  it('a per-CPU ring of 256 holds 255: the 256th unmap flushes first, frees the 255, and its own entry stays queued', async () => {
    const r = rig();
    for (let i = 0; i < 255; i++) expect(await r.fq.queue(ctx(), 0, 0, i)).toBe(0);
    expect(r.flushes).toEqual([]);
    expect(await r.fq.queue(ctx(), 0, 0, 255)).toBe(0);
    expect(r.flushes).toEqual([{ by: 'unmap', cpu: 0 }]);
    expect(r.freed).toEqual([{ by: 'unmap', items: Array.from({ length: 255 }, (_, i) => i) }]);
    expect(r.fq.pending()).toBe(1);
    expect(r.fq.counters).toEqual({ fullFlushes: 1, timerFlushes: 0 });
  });

  it('another CPU frees its own entries that a finished flush covers at its next unmap, with no invalidation of its own', async () => {
    const r = rig();
    await r.fq.queue(ctx(), 1, 0, 1000);
    await r.fq.queue(ctx(), 1, 0, 1001);
    for (let i = 0; i < 256; i++) await r.fq.queue(ctx(), 0, 0, i); // CPU 0's ring fills and flushes
    expect(r.flushes).toHaveLength(1);
    r.freed.length = 0;
    await r.fq.queue(ctx(), 1, 0, 1002);
    expect(r.flushes).toHaveLength(1);
    expect(r.freed).toEqual([{ by: 'unmap', items: [1000, 1001] }]);
    expect(r.fq.pending()).toBe(2); // CPU 0's 256th entry and CPU 1's newest
  });

  it('one timer per domain, armed by the first entry only: at its modeled time it flushes once and frees every CPU\'s ring, as its own operation', async () => {
    const r = rig();
    await r.fq.queue(ctx(), 0, 1_000, 1);
    await r.fq.queue(ctx(), 1, 5_000_000, 2); // does not re-arm
    r.kernel.vcpuNs[1] = 10_000_999;
    await r.fq.enter(1);
    expect(r.timers).toEqual([]);
    r.kernel.vcpuNs[1] = 10_001_000;
    await r.fq.enter(1);
    expect(r.timers).toEqual([{ op: 'flush', atNs: 10_001_000 }]);
    // Run on the CPU that armed it; paid in timer context, by no unmap.
    expect(r.flushes).toEqual([{ by: 'timer', cpu: 0 }]);
    expect(r.freed).toEqual([{ by: 'timer', items: [1] }, { by: 'timer', items: [2] }]);
    expect(r.fq.pending()).toBe(0);
    // The next entry arms it again.
    await r.fq.queue(ctx(), 1, 20_000_000, 3);
    await r.fq.drain();
    expect(r.timers.at(-1)).toEqual({ op: 'flush', atNs: 30_000_000 });
    expect(r.fq.counters).toEqual({ fullFlushes: 0, timerFlushes: 2 });
  });

  it('single: one ring of 32768 for every CPU (full at 32767) and a 1000 ms timer', async () => {
    const r = rig('single', 4);
    expect(r.fq.policy).toEqual(FQ_POLICIES.single);
    for (let i = 0; i < 32767; i++) await r.fq.queue(ctx(), i % 4, 0, i);
    expect(r.flushes).toEqual([]);
    await r.fq.queue(ctx(), 3, 0, 32767);
    expect(r.flushes).toEqual([{ by: 'unmap', cpu: 3 }]);
    expect(r.freed[0]?.items).toHaveLength(32767);
    await r.fq.drain();
    expect(r.timers).toEqual([{ op: 'flush', atNs: 1_000_000_000 }]);
  });

  it('picks Linux\'s queue for the driver unless guest.flushQueue names one (iommu_dma_init_options: single when shadow_on_flush)', () => {
    const kernel = (k: string): GuestKernel => ({ env: { topology: { guest: { flushQueue: k } } } }) as unknown as GuestKernel;
    expect(FlushQueue.kindFor(kernel('auto'), true)).toBe('single');
    expect(FlushQueue.kindFor(kernel('auto'), false)).toBe('per-cpu');
    expect(FlushQueue.kindFor(kernel('per-cpu'), true)).toBe('per-cpu');
    expect(FlushQueue.kindFor(kernel('single'), false)).toBe('single');
  });
});
