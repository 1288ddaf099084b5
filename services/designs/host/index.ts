import { VmmsimError } from '../../runtime/errors.js';
import { MODEL } from '../names.js';
import type { DesignDescriptor, DesignTraits } from '../types.js';

const TRAITS: DesignTraits = {
  hostTables: 'bare-metal',
  sva: true,
  vcmdq: false,
  emulatedDevices: { refused: 'there is no VM, hence no VMM to emulate devices' },
  // The host kernel's own dma-iommu, swiotlb bounce path included.
  dmaIommu: true,
  arch: 'arm64',
  ats: true,
};

/**
 * The bare-metal reference: Linux's dma-iommu and arm-smmu-v3 driver on the host itself, with no
 * VM, no KVM and no VMM. The guest process plays the host kernel: it owns the pSMMUs, writes its
 * devices' STEs and its stage-1 tables in host memory, and drives each pSMMU's main command queue
 * directly (a `hw` transition per PROD write). Every vIOMMU can be read against it as well as
 * against `none`.
 */
export const host: DesignDescriptor = {
  name: MODEL.host,
  summary: 'bare metal: the host kernel\'s dma-iommu and arm-smmu-v3 driver on its own pSMMUs, no VM: an unmap writes the pSMMU\'s command queue directly',
  status: 'upstream',
  traits: TRAITS,
  parts: {
    guest: async () => (await import('./guest.js')).hostDmaApi,
  },
  check: (s) => {
    const refuse = (key: string, why: string, fix: string): never => {
      throw new VmmsimError('E_SCENARIO_FIELD', `scenario key ${key}: ${why} under ${MODEL.host} (bare metal: one host kernel, no VM)`, fix);
    };
    if (s.topology.vms !== 1) refuse('topology.vms', `${s.topology.vms} VMs mean nothing`, 'set topology.vms to 1');
    if (s.workload.migration.atOp > 0) refuse('workload.migration.atOp', 'there is no VM to migrate', 'set workload.migration.atOp to 0');
    if (s.workload.virtioMem.everyOps > 0) refuse('workload.virtioMem.everyOps', 'there is no virtio-mem device', 'set workload.virtioMem.everyOps to 0');
  },
};
