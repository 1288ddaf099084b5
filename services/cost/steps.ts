/**
 * Every step the cost model charges, by name: what it is and the functions it stands for in the
 * pinned Linux and QEMU releases (PINNED), so every modeled nanosecond can be read beside the source.
 * A profile (profiles/*.yaml) gives each a cost in nanoseconds of the simulated machine, a source and
 * a confidence. Models charge steps by these names only, so a profile that misses one is refused when
 * it is loaded, never discovered mid-run.
 */

import { StepTable } from './step-vector.js';

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
  'net.tx_packet': {
    doc: 'packet-stream: the guest network stack and NIC driver transmit one packet of at most an MTU (or one TSO segment, priced as one packet): socket send and copy from user, TCP/IP output, qdisc, the driver\'s xmit and its TX-completion reap; the dma_map and dma_unmap around it are their own operations',
    functions: [
      'linux net/ipv4/tcp.c: tcp_sendmsg_locked',
      'linux net/ipv4/ip_output.c: ip_queue_xmit, ip_finish_output2',
      'linux net/core/dev.c: __dev_queue_xmit, dev_hard_start_xmit',
      'linux drivers/net/ethernet/mellanox/mlx5/core/en_tx.c: mlx5e_xmit, mlx5e_poll_tx_cq',
      'linux net/core/skbuff.c: napi_consume_skb',
    ],
  },
  'net.rx_packet': {
    doc: 'packet-stream: the guest NIC driver and network stack receive one packet of at most an MTU (or one GRO segment, priced as one packet): NAPI poll, skb build, GRO, IP/TCP input and the copy to user; the RX buffer\'s dma_map (refill) and dma_unmap are their own operations',
    functions: [
      'linux drivers/net/ethernet/mellanox/mlx5/core/en_rx.c: mlx5e_poll_rx_cq, mlx5e_handle_rx_cqe',
      'linux net/core/gro.c: napi_gro_receive',
      'linux net/core/dev.c: __netif_receive_skb_core',
      'linux net/ipv4/ip_input.c: ip_rcv, ip_local_deliver',
      'linux net/ipv4/tcp_ipv4.c: tcp_v4_rcv',
      'linux net/core/datagram.c: skb_copy_datagram_iter',
    ],
  },
  'block.request': {
    doc: 'block: the guest block layer and NVMe driver issue and complete one request, interrupt-driven: bio to request, the submission-queue entry and doorbell, the completion interrupt and the request\'s end; the request\'s dma_map (dma_map_sg) and dma_unmap are their own operations',
    functions: [
      'linux block/blk-mq.c: blk_mq_submit_bio, blk_mq_end_request',
      'linux drivers/nvme/host/pci.c: nvme_queue_rq, nvme_irq, nvme_pci_complete_rq',
      'linux io_uring/rw.c: io_read, io_complete_rw',
    ],
  },
  'guest.pmd_io': {
    doc: 'dma=static: a poll-mode driver (DPDK, SPDK) posts and reaps one I/O from user space, no interrupt, no kernel stack; its buffer is premapped, so no dma_map',
    functions: ['driver-level: DPDK rte_eth_tx_burst / rte_eth_rx_burst (mlx5_tx_burst, mlx5_rx_burst); SPDK spdk_nvme_ns_cmd_read / spdk_nvme_qpair_process_completions (not Linux)'],
  },
  'hw.device_ns': {
    doc: 'one nanosecond of a device serving an I/O (the NIC\'s per-packet time, an NVMe drive\'s service time): a unit, charged as many times as the scenario\'s device keys give nanoseconds, so an I/O\'s device time travels in its step vector',
    functions: ['hardware: the NIC\'s packet pipeline (device.nic.mpps), the NVMe drive\'s media and controller (device.nvme.serviceUs)'],
  },
  'hw.link_ns': {
    doc: 'one nanosecond of a link carrying an I/O (the Ethernet wire, the NVMe drive\'s PCIe link): a unit, charged as many times as the scenario\'s link keys give nanoseconds',
    functions: ['hardware: Ethernet MAC/PHY at device.nic.lineGbps; PCIe link at device.nvme.linkGBps'],
  },
  'guest.fq_insert': {
    doc: 'lazy mode: guest queues one unmapped IOVA in its per-CPU flush queue',
    functions: ['linux drivers/iommu/dma-iommu.c: queue_iova, fq_ring_add'],
  },
  'exit.mmio_trap': {
    doc: 'guest MMIO access (a write, or a read such as a CMDQ_CONS poll) traps to KVM and KVM resumes the guest (handled in the kernel)',
    functions: ['linux arch/arm64/kvm/mmu.c: kvm_handle_guest_abort', 'linux arch/arm64/kvm/mmio.c: io_mem_abort, kvm_handle_mmio_return'],
  },
  'exit.to_user': {
    doc: 'extra cost when KVM returns to the VMM in user space for an MMIO exit (a write or a read: the same crossings; the profiles derive it from an MMIO read to user space) and the VMM re-enters KVM_RUN',
    functions: ['linux virt/kvm/kvm_main.c: kvm_vcpu_ioctl (KVM_RUN)', 'qemu accel/kvm/kvm-all.c: kvm_cpu_exec', 'qemu hw/arm/smmuv3.c: smmu_read_mmio, smmu_write_mmio'],
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
  'kernel.hwpt_queue_entry': {
    doc: 'vmm.hwptInvalidate=queue (proposal): the kernel reads one entry of the guest\'s command queue itself, from the VMM\'s mapping of guest RAM at cmdq_uptr (copy_from_user of one 16-byte slot), and converts it as arm_vsmmu_convert_user_cmd does (VMID stamp, vSID to pSID) or skips it',
    functions: ['proposal: [PATCH v2 17/17] iommu/arm-smmu-v3: Add arm_smmu_cache_invalidate_user (Nicolin Chen, 9 May 2023; struct iommu_hwpt_invalidate_arm_smmuv3 cmdq_uptr, cmdq_cons_uptr, cmdq_prod), not merged: upstream took the entry array of IOMMU_HWPT_INVALIDATE'],
  },
  'kvm.vsmmu_cmd': {
    doc: 'nested-smmuv3-kvm (a proposal with no posted code): KVM reads one command of the guest\'s vSMMU queue from guest memory, checks it against the HWPT_INVALIDATE allow-list and converts it (VMID stamp, vSID to pSID) for the pSMMU, in the kernel',
    functions: [
      'exploration: the in-kernel short path asked for in issue 18; no posted KVM patch traps the vSMMU CMDQ_PROD write (the nearest is Nicolin Chen\'s [PATCH v2 17/17] iommu/arm-smmu-v3: Add arm_smmu_cache_invalidate_user, May 2023, where the kernel reads the guest queue for the VMM); stands for a kvm_read_guest of one 16-byte slot and, called from KVM, the conversion of',
      'linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c: arm_vsmmu_convert_user_cmd, arm_vsmmu_vsid_to_sid',
      'linux virt/kvm/kvm_main.c: kvm_read_guest',
    ],
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
    functions: ['linux drivers/vfio/vfio_iommu_type1.c: vfio_pin_pages_remote', 'linux drivers/iommu/iommufd/pages.c: pfn_reader_user_pin', 'linux drivers/iommu/iommufd/viommu.c: iommufd_hw_queue_alloc_phys (a HW queue\'s guest pages, through an internal access)'],
  },
  'kernel.vfio_unpin_page': {
    doc: 'host kernel unpins one 4 KiB page when its mapping is removed',
    functions: ['linux drivers/vfio/vfio_iommu_type1.c: vfio_unpin_pages_remote', 'linux drivers/iommu/iommufd/pages.c: iopt_area_unpin_domain', 'linux drivers/iommu/iommufd/viommu.c: iommufd_hw_queue_destroy_access'],
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
  'cpu.mmio_read_device': {
    doc: 'a CPU reads a device register with no trap: a VCMDQ\'s CONS or GERROR on the VINTF page mapped into the guest (the read that sees a CMD_SYNC complete is part of smmu.sync_polled)',
    functions: ['linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: __arm_smmu_cmdq_poll_until_consumed (readl of the queue\'s cons_reg)', 'hardware: an uncached (Device-nGnRE) load from an on-die device'],
  },
  'smmu.cmd_exec': {
    doc: 'physical SMMU executes one invalidation command',
    functions: ['hardware: SMMUv3 command queue (Arm IHI 0070, 4.4 Invalidation commands)'],
  },
  'smmu.sync': {
    doc: 'physical SMMU completes a CMD_SYNC once earlier commands are done, and the waiter sees it',
    functions: ['hardware: SMMUv3 CMD_SYNC (Arm IHI 0070, 4.7.3)', 'linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: arm_smmu_cmdq_poll_until_sync'],
  },
  'smmu.sync_polled': {
    doc: 'a CMD_SYNC with CS=NONE completes and the CPU polling the queue\'s CONS sees it: the SMMU\'s sync and the final uncached read of CONS that observes it (a VCMDQ takes no other CS)',
    functions: ['linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: arm_smmu_cmdq_poll_until_sync -> __arm_smmu_cmdq_poll_until_consumed (queue_poll, then readl of cons_reg, until CONS passed the sync)', 'hardware: SMMUv3 CMD_SYNC (Arm IHI 0070, 4.7.3), a Tegra241 CMDQV VCMDQ'],
  },
  'smmu.atc_inv': {
    doc: 'a CMD_SYNC behind ATC_INVs completes only when the devices answered: the SMMU sends each an ATS Invalidate Request and waits for its Invalidation Completion (a PCIe round trip; requests to several devices overlap)',
    functions: ['linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c: arm_smmu_atc_inv_domain, arm_smmu_atc_inv_to_cmd', 'hardware: PCIe ATS Invalidate Request / Invalidation Completion (PCIe Base Spec, Address Translation Services)'],
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
  /** The run's steps by index: what an operation's step counts are counted against (step-vector.ts). */
  readonly steps: StepTable;

  constructor(costs: Record<string, number>) {
    const missing = Object.keys(COST_STEPS).filter((k) => typeof costs[k] !== 'number');
    if (missing.length > 0) throw new Error(`cost table lacks ${missing.join(', ')}`);
    this.ns = costs as Record<CostStep, number>;
    this.steps = new StepTable(costs);
  }

  of(step: CostStep): number {
    return this.ns[step];
  }

  /** The index of a step in `steps`. */
  index(step: CostStep): number {
    return this.steps.indexOf(step);
  }
}
