/**
 * Provenance through real processes: for every design in strict and lazy mode, with three vCPUs
 * contending and one vSMMU over two pSMMUs, each operation's breakdown adds up to its modeled mean
 * (waits included), and re-pricing the recorded run with the run's own costs gives its modeled
 * results to the byte. vmmsim explain's trace of a map and an unmap of every design totals that
 * operation's modeled time, and tracing it moves no modeled figure.
 */
import { describe, expect, it } from 'vitest';
import { profileCosts } from '../../services/cost/profile.js';
import { breakdownTotal } from '../../services/controller/breakdown.js';
import { explanation, leafNs } from '../../services/controller/explain.js';
import { combineGuests } from '../../services/controller/timeline.js';
import { MODELS } from '../../services/scenario/schema.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { MODEL } from '../../services/designs/names.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const base = { name: 'provenance', seed: 11, topology: { psmmus: 2 }, device: { dmaRate: 0 }, workload: { ops: 48, threads: 3, granulePages: 2 } };
const fx = useProcessTree(resolveScenario(base));
const costs = profileCosts(testProfile);

describe('every operation\'s modeled time through real processes', () => {
  for (const dma of ['strict', 'lazy'] as const) {
    it(`adds up by step and wait, and re-prices to itself, for every design in ${dma} mode`, async () => {
      const scenario = resolveScenario({ ...base, dma });
      let waited = 0;
      await withSession(fx, async (session) => {
        for (const model of MODELS) {
          const r = await session.record(scenario, model, testProfile);
          for (const op of r.result.ops.filter((o) => o.count > 0)) {
            const where = `${dma} ${model} ${op.op}`;
            expect(op.breakdown.length, where).toBeGreaterThan(0);
            expect(Math.abs(breakdownTotal(op.breakdown) - op.modeledNs.mean), where).toBeLessThanOrEqual(1);
            for (const e of op.breakdown.filter((x) => !x.step.startsWith('wait:'))) {
              expect(e.functions.length, `${where} ${e.step}`).toBeGreaterThan(0);
              expect(e.confidence, `${where} ${e.step}`).toBe(testProfile.steps[e.step]?.confidence);
            }
            waited += op.breakdown.filter((e) => e.step.startsWith('wait:')).reduce((n, e) => n + e.ns, 0);
          }
          const again = combineGuests(r.replies, r.vms, { profile: testProfile, costs, reprice: true });
          const modeled = (c: typeof again): string => JSON.stringify({ ops: c.ops.map((o) => ({ op: o.op, modeledNs: o.modeledNs, breakdown: o.breakdown })), elapsed: c.modeledElapsedNs, resources: c.resources });
          expect(modeled(again), `${dma} ${model} re-priced`).toBe(modeled(r.combined));
          expect(r.result.modeledElapsedNs).toBe(again.modeledElapsedNs);
        }
      });
      // Three vCPUs on shared locks and queues: some operation waited.
      expect(waited).toBeGreaterThan(0);
    }, 300_000);
  }
});

describe('vmmsim explain through real processes', () => {
  const scenario = resolveScenario({ ...base, workload: { ops: 12, threads: 1, granulePages: 1 } });

  for (const model of MODELS) {
    it(`${model}: a traced map and unmap total their modeled time`, async () => {
      await withSession(fx, async (session) => {
        for (const op of ['map', 'unmap']) {
          const r = await session.explain(scenario, model, testProfile, op, 6);
          expect(r.explained, `${model} ${op}`).toBeDefined();
          const x = r.explained as NonNullable<typeof r.explained>;
          expect(x.op).toBe(op);
          const e = explanation(x, { model, dma: scenario.dma, workload: scenario.workload.kind, profile: testProfile, process: 'guest-0', latencyNs: r.latencyNs ?? 0, waits: r.waits ?? [], backlogNs: 0 });
          expect(leafNs(e.tree), `${model} ${op}`).toBe(e.modeledNs);
          expect(e.tree.totalNs).toBe(e.modeledNs);
          // One thread: the traced operation is every one of its kind (strict mode repeats one path).
          const mean = r.result.ops.find((o) => o.op === op)?.modeledNs;
          expect(mean?.min).toBeLessThanOrEqual(e.modeledNs);
          expect(mean?.max).toBeGreaterThanOrEqual(e.modeledNs);
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
          const transitions = r.result.ops.find((o) => o.op === op)?.transitions;
          const crossed = (k: string): number => calls.filter((c) => c === k).length;
          for (const k of ['exit', 'user', 'ioctl', 'hw', 'direct'] as const) expect(crossed(k), `${model} ${op} ${k}`).toBe(transitions?.[k]);
        }
      });
    }, 120_000);
  }

  it('moves no modeled figure: a traced run models what an untraced one does', async () => {
    await withSession(fx, async (session) => {
      const plain = await session.run(scenario, MODEL.intelCm, testProfile);
      const traced = await session.explain(scenario, MODEL.intelCm, testProfile, 'unmap', 6);
      expect(traced.result.ops.map((o) => o.modeledNs)).toEqual(plain.ops.map((o) => o.modeledNs));
    });
  }, 120_000);
});
