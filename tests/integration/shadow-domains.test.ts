import { describe, expect, it } from 'vitest';
import { MODEL } from '../../services/designs/names.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * What the shadowing designs' hosts shadow into, through real processes: two assigned devices, one
 * behind each of two pSMMUs, one vCPU driving each.
 *
 * Behind VT-d, virtio-iommu (QEMU) and vhost-iommu each device has a host domain of its own: QEMU
 * gives each device its own address space (vtd_find_add_as, virtio_iommu_find_add_as) and VFIO one
 * container per address space (vfio_address_space_get). On the SMMUv3 host each domain is a
 * stage-1 domain with its own ASID on its device's pSMMU: a map invalidates nothing (no
 * iotlb_sync_map) and an unmap invalidates that one pSMMU (TLBI_NH_VA + CMD_SYNC), so the
 * shadowing designs pay no broadcast.
 */
const OPS = 40;
const scenario = resolveScenario({ name: 'shadow', topology: { psmmus: 2 }, device: { ringBuffers: 0 }, workload: { ops: OPS, threads: 2 } });
const fx = useProcessTree(scenario);

describe('one host domain per assigned device', () => {
  for (const model of [MODEL.intelCm, MODEL.virtioIommu, MODEL.vhostIommu]) {
    it(`${model}: an unmap invalidates only its device's pSMMU, a map none; both devices use the same IOVAs without collision`, async () => {
      await withSession(fx, async (session) => {
        const run = await session.run(scenario, model, testProfile);
        const map = run.ops.find((o) => o.op === 'map');
        const unmap = run.ops.find((o) => o.op === 'unmap');
        expect([map?.failed, unmap?.failed]).toEqual([0, 0]);
        expect(map?.transitions.hw).toBe(0);
        expect(unmap?.transitions.hw).toBe(1);
        // Each thread drives one device: half the unmaps reach each pSMMU, one TLBI_NH_VA each.
        expect(run.invalidations.deliveredPerPsmmu).toEqual({ 'psmmu-0': OPS / 2, 'psmmu-1': OPS / 2 });
        expect(run.invalidations.wasted).toBe(0);
        expect(run.counters['vfio']).toMatchObject({ maps: OPS, unmaps: OPS, flushes: OPS, mapErrors: 0 });
        expect(run.dma.faults).toBe(0);
      });
    });
  }
});
