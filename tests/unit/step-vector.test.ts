/**
 * The arithmetic of step vectors (services/cost/step-vector.ts) and of an operation's context
 * (services/runtime/op-context.ts): modeled time is always where the context began plus its step
 * counts times the costs, across calls, holds and parallel branches; only the traced operation
 * records a tree, and its requests alone carry the explain flag.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { COST_STEPS, CostTable, type CostStep } from '../../services/cost/steps.js';
import { StepTable, VectorInterner, addPacked, decodeProvenance, dominates, encodeProvenance, ordered, pack, packDiff, packedDot, rebase, uninternVectors, unpack } from '../../services/cost/step-vector.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { flatten, traceTree, type TraceNode } from '../../services/runtime/op-trace.js';
import type { LinkClient, OutgoingRequest } from '../../services/runtime/transport/link.js';

const STEPS = Object.keys(COST_STEPS) as CostStep[];
/** Distinct costs (a prime per step) so a wrong count shows in the sum. */
const PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173];
const costsNs = Object.fromEntries(STEPS.map((s, i) => [s, PRIMES[i % PRIMES.length] as number]));
const costs = new CostTable(costsNs);

/** A peer whose handler charges on its own context and replies as the runtime does. */
function peer(handle: (ctx: OpContext, req: OutgoingRequest) => Promise<void> | void, links: Map<string, LinkClient> = new Map(), seen: OutgoingRequest[] = []): LinkClient {
  return {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      seen.push(req);
      const ctx = new OpContext(req.opId, req.modeledNs, costs, links);
      if (req.explain) ctx.explain();
      await handle(ctx, req);
      return {
        correlationId: 0, opId: req.opId, kind: req.kind, reply: true, status: 0, payload: Buffer.alloc(0), guestMemory: [],
        modeledNs: ctx.modeledNs, hops: [], holds: ctx.holds, provenance: ctx.provenance(), branched: ctx.branched, explain: false,
        explained: ctx.explaining ? ctx.explained() : [],
      };
    },
  } as unknown as LinkClient;
}

/** The charges on the critical path of a recorded tree, in ns. */
function onPathNs(nodes: readonly TraceNode[]): number {
  return nodes.reduce((n, x) => n + (x.offPath ? 0 : x.what === 'charge' ? x.endNs - x.atNs : onPathNs(x.below)), 0);
}

/** Modeled ns of a context's counts. */
const priced = (ctx: OpContext): number => costs.steps.dot(ctx.steps);

describe('step vectors', () => {
  it('index steps by the sorted names of the cost table, whatever order the map has', () => {
    const a = new StepTable({ b: 2, a: 1, c: 3 });
    const b = new StepTable({ c: 3, a: 1, b: 2 });
    expect(a.names).toEqual(['a', 'b', 'c']);
    expect(b.names).toEqual(a.names);
    expect([...a.ns]).toEqual([1, 2, 3]);
    expect(a.indexOf('c')).toBe(2);
    expect(a.indexOf('nope')).toBe(-1);
  });

  it('pack the non-zero counts as ascending (index, count) pairs and back', () => {
    const v = new Float64Array([0, 3, 0, 0, 1]);
    expect(pack(v)).toEqual([1, 3, 4, 1]);
    expect([...unpack([1, 3, 4, 1], 5)]).toEqual([...v]);
    expect(pack(new Float64Array(4))).toEqual([]);
    expect(packedDot([1, 3, 4, 1], new Float64Array([10, 20, 30, 40, 50]))).toBe(110);
  });

  it('refuse what a vector cannot carry: fractional or negative counts, pairs beyond the table', () => {
    expect(() => pack(new Float64Array([0.5]))).toThrow(/whole numbers/);
    expect(() => pack(new Float64Array([-1]))).toThrow(/whole numbers/);
    expect(() => addPacked(new Float64Array(2), [2, 1])).toThrow(/outside/);
    expect(() => addPacked(new Float64Array(2), [1])).toThrow(/pairs/);
  });

  it('rebase a vector counted from a later start onto the counts at that start', () => {
    const base = new Float64Array([1, 0, 2]);
    expect(rebase(base, [1, 4, 2, 1])).toEqual([0, 1, 1, 4, 2, 3]);
    expect(rebase(base, [])).toEqual([0, 1, 2, 2]);
  });

  it('order two branches only when one holds every count of the other', () => {
    const a = new Float64Array([2, 1, 0]);
    const b = new Float64Array([1, 1, 0]);
    const c = new Float64Array([0, 2, 0]);
    expect(dominates(a, b)).toBe(true);
    expect(ordered(a, b)).toBe(true);
    expect(ordered(b, a)).toBe(true);
    expect(ordered(a, c)).toBe(false);
  });

  it('travel in a reply as the varints of a packed repeated uint32: steps, then each hold\'s vectors', () => {
    const holds = [{ at: [0, 1, 3, 200], own: [5, 70000] }, { at: [], own: [2, 1] }];
    const buf = encodeProvenance([0, 1, 5, 2], holds);
    // n=2, (0,1), (5,2); n=2, (0,1), (3,200: two bytes); n=1, (5, 70000: three bytes); n=0; n=1, (2,1).
    expect([...buf]).toEqual([2, 0, 1, 5, 2, 2, 0, 1, 3, 0xc8, 0x01, 1, 5, 0xf0, 0xa2, 0x04, 0, 1, 2, 1]);
    expect(decodeProvenance(buf, 2)).toEqual({ steps: [0, 1, 5, 2], holds });
    expect(encodeProvenance([], []).length).toBe(0);
    expect(decodeProvenance(Buffer.alloc(0), 0)).toEqual({ steps: [], holds: [] });
    // A count up to 2^32 - 1 survives.
    expect(decodeProvenance(encodeProvenance([1, 0xffff_ffff], []), 0).steps).toEqual([1, 0xffff_ffff]);
  });

  it('refuse a reply\'s provenance that does not say what its holds are made of', () => {
    const buf = encodeProvenance([0, 1], [{ at: [], own: [1, 1] }]);
    expect(() => decodeProvenance(buf, 2)).toThrow(/ends in the middle/);
    expect(() => decodeProvenance(buf, 0)).toThrow(/past its last vector/);
    expect(() => decodeProvenance(Buffer.alloc(0), 1)).toThrow(/empty but the reply holds/);
    expect(() => decodeProvenance(Buffer.from([9, 1, 1]), 0)).toThrow(/more pairs than it holds/);
    expect(() => decodeProvenance(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), 0)).toThrow(/longer than 32 bits/);
  });

  it('take the steps charged between two vectors, never below zero', () => {
    let lower = 0;
    expect(packDiff(new Float64Array([3, 1, 4]), new Float64Array([1, 1, 5]), () => lower++)).toEqual([0, 2]);
    expect(lower).toBe(1);
  });

  it('store each distinct vector once and give it back by id', () => {
    const i = new VectorInterner();
    expect(i.id([0, 1, 3, 2])).toBe(0);
    expect(i.id([])).toBe(1);
    expect(i.id([0, 1, 3, 2])).toBe(0);
    expect(i.id([5, 1])).toBe(2);
    expect(i.flat).toEqual([2, 0, 1, 3, 2, 0, 1, 5, 1]);
    expect(uninternVectors(i.flat)).toEqual([[0, 1, 3, 2], [], [5, 1]]);
    expect(() => uninternVectors([3, 0, 1])).toThrow(/middle/);
  });
});

describe('an operation context', () => {
  it('keeps modeledNs equal to its counts times the costs for any sequence of charges (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: STEPS.length - 1 }), fc.integer({ min: 0, max: 600 })), { maxLength: 60 }), (charges) => {
        const ctx = new OpContext(1, 0, costs, new Map());
        for (const [s, times] of charges) ctx.charge(STEPS[s] as CostStep, times);
        expect(priced(ctx)).toBe(ctx.modeledNs);
        const total = charges.reduce((n, [s, times]) => n + times * (costsNs[STEPS[s] as string] as number), 0);
        expect(ctx.modeledNs).toBe(total);
      }),
    );
  });

  it('refuses to charge a step a fractional or negative number of times', () => {
    const ctx = new OpContext(1, 0, costs, new Map());
    expect(() => ctx.charge('guest.pte_write', 1.5)).toThrow(/whole number/);
    expect(() => ctx.charge('guest.pte_write', -1)).toThrow(/whole number/);
  });

  it('continues its counts with a callee\'s across sequential calls, holds re-priced from their vectors', async () => {
    const psmmu = peer(async (ctx) => {
      await ctx.hold('psmmu-0.cmdq', () => {
        ctx.charge('smmu.cmd_exec', 2);
        ctx.charge('smmu.sync');
      });
    });
    const vfio = peer(async (ctx) => {
      ctx.charge('ioctl.syscall');
      await ctx.hold('vfio.container-0', async () => {
        ctx.charge('kernel.cmdq_insert', 3);
        await ctx.call('psmmu-0', 'CMDQ_SUBMIT', Buffer.alloc(0));
      });
    }, new Map([['psmmu-0', psmmu]]));
    const ctx = new OpContext(1, 0, costs, new Map([['vfio', vfio]]));
    ctx.charge('guest.pte_write', 2);
    await ctx.call('vfio', 'HWPT_INVALIDATE', Buffer.alloc(0));
    ctx.charge('guest.iova_free');
    await ctx.call('vfio', 'HWPT_INVALIDATE', Buffer.alloc(0));
    expect(priced(ctx)).toBe(ctx.modeledNs);
    expect(ctx.branched).toBe(false);
    const expected = 2 * costsNs['guest.pte_write']! + costsNs['guest.iova_free']! + 2 * (costsNs['ioctl.syscall']! + 3 * costsNs['kernel.cmdq_insert']! + 2 * costsNs['smmu.cmd_exec']! + costsNs['smmu.sync']!);
    expect(ctx.modeledNs).toBe(expected);
    // Four holds (two per call: vfio's own first, then those its reply brought), each with its
    // vectors relative to this operation's start.
    expect(ctx.holds.map((h) => h.resource)).toEqual(['vfio.container-0', 'psmmu-0.cmdq', 'vfio.container-0', 'psmmu-0.cmdq']);
    for (const h of ctx.holds) {
      expect(packedDot(h.atSteps, costs.steps.ns)).toBe(h.atNs);
      expect(packedDot(h.ownSteps, costs.steps.ns)).toBe(h.ns);
    }
  });

  it('counts steps a profile prices at 0 ns too (their count is provenance, not time)', async () => {
    const zero = new CostTable({ ...costsNs, 'smmu.sync': 0 });
    const psmmu = { request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      const c = new OpContext(1, req.modeledNs, zero, new Map());
      c.charge('smmu.sync', 3);
      return { modeledNs: c.modeledNs, hops: [], holds: [], provenance: c.provenance(), branched: false, explained: [], status: 0, payload: Buffer.alloc(0), guestMemory: [] } as unknown as Envelope__Output;
    } } as unknown as LinkClient;
    const ctx = new OpContext(1, 0, zero, new Map([['psmmu-0', psmmu]]));
    await ctx.call('psmmu-0', 'CMDQ_SUBMIT', Buffer.alloc(0));
    expect(ctx.steps[zero.index('smmu.sync')]).toBe(3);
    expect(ctx.modeledNs).toBe(0);
  });

  it('takes the longest of parallel branches with its counts, and says when another could be the longest under other costs', async () => {
    const branch = (steps: [CostStep, number][]): LinkClient => peer((c) => {
      for (const [s, n] of steps) c.charge(s, n);
    });
    // Unordered: a costs more here, but b has a step a lacks.
    const links = new Map([
      ['a', branch([['smmu.sync', 10]])],
      ['b', branch([['smmu.cmd_exec', 1]])],
      // Ordered: c holds every count of d.
      ['c', branch([['smmu.sync', 2], ['smmu.cmd_exec', 1]])],
      ['d', branch([['smmu.sync', 1]])],
    ]);
    const par = new OpContext(1, 0, costs, links);
    par.charge('guest.pte_write');
    await Promise.all([par.call('a', 'CMDQ_SUBMIT', Buffer.alloc(0)), par.call('b', 'CMDQ_SUBMIT', Buffer.alloc(0))]);
    expect(par.modeledNs).toBe(costsNs['guest.pte_write']! + 10 * costsNs['smmu.sync']!);
    expect(priced(par)).toBe(par.modeledNs);
    expect(par.steps[costs.index('smmu.cmd_exec')]).toBe(0);
    expect(par.branched).toBe(true);

    const ord = new OpContext(1, 0, costs, links);
    await Promise.all([ord.call('d', 'CMDQ_SUBMIT', Buffer.alloc(0)), ord.call('c', 'CMDQ_SUBMIT', Buffer.alloc(0))]);
    expect(ord.modeledNs).toBe(2 * costsNs['smmu.sync']! + costsNs['smmu.cmd_exec']!);
    expect(priced(ord)).toBe(ord.modeledNs);
    expect(ord.branched).toBe(false);
  });

  it('carries a callee\'s branched mark up to the operation', async () => {
    const inner = peer((c) => c.charge('smmu.sync'));
    const other = peer((c) => c.charge('smmu.cmd_exec', 3));
    const mid = peer(async (c) => {
      await Promise.all([c.call('x', 'CMDQ_SUBMIT', Buffer.alloc(0)), c.call('y', 'CMDQ_SUBMIT', Buffer.alloc(0))]);
    }, new Map([['x', inner], ['y', other]]));
    const ctx = new OpContext(1, 0, costs, new Map([['vfio', mid]]));
    await ctx.call('vfio', 'HWPT_INVALIDATE', Buffer.alloc(0));
    expect(ctx.branched).toBe(true);
    expect(priced(ctx)).toBe(ctx.modeledNs);
  });

  it('records a tree only for the traced operation, and only its requests carry the flag', async () => {
    const seen: OutgoingRequest[] = [];
    const psmmu = peer(async (c) => {
      await c.hold('psmmu-0.cmdq', () => c.charge('smmu.sync'));
    }, new Map(), seen);
    const plain = new OpContext(1, 0, costs, new Map([['psmmu-0', psmmu]]));
    await plain.call('psmmu-0', 'CMDQ_SUBMIT', Buffer.alloc(0));
    expect(seen[0]?.explain).toBeUndefined();
    expect(plain.explained()).toEqual([]);

    const traced = new OpContext(2, 0, costs, new Map([['psmmu-0', psmmu]]));
    traced.explain();
    traced.charge('guest.cmdq_write', 2);
    await traced.call('psmmu-0', 'CMDQ_SUBMIT', Buffer.alloc(0), undefined, 'writel_relaxed CMDQ_PROD');
    expect(seen[1]?.explain).toBe(true);
    const tree = traceTree(traced.explained());
    expect(tree.map((n) => `${n.what} ${n.name}`)).toEqual(['charge guest.cmdq_write', 'call psmmu-0']);
    const call = tree[1];
    // The caller's words for the call travel with it; other events have none.
    expect(tree.map((n) => n.label)).toEqual(['', 'writel_relaxed CMDQ_PROD']);
    expect(call?.below.map((n) => `${n.what} ${n.name}`)).toEqual(['hold psmmu-0.cmdq']);
    expect(call?.below[0]?.below.map((n) => `${n.what} ${n.name} x${n.times}`)).toEqual(['charge smmu.sync x1']);
    expect(call?.endNs).toBe(traced.modeledNs);
    // The flat list round-trips.
    expect(flatten(tree)).toEqual(traced.explained());
  });

  it('marks the losing parallel branch, and what a winning one displaced, off the critical path', async () => {
    const slow = peer((c) => c.charge('smmu.sync', 5));
    const fast = peer((c) => c.charge('smmu.cmd_exec'));
    const ctx = new OpContext(1, 0, costs, new Map([['slow', slow], ['fast', fast]]));
    ctx.explain();
    await Promise.all([ctx.call('fast', 'CMDQ_SUBMIT', Buffer.alloc(0)), ctx.call('slow', 'CMDQ_SUBMIT', Buffer.alloc(0))]);
    const tree = traceTree(ctx.explained());
    const byPeer = new Map(tree.map((n) => [n.name, n]));
    expect(byPeer.get('slow')?.offPath).toBe(false);
    expect(byPeer.get('fast')?.offPath).toBe(true);
    expect(onPathNs(tree)).toBe(ctx.modeledNs);
  });

  it('keeps the charges on the critical path summing to modeledNs whatever runs beside a call', async () => {
    for (const slowTimes of [1, 3, 50]) {
      const slow = peer((c) => c.charge('smmu.sync', slowTimes));
      const fast = peer((c) => c.charge('smmu.cmd_exec'));
      const ctx = new OpContext(1, 0, costs, new Map([['slow', slow], ['fast', fast]]));
      ctx.explain();
      ctx.charge('guest.pte_write');
      await Promise.all([
        ctx.call('fast', 'CMDQ_SUBMIT', Buffer.alloc(0)),
        ctx.call('slow', 'CMDQ_SUBMIT', Buffer.alloc(0)),
        (async () => ctx.charge('guest.iova_free', 2))(),
      ]);
      ctx.charge('guest.iova_alloc');
      expect(priced(ctx)).toBe(ctx.modeledNs);
      expect(onPathNs(traceTree(ctx.explained()))).toBe(ctx.modeledNs);
    }
  });
});
