/**
 * Sensitivity analysis on runs recorded through the real processes: re-priced at the profile's own
 * costs, every design's figures are its run's modeled figures exactly (each operation's modeled mean,
 * the modeled throughput), in strict and lazy mode, closed and open loop, with vCPUs contending; a
 * strict closed-loop run is exact, a lazy one and an open-loop one whose arrivals queue behind their
 * vCPU are marked approximate with their reason.
 */
import { describe, expect, it } from 'vitest';
import { profileCosts } from '../../services/cost/profile.js';
import { designOfRecord } from '../../services/controller/cli/sensitivity-input.js';
import { analyse, figuresOf } from '../../services/controller/sensitivity.js';
import { costsByIndex } from '../../services/controller/recorded.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { MODEL } from '../../services/designs/names.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const base = { name: 'it-sensitivity', seed: 5, topology: { psmmus: 2 }, device: { dmaRate: 0 }, workload: { ops: 40, threads: 3 } };
const fx = useProcessTree(resolveScenario(base));
const costs = profileCosts(testProfile);
const MODELS_HERE = [MODEL.nestedSmmuv3, MODEL.nestedSmmuv3Vcmdq, MODEL.virtioIommu] as const;

describe('sensitivity through real processes', () => {
  const cases = {
    strict: { dma: 'strict' },
    lazy: { dma: 'lazy' },
    // 2 million iterations a second over three vCPUs: each arrives long before its vCPU is free.
    'open loop': { dma: 'strict', workload: { ...base.workload, rate: 2_000_000 } },
  } as const;

  for (const [name, over] of Object.entries(cases)) {
    it(`${name}: re-pricing at the profile's costs gives every run's modeled figures exactly`, async () => {
      const scenario = resolveScenario({ ...base, ...over });
      await withSession(fx, async (session) => {
        const designs = [];
        const means = new Map<string, Map<string, number>>();
        for (const model of MODELS_HERE) {
          const r = await session.record(scenario, model, testProfile);
          const d = designOfRecord(scenario, r);
          designs.push(d);
          const f = figuresOf(d, costsByIndex(d.run, costs));
          means.set(model, f.means);
          for (const op of r.result.ops.filter((o) => o.count > 0)) expect(f.means.get(op.op), `${name} ${model} ${op.op}`).toBe(op.modeledNs.mean);
          expect(f.throughput, `${name} ${model} throughput`).toBe(r.result.throughput.opsPerSecModeled);
        }
        const s = analyse(designs, testProfile, { samples: 20, seed: 3 });
        const codes = s.designs.map((d) => d.approximate.map((x) => x.code));
        if (name === 'strict') {
          // Three vCPUs on one queue gather their command lists (arm_smmu_cmdq_issue_cmdlist): a
          // gathered list's wait for its owner's PROD write is kept as recorded, so the nested runs
          // say so; virtio-iommu's re-pricing is exact.
          for (const d of s.designs) expect(d.approximate.map((x) => x.code), d.model).toEqual(d.model === MODEL.virtioIommu ? [] : ['cmdq-gather']);
          expect(s.designs.find((d) => d.model === MODEL.virtioIommu)?.exact).toBe(true);
        } else {
          const code = name === 'lazy' ? 'lazy-timer' : 'open-loop-backlog';
          for (const c of codes) expect(c).toContain(code);
          expect(s.comparisons.length).toBeGreaterThan(0);
          expect(s.comparisons.every((c) => c.approximate)).toBe(true);
        }
        // Each comparison's base ratio is the ratio of the runs' own modeled means.
        for (const c of s.comparisons) {
          const at = (m: string): number => means.get(m)?.get(c.metric) as number;
          expect(c.base, `${c.b} / ${c.a} ${c.metric}`).toBe(Math.round((at(c.b) / at(c.a)) * 1e4) / 1e4);
        }
      });
    }, 180_000);
  }
});
