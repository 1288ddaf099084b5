import { MODEL } from '../names.js';
import type { DesignDescriptor } from '../types.js';

export const vhostIommu: DesignDescriptor = {
  name: MODEL.vhostIommu,
  summary: 'virtio-iommu served in the host kernel by a vhost worker that maps into each assigned device\'s host IOMMU domain (no VMM, no ioctl): an extrapolation of the vhost-iommu prototype (jpbrucker/linux drivers/vhost/iommu.c), which keeps a software IOTLB for vhost endpoints and never calls iommu_map',
  status: 'extrapolation',
  traits: { hostTables: 'shadow', shadow: 'device-domain', sva: false, vcmdq: false, emulatedDevices: { refused: 'its one vIOMMU would translate them itself, with no separate instance (not modeled)' }, dmaIommu: true, arch: 'arm64' },
  parts: {
    guest: async () => (await import('../virtio-iommu/guest.js')).dmaApi,
    kvm: async () => (await import('./kvm.js')).kvmDevice,
  },
};
