import { MODEL } from '../names.js';
import type { DesignDescriptor, DesignTraits } from '../types.js';

const TRAITS: DesignTraits = { hostTables: 'emulated', sva: true, vcmdq: false, emulatedDevices: { refused: 'every device is already emulated, behind its one emulated vSMMU (raise topology.devicesPerPsmmu for more)' }, dmaIommu: true, arch: 'arm64' };

export const emulatedSmmuv3: DesignDescriptor = {
  name: MODEL.emulatedSmmuv3,
  summary: 'QEMU\'s emulated SMMUv3 in front of devices QEMU emulates (it cannot shadow for VFIO devices): commands are consumed in the PROD-write trap',
  status: 'upstream',
  traits: TRAITS,
  parts: {
    guest: async () => (await import('../nested-smmuv3/guest.js')).smmuv3DmaApi(TRAITS),
    vmm: async () => (await import('./vmm.js')).vmmDevice,
  },
};
