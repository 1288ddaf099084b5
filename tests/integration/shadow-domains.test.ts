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
 *
 * Under sPAPR the VM's devices sit on its one PHB: one container and one TCE table, programmed into
 * every PE (each device's IOMMU group), and every change kills the TCE cache of every PE of the
 * table (iommu_tce_kill -> pnv_pci_ioda2_tce_invalidate walks it_group_list): the pSMMU process
 * stands for each PE's host PHB and takes a TCE kill, no SMMU command.
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

describe('one TCE table per guest PHB, killed on every PE', () => {
  for (const model of [MODEL.spaprTce, MODEL.spaprTceKvm]) {
    it(`${model}: each map and each unmap of a page kills the TCE cache once on each of the two PEs, with no SMMU command`, async () => {
      await withSession(fx, async (session) => {
        const run = await session.run(scenario, model, testProfile);
        const map = run.ops.find((o) => o.op === 'map');
        const unmap = run.ops.find((o) => o.op === 'unmap');
        expect([map?.failed, unmap?.failed]).toEqual([0, 0]);
        expect(map?.transitions.hw).toBe(2);
        expect(unmap?.transitions.hw).toBe(2);
        for (const p of ['psmmu-0', 'psmmu-1']) expect(run.counters[p]).toMatchObject({ tceKills: 2 * OPS, commands: 0 });
        expect(run.invalidations.deliveredPerPsmmu).toEqual({ 'psmmu-0': 2 * OPS, 'psmmu-1': 2 * OPS });
        // Nothing pinned per map, no vfio_dma tree: memory was preregistered at VM start.
        expect(run.counters['vfio']).toMatchObject({ pagesMapped: OPS, pagesUnmapped: OPS, mapErrors: 0 });
        expect(run.dma.faults).toBe(0);
      });
    });
  }
});
