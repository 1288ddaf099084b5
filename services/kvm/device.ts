import type { MmioAccess } from '../formats/kvm-run.js';
import type { OpContext } from '../runtime/op-context.js';
import { type HandlerResult, type RoleEnv, type Request } from '../runtime/role-api.js';

/**
 * What an architecture puts inside KVM: an ioeventfd whose handler runs in the host kernel
 * (vhost-iommu), or hypercalls KVM completes itself (in-kernel TCE). Whatever it does not claim
 * exits to the VM's VMM in user space.
 */
export interface KvmDevice {
  /** A trapped guest MMIO write of VM `vm`; undefined: not claimed, KVM exits to user space. */
  mmio?(access: MmioAccess, req: Request, ctx: OpContext, vm: number): Promise<HandlerResult | undefined>;
  /**
   * A trapped guest MMIO read of VM `vm` that an in-kernel device serves (kvm_io_bus_read: upstream
   * only the vGIC's registers; an in-kernel vSMMU queue's CMDQ_CONS); undefined: exits to user space.
   */
  mmioRead?(access: MmioAccess, req: Request, ctx: OpContext, vm: number): Promise<HandlerResult | undefined>;
  /** A guest hypercall of VM `vm`; undefined: not handled in the kernel (or punted), exits to user space. */
  hcall?(req: Request, ctx: OpContext, vm: number): Promise<HandlerResult | undefined>;
  stats(): Record<string, number>;
}

/** A design's KVM part (services/designs): what it handles in the host kernel. */
export type KvmDeviceFactory = (env: RoleEnv) => KvmDevice;
