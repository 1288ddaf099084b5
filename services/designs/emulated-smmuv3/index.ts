import { VmmsimError } from '../../runtime/errors.js';
import { MODEL } from '../names.js';
import type { DesignDescriptor, DesignTraits } from '../types.js';

const TRAITS: DesignTraits = { hostTables: 'emulated', sva: true, vcmdq: false, emulatedDevices: { refused: 'every device is already emulated, behind its one emulated vSMMU (raise topology.devicesPerPsmmu for more)' }, dmaIommu: true, arch: 'arm64', ats: { refused: 'QEMU\'s emulated vSMMU offers no ATS (smmu_validate_property: "ats can only be enabled if accel=on"), and its devices are QEMU\'s own' } };


export const emulatedSmmuv3: DesignDescriptor = {
  name: MODEL.emulatedSmmuv3,
  summary: 'QEMU\'s emulated SMMUv3 in front of devices QEMU emulates (it cannot shadow for VFIO devices): commands are consumed in the PROD-write trap',
  status: 'upstream',
  traits: TRAITS,
  parts: {
    guest: async () => (await import('../nested-smmuv3/guest.js')).smmuv3DmaApi(TRAITS),
    vmm: async () => (await import('./vmm.js')).vmmDevice,
  },
  check: (s) => {
    // hw/arm/smmuv3.c smmu_validate_property: "ril can only be disabled if accel=on".
    if (!s.smmu.ril) throw new VmmsimError('E_SCENARIO_FIELD', `scenario key smmu.ril: QEMU's emulated vSMMU always has range invalidation (it refuses ril=off: "ril can only be disabled if accel=on"), so ${MODEL.emulatedSmmuv3} cannot run with smmu.ril false`, 'set smmu.ril to true, or pick a nested design');
  },
};
