import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { MODELS, type ModelName } from '../../services/scenario/schema.js';
import type { TransitionCounts } from '../../services/runtime/topology.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const none: TransitionCounts = { exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 };
const t = (c: Partial<TransitionCounts>): TransitionCounts => ({ ...none, ...c });
const trapped = t({ exit: 1, user: 1, ioctl: 1, hw: 1 });

/**
 * One strict map and one strict unmap of one 4 KiB page, one VM with one device behind one pSMMU,
 * as the Linux v6.18 and QEMU v10.2 source gives them (/work/notes/linux-paths.md and
 * qemu-paths.md name the functions read). Each count names the function that decides it.
 * Where this differs from ../shared/reference/paths.md, the source wins (said in the design's row).
 */
const EXPECTED: Record<ModelName, { map: TransitionCounts; unmap: TransitionCounts }> = {
  // dma-direct: dma_direct_map_page / dma_direct_unmap_page, no IOMMU.
  none: { map: none, unmap: none },
  // Bare metal: map writes the host kernel's PTEs only (arm-smmu-v3 has no iotlb_sync_map); unmap is
  // arm_smmu_iotlb_sync -> arm_smmu_tlb_inv_range_domain: TLBI_NH_VA + CMD_SYNC in one
  // arm_smmu_cmdq_issue_cmdlist, one PROD write to the pSMMU; the pSMMU has IDR0.MSI and is coherent
  // (ARM_SMMU_OPT_MSIPOLL), so the CPU waits on the sync's slot in RAM, reading no register.
  host: { map: none, unmap: t({ hw: 1 }) },
  'intel-cm': {
    // exit 1: qi_submit_sync's IQT write (cache_tag_flush_range_np -> qi_flush_iotlb, caching mode);
    // user 1: vtd_mem_write (no ioeventfd); ioctl 1: vtd_page_walk_one -> vfio_iommu_map_notify ->
    // VFIO_IOMMU_MAP_DMA on the device's own container (vtd_find_add_as, vfio_address_space_get);
    // hw 0: the host is an SMMUv3 and arm_smmu_ops has no iotlb_sync_map (paths.md says hw 1).
    map: t({ exit: 1, user: 1, ioctl: 1 }),
    // ... VFIO_IOMMU_UNMAP_DMA -> vfio_unmap_unpin -> iommu_iotlb_sync -> arm_smmu_tlb_inv_range_domain:
    // hw 1 (TLBI_NH_VA + CMD_SYNC on the device's pSMMU only).
    unmap: trapped,
  },
  // viommu_map_pages + viommu_iotlb_sync_map -> viommu_sync_req: exit 1 (the QueueNotify kick);
  // user 1: QEMU's main loop takes the ioeventfd (virtio_iommu_handle_command; no KVM_EXIT_MMIO,
  // counted as the VMM's wake-up); ioctl 1: virtio_iommu_notify_map -> vfio_iommu_map_notify on the
  // endpoint's container; hw 0 on map (no iotlb_sync_map on arm-smmu-v3), 1 on unmap
  // (vfio_unmap_unpin -> arm_smmu_tlb_inv_range_domain). paths.md says hw 1 on map.
  'virtio-iommu': { map: t({ exit: 1, user: 1, ioctl: 1 }), unmap: trapped },
  // The same guest driver; the kick is an ioeventfd the (prototype-extrapolated) vhost worker serves
  // in the kernel, calling iommu_map / iommu_unmap on the endpoint's domain: exit 1, no user, no ioctl;
  // hw 0 on map (no iotlb_sync_map), 1 on unmap (iommu_unmap -> arm_smmu_iotlb_sync). The only
  // vhost-iommu source (jpbrucker/linux drivers/vhost/iommu.c) keeps a software IOTLB for vhost
  // endpoints and calls no iommu_map: this row is vmmsim's extrapolation, not that prototype.
  'vhost-iommu': { map: t({ exit: 1 }), unmap: t({ exit: 1, hw: 1 }) },
  // H_PUT_TCE (one page: tce_buildmulti_pSeriesLP -> tce_build_pSeriesLP) / H_STUFF_TCE(0, 1)
  // (tce_freemulti_pSeriesLP): exit 1; KVM has no table for it (kvmppc_find_table: H_TOO_HARD), so
  // user 1 (KVM_EXIT_PAPR_HCALL -> h_put_tce / h_stuff_tce); ioctl 1: put_tce_emu ->
  // vfio_iommu_map_notify -> one VFIO_IOMMU_MAP_DMA / UNMAP_DMA on the PHB's sPAPR v2 container;
  // hw 1: tce_iommu_build_v2 / tce_iommu_clear end with one iommu_tce_kill, on the table's one PE
  // here (pnv_pci_ioda2_tce_invalidate: one OPAL_PCI_TCE_KILL per PE), a PHB kill, not an SMMU TLBI.
  // Map: arm-smmu-v3 has no iotlb_sync_map, the guest only writes its PTEs. Unmap (arm_smmu_iotlb_sync ->
  // arm_smmu_tlb_inv_range_domain -> __arm_smmu_tlb_inv_range -> arm_smmu_cmdq_issue_cmdlist): one
  // CMDQ_PROD write (QEMU smmu_writel -> smmuv3_cmdq_consume, inside the trap) and, as QEMU's vSMMU
  // shows no IDR0.MSI (smmuv3_init_regs), one CMDQ_CONS readl (__arm_smmu_cmdq_poll_until_consumed,
  // QEMU smmu_readl): two traps to user space.
  'emulated-smmuv3': { map: none, unmap: t({ exit: 2, user: 2 }) },
  'spapr-tce': { map: trapped, unmap: trapped },
  // The same hypercalls served in the kernel, in virtual mode (kvmppc_h_put_tce / kvmppc_h_stuff_tce;
  // no real mode since ~v5.19): exit 1, no user, no ioctl; hw 1: kvmppc_tce_iommu_map / _unmap end
  // with iommu_tce_kill, once per TCE (N TCEs in a hypercall kill N times; paths.md says once).
  'spapr-tce-kvm': { map: t({ exit: 1, hw: 1 }), unmap: t({ exit: 1, hw: 1 }) },
  // As emulated-smmuv3 (PROD write + CONS read, no MSI: smmuv3_accel_idr_override sets no IDR0.MSI),
  // and inside the PROD trap QEMU's smmuv3_accel_issue_inv_cmd sends one IOMMU_HWPT_INVALIDATE
  // (per command: TLBI_NH_VA), which arm_vsmmu_cache_invalidate issues as one list + CMD_SYNC.
  'nested-smmuv3': { map: none, unmap: t({ exit: 2, user: 2, ioctl: 1, hw: 1 }) },
  // tegra241_cmdqv_get_cmdq puts TLBI_NH_VA + CMD_SYNC on the CPU's VCMDQ (VINTF page 0 mapped into
  // the guest: tegra241_cmdqv_guest_map_vintf_page0): a PROD store, and, as the VCMDQ takes CS_NONE
  // only (arm_smmu_cmdq_needs_busy_polling), a readl of its CONS (__arm_smmu_cmdq_poll_until_consumed).
  'nested-smmuv3-vcmdq': { map: none, unmap: t({ direct: 2 }) },
  // Exploration (no posted patch; linux-paths.md Proposals a, row nested-smmuv3-kvm): the guest's
  // arm_smmu_cmdq_issue_cmdlist as nested-smmuv3 (PROD write + CONS readl by
  // __arm_smmu_cmdq_poll_until_consumed, QEMU's vSMMU having no IDR0.MSI); KVM takes both in the
  // kernel (io_mem_abort -> kvm_io_bus_write / kvm_io_bus_read on an in-kernel vSMMU device):
  // exit 2, user 0; the TLBI_NH_VA goes through iommufd's conversion (arm_vsmmu_convert_user_cmd)
  // and arm_smmu_cmdq_issue_cmdlist on the pSMMU from the kernel: ioctl 0, hw 1.
  'nested-smmuv3-kvm': { map: none, unmap: t({ exit: 2, hw: 1 }) },
};

/**
 * Options that change a design's path, each a row of its own: the scenario keys set, the
 * operations compared (a migration reports NAME@before and NAME@after) and the counts after them.
 */
const OPTIONS: { name: string; model: ModelName; set: Record<string, unknown>; map: string; unmap: string; expected: { map: TransitionCounts; unmap: TransitionCounts } }[] = [
  // Proposal ([PATCH v2 17/17] arm_smmu_cache_invalidate_user, never merged): the same two traps;
  // inside the PROD trap the VMM's one IOMMU_HWPT_INVALIDATE hands over the queue's location, CONS
  // and PROD instead of an entry array, and the kernel reads the TLBI_NH_VA from guest RAM and
  // issues it with one CMD_SYNC: the counts of per-command (one command per batch), not its costs.
  {
    name: 'nested-smmuv3 vmm.hwptInvalidate=queue', model: 'nested-smmuv3', set: { vmm: { hwptInvalidate: 'queue' } }, map: 'map', unmap: 'unmap',
    expected: { map: none, unmap: t({ exit: 2, user: 2, ioctl: 1, hw: 1 }) },
  },
  // After a live migration to a host with no free VCMDQ, the vCPU's TLBI_NH_VA + CMD_SYNC go to the
  // trapped vSMMU queue, whose PROD write and CONS read KVM takes in the kernel (as nested-smmuv3-kvm).
  {
    name: 'nested-smmuv3-vcmdq workload.migration.fallback=kvm (destVcmdqs 0), after the migration', model: 'nested-smmuv3-vcmdq',
    set: { workload: { ops: 20, migration: { atOp: 20, destVcmdqs: 0, fallback: 'kvm' } } }, map: 'map@after', unmap: 'unmap@after',
    expected: { map: none, unmap: t({ exit: 2, hw: 1 }) },
  },
];

const scenario = resolveScenario({ name: 'paths', device: { dmaRate: 0 }, workload: { ops: 20 } });
const fx = useProcessTree(scenario);

describe('every architecture takes the path paths.md describes', () => {
  it('runs all eleven architectures', () => {
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

  for (const o of OPTIONS) {
    it(`${o.name}: transitions per map and per unmap`, async () => {
      await withSession(fx, async (session) => {
        const run = await session.run(resolveScenario({ name: 'paths', device: { dmaRate: 0 }, workload: { ops: 20 }, ...o.set }), o.model, testProfile);
        const map = run.ops.find((x) => x.op === o.map);
        const unmap = run.ops.find((x) => x.op === o.unmap);
        expect(map?.count).toBeGreaterThan(0);
        expect(unmap?.count).toBeGreaterThan(0);
        expect(map?.failed).toBe(0);
        expect(unmap?.failed).toBe(0);
        expect({ map: map?.transitions, unmap: unmap?.transitions }).toEqual(o.expected);
      });
    });
  }
});
