import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { ModelName } from '../../services/scenario/schema.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * Host-side stage-2 changes: the guest's virtio-mem driver unplugs a 2 MiB block (the VMM discards
 * it and unmaps it from the VM's IOAS) and plugs it back, while the workload runs. One VM behind
 * three physical SMMUs: 40 map/unmap pairs on one thread are 80 operations, a resize after every
 * 20 of them: unplug, plug, unplug, plug.
 */
const base = { topology: { psmmus: 3 }, workload: { ops: 40, threads: 1, virtioMem: { everyOps: 20, blocks: 1 } } };
const fx = useProcessTree(resolveScenario(base));

function scenario(topology: Record<string, unknown>) {
  return resolveScenario({ ...base, topology: { psmmus: 3, ...topology } });
}

describe('virtio-mem unplug: a host-side stage-2 change', () => {
  it('under nested SMMUv3 invalidates every pSMMU that walks the stage-2 parent, whichever vSMMU topology', async () => {
    await withSession(fx, async (session) => {
      for (const vsmmu of ['single', 'per-psmmu']) {
        const run = await session.run(scenario({ vsmmu }), 'nested-smmuv3', testProfile);
        const unplug = run.ops.find((o) => o.op === 'mem-unplug');
        const plug = run.ops.find((o) => o.op === 'mem-plug');
        expect(unplug?.count).toBe(2);
        expect(plug?.count).toBe(2);
        // A trapped kick, QEMU's discard, one IOMMU_IOAS_UNMAP, then the three pSMMUs one after
        // another, each with two syncs: TLBI_S2_IPA's, and TLBI_NH_ALL's own (nest parent).
        expect(unplug?.transitions).toEqual({ exit: 1, user: 1, ioctl: 1, hw: 6, direct: 0 });
        // A plug maps the block back (one IOAS_MAP per block); SMMUv3 needs no invalidation for it.
        expect(plug?.transitions).toEqual({ exit: 1, user: 1, ioctl: 1, hw: 0, direct: 0 });
        // Per unplug and pSMMU: TLBI_S2_IPA over the block and TLBI_NH_ALL of the VMID (syncs not counted).
        expect(run.invalidations.hostStage2).toEqual({ unmaps: 2, deliveredPerPsmmu: { 'psmmu-0': 4, 'psmmu-1': 4, 'psmmu-2': 4 } });
        // Kept apart from the guests' own invalidations, whose accounting is unchanged.
        expect(run.invalidations.guestCommands).toBe(40);
        expect(run.invalidations.fanout).toBe(vsmmu === 'single' ? 3 : 1);
        expect(run.counters['vfio']).toMatchObject({ ioasUnmaps: 2, ioasMaps: 2, stage2Flushes: 6 });
        expect(run.counters['qemu-0']).toMatchObject({ memRequests: 4, memUnplugged: 2, memPlugged: 2, memErrors: 0 });
        expect(run.workloadCounters).toMatchObject({ memUnplugs: 2, memPlugs: 2, memRequestsFailed: 0 });
        // The VMM serves the request under its big lock, which modeled time accounts for.
        expect(run.modeledResources.find((r) => r.resource === 'qemu-0.bql')?.holds).toBeGreaterThanOrEqual(40 + 4);
        // Three pSMMUs and the unpinning of the block's 512 pages: dearer than a guest unmap.
        const unmap = run.ops.find((o) => o.op === 'unmap');
        expect(unplug?.modeledNs.mean ?? 0).toBeGreaterThan(unmap?.modeledNs.mean ?? Infinity);
      }
    });
  });

  it('with no vIOMMU invalidates the stage-2 table on every pSMMU, with no stage-1 flush', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario({}), 'none', testProfile);
      expect(run.ops.find((o) => o.op === 'mem-unplug')?.transitions).toEqual({ exit: 1, user: 1, ioctl: 1, hw: 3, direct: 0 });
      expect(run.invalidations.hostStage2).toEqual({ unmaps: 2, deliveredPerPsmmu: { 'psmmu-0': 2, 'psmmu-1': 2, 'psmmu-2': 2 } });
    });
  });

  it('under the shadowing designs leaves the host tables alone: they hold only what the guest mapped', async () => {
    await withSession(fx, async (session) => {
      for (const model of ['virtio-iommu', 'intel-cm'] as ModelName[]) {
        const run = await session.run(scenario({}), model, testProfile);
        expect(run.ops.find((o) => o.op === 'mem-unplug')?.transitions).toEqual({ exit: 1, user: 1, ioctl: 0, hw: 0, direct: 0 });
        expect(run.invalidations.hostStage2.unmaps).toBe(0);
        expect(run.dma.staleTranslations).toBe(0);
      }
    });
  });
});
