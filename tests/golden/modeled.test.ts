import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MODELS } from '../../services/scenario/schema.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { RunResult } from '../../services/controller/results.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * Golden files of the modeled sections of results.json: every design in strict and lazy mode on
 * one small scenario with a fixed seed. They change only in a commit that says why a modeled
 * figure moved. `VMMSIM_UPDATE_GOLDEN=1 npx vitest run tests/golden` rewrites them.
 */
const here = dirname(fileURLToPath(import.meta.url));
const update = process.env['VMMSIM_UPDATE_GOLDEN'] === '1';

// Two pSMMUs behind one vSMMU (a broadcast to cover), two vCPUs contending, device DMA off (its
// translation count follows real time, so it is not a modeled section).
const base = { name: 'golden', seed: 7, topology: { psmmus: 2 }, device: { dmaRate: 0 }, workload: { ops: 120, threads: 2, granulePages: 2 } };
const fx = useProcessTree(resolveScenario(base));

/** The deterministic (modeled) sections of one run, in a stable key order. */
function modeled(r: RunResult): unknown {
  return {
    model: r.model,
    ops: r.ops.map((o) => ({ op: o.op, count: o.count, failed: o.failed, transitions: o.transitions, modeledNs: o.modeledNs })),
    modeledElapsedNs: r.modeledElapsedNs,
    opsPerSecModeled: r.throughput.opsPerSecModeled,
    modeledResources: r.modeledResources,
    invalidations: r.invalidations,
  };
}

describe('golden modeled results', () => {
  for (const dma of ['strict', 'lazy'] as const) {
    it(`every design in ${dma} mode matches its golden file`, async () => {
      const scenario = resolveScenario({ ...base, dma });
      await withSession(fx, async (session) => {
        for (const model of MODELS) {
          const file = join(here, dma, `${model}.json`);
          const got = JSON.stringify(modeled(await session.run(scenario, model, testProfile)), null, 2) + '\n';
          if (update) {
            mkdirSync(dirname(file), { recursive: true });
            writeFileSync(file, got);
            continue;
          }
          expect(got, `${dma}/${model}`).toBe(readFileSync(file, 'utf8'));
        }
      });
    }, 240_000);
  }
});
