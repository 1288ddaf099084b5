import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { MODELS, type ModelName } from '../../services/scenario/schema.js';
import type { TransitionCounts } from '../../services/runtime/topology.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const none: TransitionCounts = { exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 };
const t = (c: Partial<TransitionCounts>): TransitionCounts => ({ ...none, ...c });
const trapped = t({ exit: 1, user: 1, ioctl: 1, hw: 1 });

/**
 * What ../shared/reference/paths.md implies for one strict map and one strict unmap of one 4 KiB
 * page, one VM behind one pSMMU. Shadowing designs pay the whole path on map too (caching mode,
 * virtio-iommu MAP, a TCE write); SMMUv3 stage 1 owned by the guest needs nothing on map.
 */
const EXPECTED: Record<ModelName, { map: TransitionCounts; unmap: TransitionCounts }> = {
  none: { map: none, unmap: none },
  'intel-cm': { map: trapped, unmap: trapped },
  'emulated-smmuv3': { map: none, unmap: t({ exit: 1, user: 1 }) },
  'virtio-iommu': { map: trapped, unmap: trapped },
  'vhost-iommu': { map: t({ exit: 1, hw: 1 }), unmap: t({ exit: 1, hw: 1 }) },
  'spapr-tce': { map: trapped, unmap: trapped },
  'spapr-tce-kvm': { map: t({ exit: 1, hw: 1 }), unmap: t({ exit: 1, hw: 1 }) },
  'nested-smmuv3': { map: none, unmap: trapped },
  'nested-smmuv3-vcmdq': { map: none, unmap: t({ direct: 1 }) },
};

const scenario = resolveScenario({ name: 'paths', device: { dmaRate: 0 }, workload: { ops: 20 } });
const fx = useProcessTree(scenario);

describe('every architecture takes the path paths.md describes', () => {
  it('runs all nine architectures', () => {
  });

  for (const model of MODELS) {
    it(`${model}: transitions per map and per unmap`, async () => {
      await withSession(fx, async (session) => {
        const run = await session.run(scenario, model, testProfile);
        const map = run.ops.find((o) => o.op === 'map');
        const unmap = run.ops.find((o) => o.op === 'unmap');
        expect(map?.count).toBe(20);
        expect(unmap?.count).toBe(20);
        expect(map?.failed).toBe(0);
        expect(unmap?.failed).toBe(0);
        expect({ map: map?.transitions, unmap: unmap?.transitions }).toEqual(EXPECTED[model]);
        // Every transition a design pays costs modeled time; the baseline pays none. A pair with a
        // transition costs at least the cheapest exit or CMD_SYNC of the profile more than the
        // baseline's pair (two dma-direct calls).
        const pair = (map?.modeledNs.mean ?? 0) + (unmap?.modeledNs.mean ?? 0);
        const ns = (s: string): number => testProfile.steps[s]?.ns ?? Number.NaN;
        const baseline = 2 * ns('guest.dma_direct');
        if (model === 'none') expect(pair).toBe(baseline);
        else expect(pair).toBeGreaterThan(baseline + Math.min(ns('exit.mmio_trap'), ns('exit.hcall'), ns('smmu.sync')));
      });
    });
  }
});
