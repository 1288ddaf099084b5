/**
 * Where an operation's modeled time goes (controller/breakdown.ts) and re-pricing a recorded run
 * (controller/recorded.ts), over timelines the guest's own recorder (guest/op-stats.ts) builds from
 * operation contexts: the breakdown adds up to the modeled mean with queueing waits and open-loop
 * backlogs, and re-pricing with the run's own costs gives the run's modeled results to the byte.
 */
import { describe, expect, it } from 'vitest';
import { loadProfile, profileCosts } from '../../services/cost/profile.js';
import { CostTable, type CostStep } from '../../services/cost/steps.js';
import { breakdownTotal, VCPU_BACKLOG } from '../../services/controller/breakdown.js';
import { runNotes } from '../../services/controller/notes.js';
import { combineGuests } from '../../services/controller/timeline.js';
import { OpStats } from '../../services/guest/op-stats.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import type { StartReply__Output } from '../../services/runtime/generated/vmmsim/v1/StartReply.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { EndpointTable } from '../../services/runtime/topology.js';
import type { LinkClient, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { MODEL } from '../../services/designs/names.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { devices } from '../../services/controller/session.js';

const profile = loadProfile('arm64-kunpeng920');
const costsNs = profileCosts(profile);
const costs = new CostTable(costsNs);

/** A host side that holds VM `vm`'s container lock over its work, and the pSMMU's queue below it. */
function host(vm: number, pages: number): LinkClient {
  return {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      const ctx = new OpContext(req.opId, req.modeledNs, costs, new Map());
      ctx.charge('ioctl.syscall');
      await ctx.hold(`vfio.container-${vm}`, async () => {
        ctx.charge('kernel.vfio_dma_op');
        ctx.charge('kernel.iommu_pte_write', pages);
        await ctx.hold('psmmu-0.cmdq', () => {
          ctx.charge('smmu.cmd_exec', pages);
          ctx.charge('smmu.sync');
        });
      });
      return {
        correlationId: 0, opId: req.opId, kind: req.kind, reply: true, status: 0, payload: Buffer.alloc(0), guestMemory: [],
        modeledNs: ctx.modeledNs, hops: [], holds: ctx.holds, provenance: ctx.provenance(), branched: ctx.branched, explain: false, explained: [],
      };
    },
  } as unknown as LinkClient;
}

interface Plan {
  threads: number;
  iterations: number;
  /** Open loop: an arrival every this many ns per thread (its map), else closed loop. */
  everyNs?: number;
  gapNs?: number;
}

/** One guest's Start reply, recorded by the guest's own OpStats from real operation contexts. */
async function guest(vm: number, p: Plan): Promise<StartReply__Output> {
  const stats = new OpStats(new EndpointTable([]));
  stats.declare('map');
  stats.declare('unmap');
  const link = host(vm, 1 + (vm % 2));
  const clocks: number[] = [];
  for (let t = 0; t < p.threads; t++) clocks.push(0);
  for (let i = 0; i < p.iterations; i++) {
    for (let t = 0; t < p.threads; t++) {
      for (const [name, steps] of [['map', ['guest.iova_alloc', 'guest.pte_write']], ['unmap', ['guest.pte_write', 'guest.cmdq_write', 'guest.iova_free']]] as const) {
        const ctx = new OpContext(1 + i, 0, costs, new Map([['vfio', link]]));
        for (const s of steps) ctx.charge(s as CostStep);
        await ctx.call('vfio', 'VFIO_DMA_MAP', Buffer.alloc(0));
        const arrival = name === 'map' && p.everyNs !== undefined;
        const start = arrival ? i * (p.everyNs as number) : (clocks[t] as number);
        stats.record(name, 1000, ctx, t, start, arrival);
        clocks[t] = start + ctx.modeledNs + (p.gapNs ?? 0);
      }
    }
  }
  const { timeline, resourceNames, stepVectors } = stats.takeTimeline();
  return {
    ops: stats.opReports(), hops: [], elapsedSec: 0, modeledElapsedNs: 0, guestCommands: 0, workloadCounters: {}, resources: [], timeline, resourceNames,
    threadEndNs: clocks, emulatedCommands: 0, stepNames: [...costs.steps.names], stepVectors, explained: null,
  } as unknown as StartReply__Output;
}

describe('the breakdown of a run', () => {
  for (const [what, plan] of [
    ['closed loop, contended', { threads: 3, iterations: 20 }],
    ['closed loop with think time', { threads: 2, iterations: 15, gapNs: 1500 }],
    ['open loop faster than it can serve', { threads: 2, iterations: 20, everyNs: 2000 }],
  ] as const) {
    it(`adds up to each operation's modeled mean within 1 ns (${what})`, async () => {
      const replies = [await guest(0, plan), await guest(1, plan)];
      const c = combineGuests(replies, [0, 1], { profile, costs: costsNs });
      for (const op of c.ops) {
        expect(op.breakdown.length, op.op).toBeGreaterThan(0);
        expect(Math.abs(breakdownTotal(op.breakdown) - op.modeledNs.mean), `${what} ${op.op}`).toBeLessThanOrEqual(1);
        for (const e of op.breakdown) {
          expect(e.ns).toBeGreaterThanOrEqual(0);
          if (!e.step.startsWith('wait:')) {
            expect(e.functions.length, e.step).toBeGreaterThan(0);
            expect(e.confidence).toBe(profile.steps[e.step]?.confidence);
            // ns per operation = its count per operation x its cost.
            expect(e.ns).toBeCloseTo(e.perOp * (costsNs[e.step] as number), 2);
          }
        }
      }
      const waits = c.ops.flatMap((o) => o.breakdown.filter((e) => e.step.startsWith('wait:') && e.ns > 0));
      expect(waits.length, 'some operation waited').toBeGreaterThan(0);
      if (plan === undefined || !('everyNs' in plan)) expect(waits.some((w) => w.step === VCPU_BACKLOG)).toBe(false);
      else expect(waits.some((w) => w.step === VCPU_BACKLOG)).toBe(true);
    });
  }

  it('lists the steps in the order of steps.ts, then each resource\'s wait, each with its holds per operation', async () => {
    const c = combineGuests([await guest(0, { threads: 2, iterations: 5 })], [0], { profile, costs: costsNs });
    const unmap = c.ops.find((o) => o.op === 'unmap');
    expect(unmap?.breakdown.map((e) => e.step)).toEqual([
      'guest.iova_free', 'guest.pte_write', 'guest.cmdq_write', 'ioctl.syscall', 'kernel.vfio_dma_op', 'kernel.iommu_pte_write', 'smmu.cmd_exec', 'smmu.sync',
      'wait:psmmu-0.cmdq', 'wait:vfio.container-0',
    ]);
    expect(unmap?.breakdown.find((e) => e.step === 'wait:vfio.container-0')?.perOp).toBe(1);
    // The container lock is held over the VFIO and SMMU steps: its wait is as sure as the least sure of them.
    expect(unmap?.breakdown.find((e) => e.step === 'wait:vfio.container-0')?.confidence).toBe('U');
  });
});

describe('re-pricing a recorded run', () => {
  const modeled = (c: ReturnType<typeof combineGuests>): string =>
    JSON.stringify({ ops: c.ops.map((o) => ({ op: o.op, modeledNs: o.modeledNs, breakdown: o.breakdown })), elapsed: c.modeledElapsedNs, resources: c.resources });

  for (const [what, plan] of [
    ['closed loop', { threads: 3, iterations: 20, gapNs: 700 }],
    ['open loop', { threads: 2, iterations: 20, everyNs: 2500 }],
  ] as const) {
    it(`with the run's own costs gives its modeled results byte for byte (${what})`, async () => {
      const replies = [await guest(0, plan), await guest(1, plan)];
      const recorded = combineGuests(replies, [0, 1], { profile, costs: costsNs });
      const repriced = combineGuests(replies, [0, 1], { profile, costs: costsNs, reprice: true });
      expect(modeled(repriced)).toBe(modeled(recorded));
      // Each operation and hold priced from its vectors is the time it recorded.
      recorded.replay.ops.forEach((o, i) => {
        const r = repriced.replay.ops[i];
        expect(r?.ns).toBe(o.ns);
        expect(r?.startNs).toBe(o.startNs);
        expect(r?.holds).toEqual(o.holds);
      });
    });
  }

  it('under other costs moves each step\'s share by its cost and replays the queues again', async () => {
    const replies = [await guest(0, { threads: 3, iterations: 10 })];
    const base = combineGuests(replies, [0], { profile, costs: costsNs });
    const doubled = Object.fromEntries(Object.entries(costsNs).map(([k, v]) => [k, k === 'smmu.sync' ? 2 * v : v]));
    const other = combineGuests(replies, [0], { profile, costs: doubled, reprice: true });
    for (const op of other.ops) {
      const b = base.ops.find((o) => o.op === op.op);
      const sync = (x: typeof op | undefined): number => x?.breakdown.find((e) => e.step === 'smmu.sync')?.ns ?? NaN;
      expect(sync(op)).toBeCloseTo(2 * sync(b), 6);
      expect(op.modeledNs.mean).toBeGreaterThan(b?.modeledNs.mean ?? Infinity);
      expect(Math.abs(breakdownTotal(op.breakdown) - op.modeledNs.mean)).toBeLessThanOrEqual(1);
    }
  });
});

describe('a run\'s notes', () => {
  const codes = (scenario: Parameters<typeof resolveScenario>[0], model: string, ops?: { op: string; breakdown: { step: string; perOp: number }[] }[]): string[] => {
    const s = resolveScenario(scenario);
    return runNotes({ scenario: s, model, profile, devices: devices(s), ...(ops ? { ops } : {}) }).map((n) => n.code).filter((c) => c !== 'arch-mismatch');
  };

  it('say a single vSMMU over several pSMMUs and a VMID shared across them are not upstream', () => {
    expect(codes({ topology: { psmmus: 2, vsmmu: 'single' } }, MODEL.nestedSmmuv3)).toEqual(['exploration.single-vsmmu', 'exploration.shared-vmid']);
    expect(codes({ topology: { psmmus: 2, vsmmu: 'single', dispatch: 'lookup', vmid: 'per-vsmmu' } }, MODEL.nestedSmmuv3Vcmdq)).toEqual(['exploration.single-vsmmu']);
    expect(codes({ topology: { psmmus: 2, vsmmu: 'per-psmmu', vmid: 'per-vsmmu' } }, MODEL.nestedSmmuv3)).toEqual([]);
    expect(codes({ topology: { psmmus: 2, vsmmu: 'per-psmmu' } }, MODEL.nestedSmmuv3)).toEqual(['exploration.shared-vmid']);
  });

  it('say nothing of one pSMMU per VM, or of designs the topology keys do not shape', () => {
    expect(codes({ topology: { psmmus: 1 } }, MODEL.nestedSmmuv3)).toEqual([]);
    // Two VMs, one device each behind its own pSMMU: no VM spans two.
    expect(codes({ topology: { psmmus: 2, vms: 2 } }, MODEL.nestedSmmuv3)).toEqual([]);
    expect(codes({ topology: { psmmus: 2 } }, MODEL.virtioIommu)).toEqual([]);
  });

  it('say a design is not upstream, and name the steps no upstream code runs', () => {
    expect(codes({}, MODEL.vhostIommu)).toEqual(['design.not-upstream']);
    const ops = [{ op: 'unmap', breakdown: [{ step: 'kernel.vhost_req', perOp: 1 }, { step: 'exit.hcall', perOp: 1 }] }];
    const notes = runNotes({ scenario: resolveScenario({}), model: MODEL.vhostIommu, profile, devices: [], ops });
    expect(notes.map((n) => n.code)).toEqual(['design.not-upstream', 'exploration.step']);
    expect(notes[1]?.text).toMatch(/kernel\.vhost_req \(prototype/);
    expect(notes[1]?.text).not.toMatch(/exit\.hcall/);
  });
});
