/**
 * Every step the cost model charges, by name. A profile (profiles/*.yaml) gives each a cost in
 * nanoseconds of the simulated machine and a source. Models charge steps by these names only, so a
 * profile that misses one is refused when it is loaded, never discovered mid-run.
 */
export const COST_STEPS = {
  'guest.iova_alloc': 'guest DMA API: allocate an IOVA range (rcache hit)',
  'guest.iova_free': 'guest DMA API: free an IOVA range',
  'guest.dma_direct': 'guest DMA API without an IOMMU: dma_map/dma_unmap bookkeeping (phys_to_dma)',
  'guest.pte_write': 'guest writes one stage-1 page-table entry (with the barrier that publishes it)',
  'guest.cmdq_write': 'guest driver writes one 16-byte command into its (v)CMDQ ring',
  'guest.static_lookup': 'static mode: the driver finds the IOVA of a buffer it mapped once',
  'guest.bounce_copy': 'bounce mode: copy one 4 KiB page between the I/O buffer and its bounce slot',
  'guest.fq_insert': 'lazy mode: guest queues one unmapped IOVA in its per-CPU flush queue',
  'exit.mmio_trap': 'guest MMIO write traps to KVM and KVM resumes the guest (handled in the kernel)',
  'exit.to_user': 'extra cost when KVM returns to the VMM in user space for an MMIO exit and the VMM re-enters KVM_RUN',
  'vmm.vsmmu_cmd': 'VMM vSMMU model reads, decodes and dispatches one guest command',
  'ioctl.syscall': 'one ioctl from the VMM into the host kernel: entry, dispatch and exit',
  'kernel.hwpt_cmd': 'iommufd converts one guest command in HWPT_INVALIDATE (copy, VMID stamp, vSID to pSID)',
  'kernel.cmdq_insert': 'host SMMU driver writes one command into the physical CMDQ (slot reservation included)',
  'guest.virtio_req': 'guest virtio-iommu driver builds one request and adds its descriptors to the request virtqueue',
  'exit.hcall': 'guest hypercall traps to KVM and KVM resumes the guest (handled in the kernel)',
  'host.thread_wakeup': 'a host thread blocked on an eventfd (the VMM I/O thread, a vhost worker) is woken and scheduled to take a kick',
  'vmm.vtd_desc': 'VMM VT-d model reads, decodes and dispatches one invalidation-queue descriptor',
  'vmm.iommu_walk_pte': 'VMM reads one entry of the guest I/O page table while it syncs its shadow (vtd_page_walk)',
  'vmm.virtio_req': 'VMM virtio-iommu device pops one request, checks it against its domain and mappings, and writes the tail status',
  'vmm.tce_entry': 'VMM sPAPR model updates one TCE in its table and notifies the VFIO listener',
  'vmm.iotlb_invalidate': 'emulated vSMMU drops the matching entries of its software IOTLB for one invalidation command',
  'kernel.vfio_pin_page': 'host kernel pins one 4 KiB page of guest memory for a mapping (pin_user_pages and locked-memory accounting)',
  'kernel.vfio_unpin_page': 'host kernel unpins one 4 KiB page when its mapping is removed',
  'kernel.vfio_dma_op': 'VFIO type1 looks the mapping up in (or inserts it into) its tree of vfio_dma ranges under the container lock',
  'kernel.iommu_pte_write': 'host IOMMU driver writes one entry of the host I/O page table (io-pgtable)',
  'kernel.vhost_req': 'vhost-iommu worker parses one request in the host kernel and looks its domain up',
  'kernel.tce_put': 'KVM in-kernel H_PUT_TCE: validate one TCE, find its host address in preregistered memory, and write it to the guest view and the hardware table',
  'vmm.dispatch_lookup': 'VMM finds which pSMMUs an ASID-scoped guest invalidation concerns (a single vSMMU with dispatch: lookup)',
  'smmu.cmd_exec': 'physical SMMU executes one invalidation command',
  'smmu.sync': 'physical SMMU completes a CMD_SYNC once earlier commands are done, and the waiter sees it',
  'smmu.iotlb_lookup': 'physical SMMU looks a translation up in its IOTLB',
  'smmu.walk_access': 'physical SMMU reads one descriptor (STE, CD or page-table entry) from memory during a walk',
} as const;

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
