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
  // Bare metal: map writes the host kernel's PTEs only (arm-smmu-v3 has no iotlb_sync_map); unmap is
  // arm_smmu_iotlb_sync -> arm_smmu_tlb_inv_range_domain: TLBI_NH_VA + CMD_SYNC in one
  // arm_smmu_cmdq_issue_cmdlist, one PROD write to the pSMMU; the pSMMU has IDR0.MSI and is coherent
  // (ARM_SMMU_OPT_MSIPOLL), so the CPU waits on the sync's slot in RAM, reading no register.
  host: { map: none, unmap: t({ hw: 1 }) },
  'intel-cm': { map: trapped, unmap: trapped },
  // Map: arm-smmu-v3 has no iotlb_sync_map, the guest only writes its PTEs. Unmap (arm_smmu_iotlb_sync ->
  // arm_smmu_tlb_inv_range_domain -> __arm_smmu_tlb_inv_range -> arm_smmu_cmdq_issue_cmdlist): one
  // CMDQ_PROD write (QEMU smmu_writel -> smmuv3_cmdq_consume, inside the trap) and, as QEMU's vSMMU
  // shows no IDR0.MSI (smmuv3_init_regs), one CMDQ_CONS readl (__arm_smmu_cmdq_poll_until_consumed,
  // QEMU smmu_readl): two traps to user space.
  'emulated-smmuv3': { map: none, unmap: t({ exit: 2, user: 2 }) },
  'virtio-iommu': { map: trapped, unmap: trapped },
  'vhost-iommu': { map: t({ exit: 1, hw: 1 }), unmap: t({ exit: 1, hw: 1 }) },
  'spapr-tce': { map: trapped, unmap: trapped },
  'spapr-tce-kvm': { map: t({ exit: 1, hw: 1 }), unmap: t({ exit: 1, hw: 1 }) },
  // As emulated-smmuv3 (PROD write + CONS read, no MSI: smmuv3_accel_idr_override sets no IDR0.MSI),
  // and inside the PROD trap QEMU's smmuv3_accel_issue_inv_cmd sends one IOMMU_HWPT_INVALIDATE
  // (per command: TLBI_NH_VA), which arm_vsmmu_cache_invalidate issues as one list + CMD_SYNC.
  'nested-smmuv3': { map: none, unmap: t({ exit: 2, user: 2, ioctl: 1, hw: 1 }) },
  // tegra241_cmdqv_get_cmdq puts TLBI_NH_VA + CMD_SYNC on the CPU's VCMDQ (VINTF page 0 mapped into
  // the guest: tegra241_cmdqv_guest_map_vintf_page0): a PROD store, and, as the VCMDQ takes CS_NONE
  // only (arm_smmu_cmdq_needs_busy_polling), a readl of its CONS (__arm_smmu_cmdq_poll_until_consumed).
  'nested-smmuv3-vcmdq': { map: none, unmap: t({ direct: 2 }) },
};

const scenario = resolveScenario({ name: 'paths', device: { dmaRate: 0 }, workload: { ops: 20 } });
const fx = useProcessTree(scenario);

describe('every architecture takes the path paths.md describes', () => {
  it('runs all ten architectures', () => {
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
        // Every transition a design pays costs modeled time; the baseline pays none.
        // Every transition costs modeled time (at least an exit or a CMD_SYNC: over 1 us a pair).
        const pair = (map?.modeledNs.mean ?? 0) + (unmap?.modeledNs.mean ?? 0);
        if (model === 'none') expect(pair).toBeLessThan(1000);
        else expect(pair).toBeGreaterThan(1000);
      });
    });
  }
});
