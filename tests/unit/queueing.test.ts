import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { simulateQueueing, type TimedOp } from '../../services/controller/queueing.js';

const op = (thread: number, startNs: number, ns: number, holds: TimedOp['holds'] = []): TimedOp => ({ thread, startNs, ns, holds });

describe('queueing in modeled time', () => {
  it('leaves operations that share nothing at their own latency', () => {
    const r = simulateQueueing([op(0, 0, 100), op(1, 0, 50), op(0, 100, 30)]);
    expect(r.latencyNs).toEqual([100, 50, 30]);
    expect(r.waitNs).toEqual([0, 0, 0]);
    expect(r.resources).toEqual([]);
  });

  it('serves a resource first come first served in modeled time, ties by thread', () => {
    const hold = [{ resource: 'psmmu-0.cmdq', atNs: 20, ns: 100 }];
    const r = simulateQueueing([op(1, 0, 150, hold), op(0, 0, 150, hold), op(2, 50, 150, hold)]);
    // Thread 0 wins the tie at t=20 and holds until 120; thread 1 (arrived 20) goes next until 220;
    // thread 2 arrived at 70 and gets it at 220.
    expect(r.waitNs).toEqual([100, 0, 150]);
    expect(r.latencyNs).toEqual([250, 150, 300]);
    expect(r.resources).toEqual([{ resource: 'psmmu-0.cmdq', holds: 3, busyNs: 300, waitNs: 250, maxWaitNs: 150, maxQueue: 2 }]);
  });

  it('delays a thread\'s next operation by what its previous one waited (closed loop)', () => {
    const hold = [{ resource: 'qemu-0.bql', atNs: 0, ns: 100 }];
    const r = simulateQueueing([op(0, 0, 100, hold), op(1, 0, 100, hold), op(1, 150, 10)]);
    expect(r.latencyNs).toEqual([100, 200, 10]);
    expect(r.threadShiftNs.get(1)).toBe(100);
  });

  it('starts an arriving operation at its arrival, not later by what the thread waited before', () => {
    const hold = [{ resource: 'r', atNs: 0, ns: 100 }];
    const later = { ...op(1, 1000, 10), arrival: true };
    const soon = { ...op(1, 150, 10), arrival: true };
    expect(simulateQueueing([op(0, 0, 100, hold), op(1, 0, 100, hold), later]).latencyNs).toEqual([100, 200, 10]);
    // Arriving while the thread is still busy, it starts when the thread is free, and its latency
    // counts from its arrival (no coordinated omission).
    const r = simulateQueueing([op(0, 0, 100, hold), op(1, 0, 100, hold), soon]);
    expect(r.latencyNs).toEqual([100, 200, 60]);
    expect(r.threadShiftNs.get(1)).toBe(200 + 10 - 160);
  });

  it('keeps an outer lock while the operation waits for an inner one', () => {
    // Thread 0 holds the BQL [0,300) and inside it the CMDQ [100,200); thread 1 holds the CMDQ
    // [0,150). Thread 0 waits 50 for the CMDQ, so its BQL is held 50 longer.
    const a = op(0, 0, 300, [{ resource: 'bql', atNs: 0, ns: 300 }, { resource: 'cmdq', atNs: 100, ns: 100 }]);
    const b = op(1, 0, 150, [{ resource: 'cmdq', atNs: 0, ns: 150 }]);
    const c = op(2, 10, 10, [{ resource: 'bql', atNs: 0, ns: 10 }]);
    const r = simulateQueueing([a, b, c]);
    expect(r.latencyNs).toEqual([350, 150, 350 - 10 + 10]);
    expect(r.resources.find((x) => x.resource === 'bql')?.busyNs).toBe(360);
  });

  it('counts a resource busy over the run alone: a background timer\'s hold after the last I/O is kept apart', () => {
    // Threads 0 and 1 (the run) end at 200; a flush on thread 9 (a lazy flush queue's timer) arrives
    // at 150 and holds the lock [150, 250): 50 in the run, 50 after it.
    const run = [op(0, 0, 200, [{ resource: 'lock', atNs: 0, ns: 100 }]), op(1, 0, 100, [{ resource: 'lock', atNs: 0, ns: 50 }])];
    const flush = { ...op(9, 150, 100, [{ resource: 'lock', atNs: 0, ns: 100 }]), arrival: true };
    const r = simulateQueueing([...run, flush], { foreground: new Set([0, 1]) });
    const lock = r.resources.find((x) => x.resource === 'lock');
    expect(lock).toMatchObject({ busyNs: 150 + 50, afterEndNs: 50 });
    // Every thread in the foreground (the default): all of it counts.
    expect(simulateQueueing([...run, flush]).resources.find((x) => x.resource === 'lock')).toMatchObject({ busyNs: 250 });
  });

  it('lets one operation use a resource back to back without queueing on itself', () => {
    const r = simulateQueueing([op(0, 0, 200, [{ resource: 'q', atNs: 0, ns: 100 }, { resource: 'q', atNs: 100, ns: 100 }])]);
    expect(r.latencyNs).toEqual([200]);
  });

  it('gives the same answer whatever order the threads\' operations are listed in', () => {
    const arb = fc.array(
      fc.record({ thread: fc.integer({ min: 0, max: 3 }), ns: fc.integer({ min: 1, max: 500 }), at: fc.integer({ min: 0, max: 200 }), hold: fc.integer({ min: 0, max: 300 }), res: fc.constantFrom('a', 'b') }),
      { minLength: 1, maxLength: 40 },
    );
    fc.assert(
      fc.property(arb, fc.integer(), (spec, seed) => {
        const clocks = new Map<number, number>();
        const ops = spec.map((s) => {
          const start = clocks.get(s.thread) ?? 0;
          const ns = Math.max(s.ns, s.at + s.hold);
          clocks.set(s.thread, start + ns + 7);
          return op(s.thread, start, ns, [{ resource: s.res, atNs: s.at, ns: s.hold }]);
        });
        const base = simulateQueueing(ops);
        // Shuffle threads as blocks (each thread's own order is its program order).
        const threads = [...new Set(ops.map((o) => o.thread))];
        threads.sort((x, y) => ((x * 7919 + seed) % 13) - ((y * 7919 + seed) % 13));
        const order = threads.flatMap((t) => ops.map((o, i) => [o, i] as const).filter(([o]) => o.thread === t));
        const shuffled = simulateQueueing(order.map(([o]) => o));
        const back = new Array<number>(ops.length);
        order.forEach(([, i], k) => (back[i] = shuffled.latencyNs[k] as number));
        expect(back).toEqual(base.latencyNs);
        for (const [i, o] of ops.entries()) expect(base.latencyNs[i]).toBeGreaterThanOrEqual(o.ns);
      }),
    );
  });
});
