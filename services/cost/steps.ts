/**
 * Every step the cost model charges, by name: what it is and the functions it stands for in the
 * pinned Linux and QEMU releases (PINNED), so every modeled nanosecond can be read beside the source.
 * A profile (profiles/*.yaml) gives each a cost in nanoseconds of the simulated machine, a source and
 * a confidence. Models charge steps by these names only, so a profile that misses one is refused when
 * it is loaded, never discovered mid-run.
 */

/** The releases the steps' functions are named in. */
export const PINNED = { linux: 'v6.18', qemu: 'v10.2' } as const;

export interface StepInfo {
  /** What one occurrence of the step is. */
  readonly doc: string;
  /**
   * The functions it models: `linux PATH: fn, fn`, `qemu PATH: fn`, `hardware: what`, or what it
   * stands for when no upstream code runs it (`prototype ...`, `exploration: ...`).
   */
  readonly functions: readonly string[];
}

export const COST_STEPS = {
  'guest.iova_alloc': {
    doc: 'guest DMA API: allocate an IOVA range (rcache hit)',
    functions: ['linux drivers/iommu/dma-iommu.c: iommu_dma_alloc_iova', 'linux drivers/iommu/iova.c: alloc_iova_fast'],
  },
  'guest.iova_free': {
    doc: 'guest DMA API: free an IOVA range',
    functions: ['linux drivers/iommu/dma-iommu.c: iommu_dma_free_iova', 'linux drivers/iommu/iova.c: free_iova_fast'],
  },
  'guest.dma_direct': {
    doc: 'guest DMA API without an IOMMU: dma_map/dma_unmap bookkeeping (phys_to_dma)',
    functions: ['linux kernel/dma/direct.h: dma_direct_map_page, dma_direct_unmap_page'],
  },
  'guest.pte_write': {
    doc: 'guest writes one stage-1 page-table entry (with the barrier that publishes it)',
    functions: ['linux drivers/iommu/io-pgtable-arm.c: __arm_lpae_map, __arm_lpae_set_pte', 'linux drivers/iommu/intel/iommu.c: __domain_mapping'],
  },
  'guest.cmdq_write': {
    doc: 'guest driver writes one 16-byte command into its (v)CMDQ ring',
    functions: ['linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: arm_smmu_cmdq_issue_cmdlist, arm_smmu_cmdq_write_entries'],
  },
  'guest.static_lookup': {
    doc: 'static mode: the driver finds the IOVA of a buffer it mapped once',
    functions: ["driver-level: a poll-mode driver's table of premapped buffers (DPDK rte_mempool_virt2iova)"],
  },
  'guest.bounce_copy': {
    doc: 'bounce and swiotlb modes: copy one 4 KiB page between the I/O buffer and its bounce slot',
    functions: ['linux kernel/dma/swiotlb.c: swiotlb_bounce', 'driver-level: a copy into a premapped bounce pool (bounce mode)'],
  },
  'guest.swiotlb_slot': {
    doc: 'swiotlb mode: claim bounce slots in the CPU\'s swiotlb area for one mapping (zeroing the padding an untrusted device must not see), or release them at unmap',
    functions: [
      'linux kernel/dma/swiotlb.c: swiotlb_tbl_map_single, swiotlb_find_slots, swiotlb_search_pool_area, swiotlb_tbl_unmap_single, swiotlb_release_slots',
      'linux drivers/iommu/dma-iommu.c: iommu_dma_map_swiotlb, dev_use_swiotlb (from iommu_dma_map_phys; iommu_dma_map_page before v6.18)',
    ],
  },
  'guest.fq_insert': {
    doc: 'lazy mode: guest queues one unmapped IOVA in its per-CPU flush queue',
    functions: ['linux drivers/iommu/dma-iommu.c: queue_iova, fq_ring_add'],
  },
  'exit.mmio_trap': {
    doc: 'guest MMIO write traps to KVM and KVM resumes the guest (handled in the kernel)',
    functions: ['linux arch/arm64/kvm/mmu.c: kvm_handle_guest_abort', 'linux arch/arm64/kvm/mmio.c: io_mem_abort'],
  },
  'exit.to_user': {
    doc: 'extra cost when KVM returns to the VMM in user space for an MMIO exit and the VMM re-enters KVM_RUN',
    functions: ['linux virt/kvm/kvm_main.c: kvm_vcpu_ioctl (KVM_RUN)', 'qemu accel/kvm/kvm-all.c: kvm_cpu_exec'],
  },
  'vmm.vsmmu_cmd': {
    doc: 'VMM vSMMU model reads, decodes and dispatches one guest command',
    functions: ['qemu hw/arm/smmuv3.c: smmuv3_cmdq_consume'],
  },
  'ioctl.syscall': {
    doc: 'one ioctl from the VMM into the host kernel: entry, dispatch and exit',
    functions: ['linux fs/ioctl.c: __arm64_sys_ioctl, vfs_ioctl'],
  },
  'kernel.hwpt_cmd': {
    doc: 'iommufd converts one guest command in HWPT_INVALIDATE (copy, VMID stamp, vSID to pSID)',
    functions: ['linux drivers/iommu/iommufd/hw_pagetable.c: iommufd_hwpt_invalidate', 'linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c: arm_vsmmu_cache_invalidate, arm_vsmmu_convert_user_cmd'],
  },
  'kernel.cmdq_insert': {
    doc: 'host SMMU driver writes one command into the physical CMDQ (slot reservation included)',
    functions: ['linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: arm_smmu_cmdq_issue_cmdlist, arm_smmu_cmdq_write_entries'],
  },
  'guest.virtio_req': {
    doc: 'guest virtio-iommu driver builds one request and adds its descriptors to the request virtqueue',
    functions: ['linux drivers/iommu/virtio-iommu.c: __viommu_add_req', 'linux drivers/virtio/virtio_ring.c: virtqueue_add_sgs'],
  },
  'exit.hcall': {
    doc: 'guest hypercall traps to KVM and KVM resumes the guest (handled in the kernel)',
    functions: ['linux arch/arm64/kvm/hypercalls.c: kvm_smccc_call_handler', 'linux arch/powerpc/kvm/book3s_hv.c: kvmppc_pseries_do_hcall'],
  },
  'host.thread_wakeup': {
    doc: 'a host thread blocked on an eventfd (the VMM I/O thread, a vhost worker) is woken and scheduled to take a kick',
    functions: ['linux virt/kvm/eventfd.c: ioeventfd_write', 'linux kernel/sched/core.c: try_to_wake_up'],
  },
  'vmm.vtd_desc': {
    doc: 'VMM VT-d model reads, decodes and dispatches one invalidation-queue descriptor',
    functions: ['qemu hw/i386/intel_iommu.c: vtd_process_inv_desc'],
  },
  'vmm.iommu_walk_pte': {
    doc: 'VMM reads one entry of the guest I/O page table while it syncs its shadow (vtd_page_walk)',
    functions: ['qemu hw/i386/intel_iommu.c: vtd_page_walk_level, vtd_get_pte'],
  },
  'vmm.virtio_req': {
    doc: 'VMM virtio-iommu device pops one request, checks it against its domain and mappings, and writes the tail status',
    functions: ['qemu hw/virtio/virtio-iommu.c: virtio_iommu_handle_command, virtio_iommu_map, virtio_iommu_unmap'],
  },
  'vmm.tce_entry': {
    doc: 'VMM sPAPR model updates one TCE in its table and notifies the VFIO listener',
    functions: ['qemu hw/ppc/spapr_iommu.c: put_tce_emu, spapr_tce_set'],
  },
  'vmm.iotlb_invalidate': {
    doc: 'emulated vSMMU drops the matching entries of its software IOTLB for one invalidation command',
    functions: ['qemu hw/arm/smmu-common.c: smmu_iotlb_inv_iova, smmu_iotlb_inv_asid_vmid'],
  },
  'kernel.vfio_pin_page': {
    doc: 'host kernel pins one 4 KiB page of guest memory for a mapping (pin_user_pages and locked-memory accounting)',
    functions: ['linux drivers/vfio/vfio_iommu_type1.c: vfio_pin_pages_remote', 'linux drivers/iommu/iommufd/pages.c: pfn_reader_user_pin'],
  },
  'kernel.vfio_unpin_page': {
    doc: 'host kernel unpins one 4 KiB page when its mapping is removed',
    functions: ['linux drivers/vfio/vfio_iommu_type1.c: vfio_unpin_pages_remote', 'linux drivers/iommu/iommufd/pages.c: iopt_area_unpin_domain'],
  },
  'kernel.vfio_dma_op': {
    doc: 'VFIO type1 looks the mapping up in (or inserts it into) its tree of vfio_dma ranges under the container lock',
    functions: ['linux drivers/vfio/vfio_iommu_type1.c: vfio_dma_do_map, vfio_dma_do_unmap, vfio_find_dma'],
  },
  'kernel.iommu_pte_write': {
    doc: 'host IOMMU driver writes one entry of the host I/O page table (io-pgtable), or exchanges one TCE of a POWER host table',
    functions: ['linux drivers/iommu/iommu.c: iommu_map, iommu_unmap', 'linux drivers/iommu/io-pgtable-arm.c: __arm_lpae_map, __arm_lpae_unmap', 'linux arch/powerpc/kernel/iommu.c: iommu_tce_xchg_no_kill'],
  },
  'kernel.vhost_req': {
    doc: 'vhost-iommu worker parses one request in the host kernel and looks its domain up',
    functions: ['prototype jpbrucker/linux drivers/vhost/iommu.c: vhost_iommu_handle_req (not upstream)'],
  },
  'kernel.tce_put': {
    doc: 'host kernel handles one TCE of a POWER host table: validate it and find its host address in preregistered memory (KVM\'s in-kernel handlers also update the guest view); the exchange of the hardware entry is kernel.iommu_pte_write',
    functions: [
      'linux arch/powerpc/kvm/book3s_64_vio.c: kvmppc_h_put_tce, kvmppc_tce_validate, kvmppc_tce_to_ua, kvmppc_tce_iommu_do_map, kvmppc_tce_iommu_unmap, kvmppc_tce_put',
      'linux drivers/vfio/vfio_iommu_spapr_tce.c: tce_iommu_build_v2, tce_iommu_prereg_ua_to_hpa, tce_iommu_clear',
      'linux arch/powerpc/mm/book3s64/iommu_api.c: mm_iommu_lookup, mm_iommu_ua_to_hpa',
    ],
  },
  'ppc.tce_kill': {
    doc: 'POWER host kills one PE\'s TCE cache over a range of TCEs after a table change: one OPAL_PCI_TCE_KILL call on PHB4 (or PHB3 kill-register writes), waiting for room in the PHB\'s kill queue',
    functions: [
      'linux arch/powerpc/kernel/iommu.c: iommu_tce_kill',
      'linux arch/powerpc/platforms/powernv/pci-ioda.c: pnv_pci_ioda2_tce_invalidate, pnv_pci_phb3_tce_invalidate',
      'hardware: PHB4 TCE kill queue (skiboot hw/phb4.c: phb4_tce_kill, OPAL_PCI_TCE_KILL)',
    ],
  },
  'vmm.dispatch_lookup': {
    doc: 'VMM finds which pSMMUs an ASID-scoped guest invalidation concerns (a single vSMMU with dispatch: lookup)',
    functions: ["exploration: no upstream QEMU vSMMU fronts several pSMMUs; a table the VMM keeps from the guest's context descriptors"],
  },
  'smmu.cmd_exec': {
    doc: 'physical SMMU executes one invalidation command',
    functions: ['hardware: SMMUv3 command queue (Arm IHI 0070, 4.4 Invalidation commands)'],
  },
  'smmu.sync': {
    doc: 'physical SMMU completes a CMD_SYNC once earlier commands are done, and the waiter sees it',
    functions: ['hardware: SMMUv3 CMD_SYNC (Arm IHI 0070, 4.7.3)', 'linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: arm_smmu_cmdq_poll_until_sync'],
  },
  'smmu.iotlb_lookup': {
    doc: 'physical SMMU looks a translation up in its IOTLB',
    functions: ['hardware: SMMUv3 TLB lookup'],
  },
  'smmu.walk_access': {
    doc: 'physical SMMU reads one descriptor (STE, CD or page-table entry) from memory during a walk',
    functions: ['hardware: SMMUv3 configuration and translation table walk (Arm IHI 0070, 3.3, 3.4)'],
  },
} as const satisfies Record<string, StepInfo>;

export type CostStep = keyof typeof COST_STEPS;

export function isCostStep(s: string): s is CostStep {
  return Object.prototype.hasOwnProperty.call(COST_STEPS, s);
}

/** Step costs in ns, as pushed to every process with the topology. */
export class CostTable {
  private readonly ns: Record<CostStep, number>;

  constructor(costs: Record<string, number>) {
    const missing = Object.keys(COST_STEPS).filter((k) => typeof costs[k] !== 'number');
    if (missing.length > 0) throw new Error(`cost table lacks ${missing.join(', ')}`);
    this.ns = costs as Record<CostStep, number>;
  }

  of(step: CostStep): number {
    return this.ns[step];
  }
}
