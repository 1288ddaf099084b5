import { MAX_SID_PAIRS } from '../../machine/iommufd-objects.js';
import { VmmsimError } from '../../runtime/errors.js';
import { MODEL } from '../names.js';
import { checkQueueUapi } from '../nested-smmuv3/queue-check.js';
import type { DesignDescriptor, DesignTraits } from '../types.js';

const TRAITS: DesignTraits = { hostTables: 'nested', sva: true, vcmdq: true, emulatedDevices: true, dmaIommu: true, arch: 'arm64', ats: true, kvmCmdq: 'fallback' };


/**
 * Nested SMMUv3 with Tegra241 VCMDQs: the guest's TLBI_NH_ASID, TLBI_NH_VA, ATC_INV and CMD_SYNC
 * go straight into hardware queues mapped into the guest. The rest takes nested-smmuv3's path:
 * the same guest driver, the same vSMMU (which also hands the VM its queues); with
 * workload.migration.fallback kvm, nested-smmuv3-kvm's in-kernel path instead.
 */
export const nestedSmmuv3Vcmdq: DesignDescriptor = {
  name: MODEL.nestedSmmuv3Vcmdq,
  summary: 'nested SMMUv3 with Tegra241 (Grace) VCMDQs: the guest\'s TLBIs and syncs go straight to a hardware queue mapped into it',
  status: 'upstream',
  traits: TRAITS,
  parts: {
    guest: async () => (await import('../nested-smmuv3/guest.js')).smmuv3DmaApi(TRAITS),
    vmm: async () => (await import('../nested-smmuv3/vmm.js')).nestedVmm(TRAITS),
    // Inert unless workload.migration.fallback is kvm: then the trapped queue is KVM's (exploration).
    kvm: async () => (await import('../nested-smmuv3-kvm/kvm.js')).kvmCmdqDevice(TRAITS),
  },
  check: (s) => {
    checkQueueUapi(s, MODEL.nestedSmmuv3Vcmdq);
    if (s.topology.devicesPerPsmmu > MAX_SID_PAIRS) {
      throw new VmmsimError('E_SCENARIO_FIELD', `scenario key topology.devicesPerPsmmu: at most ${MAX_SID_PAIRS} with ${MODEL.nestedSmmuv3Vcmdq} (a VINTF holds ${MAX_SID_PAIRS} SID_MATCH/SID_REPLACE pairs), got ${s.topology.devicesPerPsmmu}`);
    }
  },
};
