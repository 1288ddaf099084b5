import { MODEL } from '../names.js';
import type { DesignDescriptor } from '../types.js';

export const virtioIommu: DesignDescriptor = {
  name: MODEL.virtioIommu,
  summary: 'a paravirtualised IOMMU: MAP and UNMAP requests on a virtqueue, served by QEMU, each shadowed into VFIO',
  status: 'upstream',
  traits: { hostTables: 'shadow', shadow: 'device-domain', sva: false, vcmdq: false, emulatedDevices: { refused: 'its one vIOMMU would translate them itself, with no separate instance (not modeled)' }, dmaIommu: true, arch: 'arm64' },
  parts: {
    guest: async () => (await import('./guest.js')).dmaApi,
    vmm: async () => (await import('./vmm.js')).vmmDevice,
  },
};
