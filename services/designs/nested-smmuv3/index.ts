import { MODEL } from '../names.js';
import { checkQueueUapi } from './queue-check.js';
import type { DesignDescriptor, DesignTraits } from '../types.js';

const TRAITS: DesignTraits = { hostTables: 'nested', sva: true, vcmdq: false, emulatedDevices: true, dmaIommu: true, arch: 'arm64', ats: true };


export const nestedSmmuv3: DesignDescriptor = {
  name: MODEL.nestedSmmuv3,
  summary: 'nested SMMUv3 through iommufd: the guest owns stage 1; its invalidations trap to QEMU\'s accelerated vSMMU, which issues IOMMU_HWPT_INVALIDATE',
  status: 'upstream',
  traits: TRAITS,
  parts: {
    guest: async () => (await import('./guest.js')).smmuv3DmaApi(TRAITS),
    vmm: async () => (await import('./vmm.js')).nestedVmm(TRAITS),
  },
  check: (s) => checkQueueUapi(s, MODEL.nestedSmmuv3),
};
