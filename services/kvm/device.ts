import type { Envelope__Output } from '../runtime/generated/vmmsim/v1/Envelope.js';
import type { MmioAccess } from '../formats/kvm-run.js';
import type { OpContext } from '../runtime/op-context.js';
import type { HandlerResult, RoleEnv } from '../runtime/role-api.js';

/**
 * What an architecture puts inside KVM: an ioeventfd whose handler runs in the host kernel
 * (vhost-iommu), or hypercalls KVM completes itself (in-kernel TCE). Whatever it does not claim
 * exits to the VM's VMM in user space.
 */
export interface KvmDevice {
  /** A trapped guest MMIO write of VM `vm`; undefined: not claimed, KVM exits to user space. */
  mmio?(access: MmioAccess, req: Envelope__Output, ctx: OpContext, vm: number): Promise<HandlerResult | undefined>;
  /** A guest hypercall of VM `vm`; undefined: not handled in the kernel (or punted), exits to user space. */
  hcall?(req: Envelope__Output, ctx: OpContext, vm: number): Promise<HandlerResult | undefined>;
  stats(): Record<string, number>;
}

export type KvmDeviceFactory = (env: RoleEnv) => KvmDevice;

const devices = new Map<string, KvmDeviceFactory>();

export function registerKvmDevice(model: string, factory: KvmDeviceFactory): void {
  devices.set(model, factory);
}

export function kvmDevice(model: string): KvmDeviceFactory | undefined {
  return devices.get(model);
}
