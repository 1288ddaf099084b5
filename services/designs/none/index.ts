import { MODEL } from '../names.js';
import type { DesignDescriptor } from '../types.js';

export const none: DesignDescriptor = {
  name: MODEL.none,
  summary: 'no vIOMMU: the guest uses dma-direct; VFIO maps all guest RAM at stage 2 once, at VM start',
  status: 'upstream',
  traits: { hostTables: 'stage2', sva: false, vcmdq: false, emulatedDevices: { refused: 'without a vIOMMU nothing would translate their DMA' }, dmaIommu: false, arch: 'arm64' },
  parts: { guest: async () => (await import('./guest.js')).dmaApi },
};
