import { MODEL } from '../names.js';
import type { DesignDescriptor, DesignTraits } from '../types.js';

const TRAITS: DesignTraits = {
  hostTables: 'nested', sva: true, vcmdq: false, emulatedDevices: true, dmaIommu: true, arch: 'arm64', ats: true, kvmCmdq: 'always',
};

/**
 * Nested SMMUv3 with an in-kernel short path for the guest's invalidations: a proposal, not
 * upstream, and without code (issue 18 asks for it; no posted KVM patch traps the vSMMU's
 * CMDQ_PROD write, and the nearest posted idea is the queue uAPI of [PATCH v2 17/17]
 * arm_smmu_cache_invalidate_user, where the kernel reads the guest queue too). nested-smmuv3's
 * guest driver and vSMMU, with KVM taking the vSMMU queue's PROD writes and CONS reads itself: the invalidations go
 * from KVM to the pSMMU through iommufd inside the kernel (kvm.ts), the rest to the VMM as today.
 */
export const nestedSmmuv3Kvm: DesignDescriptor = {
  name: MODEL.nestedSmmuv3Kvm,
  summary: 'proposal, not upstream (no posted patch: vmmsim\'s exploration of the idea): nested SMMUv3 where KVM takes the guest\'s vSMMU CMDQ_PROD write and CONS read in the kernel, converts the TLBIs and ATC_INVs as iommufd does and issues them to the pSMMU with no exit to the VMM and no ioctl; CFGIs and the rest go on to the VMM',
  status: 'proposal',
  traits: TRAITS,
  parts: {
    guest: async () => (await import('../nested-smmuv3/guest.js')).smmuv3DmaApi(TRAITS),
    vmm: async () => (await import('../nested-smmuv3/vmm.js')).nestedVmm(TRAITS),
    kvm: async () => (await import('./kvm.js')).kvmCmdqDevice(TRAITS),
  },
};
