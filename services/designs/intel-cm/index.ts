import { MODEL } from '../names.js';
import type { DesignDescriptor } from '../types.js';

export const intelCm: DesignDescriptor = {
  name: MODEL.intelCm,
  summary: 'QEMU\'s emulated Intel VT-d in caching mode: the guest invalidates after map and unmap, QEMU walks its table and shadows each change into VFIO type1',
  status: 'upstream',
  traits: { hostTables: 'shadow', shadow: 'device-domain', sva: false, vcmdq: false, emulatedDevices: { refused: 'its one vIOMMU would translate them itself, with no separate instance (not modeled)' }, dmaIommu: true, arch: 'x86_64' },
  parts: {
    guest: async () => (await import('./guest.js')).dmaApi,
    vmm: async () => (await import('./vmm.js')).vmmDevice,
  },
};
