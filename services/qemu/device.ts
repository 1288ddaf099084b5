import type { MmioAccess } from '../formats/kvm-run.js';
import type { OpContext } from '../runtime/op-context.js';
import { type HandlerResult, type RoleEnv, type Request } from '../runtime/role-api.js';

/** A vIOMMU device model inside the VMM: it sees the MMIO exits KVM hands to user space. */
export interface VmmDevice {
  mmioExit(access: MmioAccess, req: Request, ctx: OpContext): Promise<HandlerResult>;
  /** KVM_EXIT_PAPR_HCALL: a hypercall KVM left to user space. Payload as services/formats/spapr-tce.ts. */
  hcallExit?(req: Request, ctx: OpContext): Promise<HandlerResult>;
  /** The run begins: device models the VMM emulates start their DMA. */
  start?(): void;
  stats(): Record<string, number>;
  close?(): void;
}

/** A design's VMM part (services/designs): its vIOMMU device model. */
export type VmmDeviceFactory = (env: RoleEnv) => VmmDevice;
