import { MODEL } from '../names.js';
import type { DesignDescriptor } from '../types.js';

export const spaprTce: DesignDescriptor = {
  name: MODEL.spaprTce,
  summary: 'POWER sPAPR TCE tables: each guest map and unmap is an H_PUT_TCE / H_PUT_TCE_INDIRECT / H_STUFF_TCE hypercall that QEMU serves and forwards to VFIO',
  status: 'upstream',
  traits: { hostTables: 'shadow', shadow: 'tce-table', sva: false, vcmdq: false, emulatedDevices: { refused: 'its one vIOMMU would translate them itself, with no separate instance (not modeled)' }, dmaIommu: false, arch: 'ppc64' },
  parts: {
    guest: async () => (await import('./guest.js')).dmaApi,
    vmm: async () => (await import('./vmm.js')).vmmDevice,
  },
};
