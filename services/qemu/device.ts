import type { Envelope__Output } from '../runtime/generated/vmmsim/v1/Envelope.js';
import type { MmioAccess } from '../formats/kvm-run.js';
import type { OpContext } from '../runtime/op-context.js';
import type { HandlerResult, RoleEnv } from '../runtime/role-api.js';

/** A vIOMMU device model inside the VMM: it sees the MMIO exits KVM hands to user space. */
export interface VmmDevice {
  mmioExit(access: MmioAccess, req: Envelope__Output, ctx: OpContext): Promise<HandlerResult>;
  /** KVM_EXIT_PAPR_HCALL: a hypercall KVM left to user space. Payload as services/formats/spapr-tce.ts. */
  hcallExit?(req: Envelope__Output, ctx: OpContext): Promise<HandlerResult>;
  /** The run begins: device models the VMM emulates start their DMA. */
  start?(): void;
  stats(): Record<string, number>;
  close?(): void;
}

export type VmmDeviceFactory = (env: RoleEnv) => VmmDevice;

const devices = new Map<string, VmmDeviceFactory>();

export function registerVmmDevice(model: string, factory: VmmDeviceFactory): void {
  devices.set(model, factory);
}

export function vmmDevice(model: string): VmmDeviceFactory | undefined {
  return devices.get(model);
}
