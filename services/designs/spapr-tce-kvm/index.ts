import { MODEL } from '../names.js';
import type { DesignDescriptor } from '../types.js';

export const spaprTceKvm: DesignDescriptor = {
  name: MODEL.spaprTceKvm,
  summary: 'sPAPR TCE hypercalls handled by KVM in the host kernel against a table registered in advance; what it cannot finish goes to QEMU',
  status: 'upstream',
  traits: { hostTables: 'shadow', shadow: 'tce-table', sva: false, vcmdq: false, emulatedDevices: { refused: 'its one vIOMMU would translate them itself, with no separate instance (not modeled)' }, dmaIommu: false, arch: 'ppc64' },
  parts: {
    guest: async () => (await import('../spapr-tce/guest.js')).dmaApi,
    vmm: async () => (await import('../spapr-tce/vmm.js')).vmmDeviceInKernelTable,
    kvm: async () => (await import('./kvm.js')).kvmDevice,
  },
};
