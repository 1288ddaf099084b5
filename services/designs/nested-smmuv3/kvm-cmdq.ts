import type { RunTopology } from '../../runtime/role-api.js';
import type { DesignTraits } from '../types.js';

/**
 * Whether KVM takes the trapped vSMMU queue of this run in the kernel (DesignTraits.kvmCmdq):
 * always under nested-smmuv3-kvm; under a VCMDQ design only when workload.migration.fallback is
 * kvm (the vCPUs a migration left without a VCMDQ, and every command a VCMDQ does not take, go
 * through KVM's short path instead of the VMM). KVM and the VMM then share the queue's registers.
 */
export function kvmTakesCmdq(traits: DesignTraits, t: RunTopology): boolean {
  if (traits.kvmCmdq === 'always') return true;
  return traits.kvmCmdq === 'fallback' && t.workload?.migration?.fallback === 'kvm';
}

/** The accelerated vSMMU instances of VM `vm`: one for all its vIOMMUs, or one per vIOMMU. */
export function acceleratedVsmmus(t: RunTopology, viommus: number): number {
  return t.vsmmu === 'single' ? Math.min(1, viommus) : viommus;
}
