/**
 * Provenance through real processes: for every design in strict, lazy, static and bounce mode (and
 * swiotlb under the dma-iommu designs, guest.ddw under the sPAPR ones), with three vCPUs contending
 * and one vSMMU over two pSMMUs, each operation's breakdown adds up to its modeled mean (waits
 * included), and re-pricing the recorded run with the run's own costs gives its modeled results to
 * the byte. vmmsim explain's trace of a map and an unmap of every design (under swiotlb too), of the
 * DDW's boot mapping and of a lazy flush queue's timer totals that operation's modeled time, and
 * tracing it moves no modeled figure.
 */
import { describe, expect, it } from 'vitest';
import { profileCosts } from '../../services/cost/profile.js';
import { breakdownTotal } from '../../services/controller/breakdown.js';
import { explanation, leafNs } from '../../services/controller/explain.js';
import { combineGuests } from '../../services/controller/timeline.js';
import { MODELS, type ModelName, type Scenario } from '../../services/scenario/schema.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { MODEL } from '../../services/designs/names.js';
import { designOf } from '../../services/designs/registry.js';
import { DDW_BOOT_OP } from '../../services/machine/setup-ops.js';
import type { RecordedResult, Session } from '../../services/controller/session.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const base = { name: 'provenance', seed: 11, topology: { psmmus: 2 }, device: { dmaRate: 0 }, workload: { ops: 48, threads: 3, granulePages: 2 } };
const fx = useProcessTree(resolveScenario(base));
const costs = profileCosts(testProfile);

/** Breakdowns add up and the run re-prices to itself, to the byte; returns what its operations waited. */
function checkProvenance(r: RecordedResult, where: string): number {
  let waited = 0;
  for (const op of r.result.ops.filter((o) => o.count > 0)) {
    const at = `${where} ${op.op}`;
    expect(op.breakdown.length, at).toBeGreaterThan(0);
    expect(Math.abs(breakdownTotal(op.breakdown) - op.modeledNs.mean), at).toBeLessThanOrEqual(1);
    for (const e of op.breakdown.filter((x) => !x.step.startsWith('wait:'))) {
      expect(e.functions.length, `${at} ${e.step}`).toBeGreaterThan(0);
      expect(e.confidence, `${at} ${e.step}`).toBe(testProfile.steps[e.step]?.confidence);
    }
    waited += op.breakdown.filter((e) => e.step.startsWith('wait:')).reduce((n, e) => n + e.ns, 0);
  }
  const again = combineGuests(r.replies, r.vms, { profile: testProfile, costs, reprice: true });
  const modeled = (c: typeof again): string => JSON.stringify({ ops: c.ops.map((o) => ({ op: o.op, modeledNs: o.modeledNs, breakdown: o.breakdown })), elapsed: c.modeledElapsedNs, resources: c.resources });
  expect(modeled(again), `${where} re-priced`).toBe(modeled(r.combined));
  expect(r.result.modeledElapsedNs, where).toBe(again.modeledElapsedNs);
  return waited;
}

describe('every operation\'s modeled time through real processes', () => {
  for (const dma of ['strict', 'lazy'] as const) {
    it(`adds up by step and wait, and re-prices to itself, for every design in ${dma} mode`, async () => {
      const scenario = resolveScenario({ ...base, dma });
      let waited = 0;
      await withSession(fx, async (session) => {
        for (const model of MODELS) waited += checkProvenance(await session.record(scenario, model, testProfile), `${dma} ${model}`);
      });
      // Three vCPUs on shared locks and queues: some operation waited.
      expect(waited).toBeGreaterThan(0);
    }, 300_000);
  }

  // The DMA modes over the architecture's API: static and bounce under every design, swiotlb
  // (dma-iommu's bounce path, guest.swiotlb_slot and guest.bounce_copy around the IOMMU's map and
  // unmap) under the designs whose guest DMA API is dma-iommu.
  for (const dma of ['static', 'bounce', 'swiotlb'] as const) {
    it(`adds up and re-prices to itself in ${dma} mode`, async () => {
      const scenario = resolveScenario({ ...base, dma });
      const models = MODELS.filter((m) => dma !== 'swiotlb' || designOf(m).traits.dmaIommu);
      expect(models.length).toBeGreaterThan(0);
      await withSession(fx, async (session) => {
        for (const model of models) {
          const r = await session.record(scenario, model, testProfile);
          checkProvenance(r, `${dma} ${model}`);
          if (dma === 'swiotlb') {
            const map = r.result.ops.find((o) => o.op === 'map');
            expect(map?.breakdown.find((e) => e.step === 'guest.swiotlb_slot')?.perOp, `${model} swiotlb map`).toBe(1);
            expect(map?.breakdown.find((e) => e.step === 'guest.bounce_copy')?.perOp, `${model} swiotlb map`).toBe(2);
          }
        }
      });
    }, 300_000);
  }

  // sPAPR with a dynamic DMA window: the boot mapping (ddw-boot, on the setup thread, its TCE puts
  // and kills) and the direct maps after it, strict and lazy.
  for (const dma of ['strict', 'lazy'] as const) {
    it(`adds up and re-prices to itself with guest.ddw in ${dma} mode`, async () => {
      const models = MODELS.filter((m) => designOf(m).traits.shadow === 'tce-table');
      expect(models.length).toBeGreaterThan(0);
      await withSession(fx, async (session) => {
        for (const model of models) {
          const r = await session.record(resolveScenario({ ...base, model, dma, guest: { ddw: true } }), model, testProfile);
          checkProvenance(r, `ddw ${dma} ${model}`);
          const boot = r.result.ops.find((o) => o.op === DDW_BOOT_OP);
          expect(boot?.count, model).toBe(1);
          expect(boot?.breakdown.find((e) => e.step === 'ppc.tce_kill')?.perOp, `${model} ddw-boot kills`).toBeGreaterThan(0);
        }
      });
    }, 300_000);
  }
});

/** Explains `op` after `after` operations and checks the tree totals its modeled time and crossings. */
async function checkExplain(session: Session, scenario: Scenario, model: ModelName, op: string, after: number, exact = true): Promise<void> {
  const r = await session.explain(scenario, model, testProfile, op, after);
  const where = `${scenario.dma} ${model} ${op}`;
  expect(r.explained, where).toBeDefined();
  const x = r.explained as NonNullable<typeof r.explained>;
  expect(x.op).toBe(op);
  const e = explanation(x, { model, dma: scenario.dma, workload: scenario.workload.kind, profile: testProfile, process: 'guest-0', latencyNs: r.latencyNs ?? 0, waits: r.waits ?? [], backlogNs: 0 });
  expect(leafNs(e.tree), where).toBe(e.modeledNs);
  expect(e.tree.totalNs).toBe(e.modeledNs);
  const mean = r.result.ops.find((o) => o.op === op)?.modeledNs;
  expect(mean?.min, where).toBeLessThanOrEqual(e.modeledNs);
  expect(mean?.max, where).toBeGreaterThanOrEqual(e.modeledNs);
  // Each call names its transition; each step its functions and confidence.
  const calls: string[] = [];
  const visit = (n: typeof e.tree): void => {
    if (n.what === 'call') calls.push(`${n.crossing}`);
    if (n.what === 'step') {
      expect(n.functions?.length, n.name).toBeGreaterThan(0);
      expect(['C', 'S', 'U']).toContain(n.confidence);
    }
    n.children.forEach(visit);
  };
  visit(e.tree);
  // One thread and a path that repeats: the traced operation crosses what every one of its kind does.
  if (!exact) return;
  const transitions = r.result.ops.find((o) => o.op === op)?.transitions;
  const crossed = (k: string): number => calls.filter((c) => c === k).length;
  for (const k of ['exit', 'user', 'ioctl', 'hw', 'direct'] as const) expect(crossed(k), `${where} ${k}`).toBe(transitions?.[k]);
}

describe('vmmsim explain through real processes', () => {
  const scenario = resolveScenario({ ...base, workload: { ops: 12, threads: 1, granulePages: 1 } });

  for (const model of MODELS) {
    it(`${model}: a traced map and unmap total their modeled time`, async () => {
      await withSession(fx, async (session) => {
        for (const op of ['map', 'unmap']) await checkExplain(session, scenario, model, op, 6);
      });
    }, 120_000);
  }

  it('swiotlb: a traced map and unmap of every dma-iommu design total their modeled time', async () => {
    const swiotlb = resolveScenario({ ...base, dma: 'swiotlb', workload: { ops: 12, threads: 1, granulePages: 1 } });
    await withSession(fx, async (session) => {
      for (const model of MODELS.filter((m) => designOf(m).traits.dmaIommu)) {
        for (const op of ['map', 'unmap']) await checkExplain(session, swiotlb, model, op, 6);
      }
    });
  }, 300_000);

  it('guest.ddw: the boot mapping and a direct map of each sPAPR design total their modeled time', async () => {
    await withSession(fx, async (session) => {
      for (const model of MODELS.filter((m) => designOf(m).traits.shadow === 'tce-table')) {
        const ddw = resolveScenario({ ...base, model, guest: { ddw: true }, workload: { ops: 12, threads: 1, granulePages: 1 } });
        await checkExplain(session, ddw, model, DDW_BOOT_OP, 0);
        await checkExplain(session, ddw, model, 'map', 6);
      }
    });
  }, 300_000);

  it('lazy mode: the flush queue timer\'s flush, in timer context, totals its modeled time', async () => {
    const lazy = resolveScenario({ ...base, dma: 'lazy', workload: { ops: 64, threads: 1, granulePages: 1 } });
    await withSession(fx, async (session) => {
      // Flushes free what they cover: how many entries varies, so only the totals are compared.
      for (const model of MODELS.filter((m) => designOf(m).traits.dmaIommu)) await checkExplain(session, lazy, model, 'flush', 0, false);
    });
  }, 300_000);

  it('moves no modeled figure: a traced run models what an untraced one does', async () => {
    await withSession(fx, async (session) => {
      const plain = await session.run(scenario, MODEL.intelCm, testProfile);
      const traced = await session.explain(scenario, MODEL.intelCm, testProfile, 'unmap', 6);
      expect(traced.result.ops.map((o) => o.modeledNs)).toEqual(plain.ops.map((o) => o.modeledNs));
    });
  }, 120_000);
});
