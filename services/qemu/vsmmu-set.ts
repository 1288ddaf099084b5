import { emulatedDevicesOf, emulatedVsmmuOf } from '../machine/emulated-vsmmu.js';
import type { Envelope__Output } from '../runtime/generated/vmmsim/v1/Envelope.js';
import type { MmioAccess } from '../formats/kvm-run.js';
import { Mutex } from '../machine/mutex.js';
import type { OpContext } from '../runtime/op-context.js';
import type { HandlerResult, RoleEnv } from '../runtime/role-api.js';
import { registerVmmDevice, type VmmDevice } from './device.js';
import { AcceleratedVsmmu } from './vsmmu-accel.js';
import { EmulatedVsmmu } from './vsmmu-emulated.js';
import type { VsmmuCmdq } from './vsmmu-cmdq.js';

/** One vSMMU model of a VMM with the name its counters take when another model has the same one. */
export interface VsmmuPart {
  label: string;
  model: VmmDevice & Pick<VsmmuCmdq, 'claims'>;
}

/**
 * Several vSMMU models in one VMM, each with its own instances at their own MMIO addresses: an MMIO
 * exit goes to the model whose registers it hits, as QEMU dispatches it through the memory region
 * each SMMUv3 device registered. They share the VMM's big lock. An address no model claims goes to
 * the first, which ignores it as any unclaimed MMIO is.
 */
export class VsmmuSet implements VmmDevice {
  constructor(private readonly parts: readonly VsmmuPart[]) {
    if (parts.length === 0) throw new RangeError('a vSMMU set needs at least one model');
  }

  /** The model an MMIO address belongs to. */
  modelAt(physAddr: number): VsmmuPart['model'] {
    return (this.parts.find((p) => p.model.claims(physAddr)) ?? (this.parts[0] as VsmmuPart)).model;
  }

  mmioExit(access: MmioAccess, req: Envelope__Output, ctx: OpContext): Promise<HandlerResult> {
    return this.modelAt(access.physAddr).mmioExit(access, req, ctx);
  }

  start(): void {
    for (const p of this.parts) p.model.start?.();
  }

  close(): void {
    for (const p of this.parts) p.model.close?.();
  }

  /**
   * Every model's counters; a name an earlier model already gave is prefixed with the model's label
   * (the VMM's lock, which they share, is counted once).
   */
  stats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const p of this.parts) {
      for (const [k, v] of Object.entries(p.model.stats())) {
        // One lock: every model reports the same one.
        if (k === 'bqlContended' && k in out) continue;
        out[k in out ? `${p.label}.${k}` : k] = v;
      }
    }
    return out;
  }
}

/**
 * The vSMMUs of a nested design's VMM: the accelerated ones in front of the VFIO devices and, when
 * the VM also has devices the VMM emulates, a separate emulated vSMMU instance for those, numbered
 * after the accelerated ones. Its commands stop in the VMM (no ioctl, no physical SMMU), and its
 * devices' DMA is translated here, through its software IOTLB over the VM's RAM.
 */
function nestedVsmmus(env: RoleEnv): VmmDevice {
  const vm = env.self.index;
  const emulated = emulatedDevicesOf(env.topology, vm);
  if (emulated.length === 0) return new AcceleratedVsmmu(env);
  const bql = new Mutex(`${env.self.name}.bql`);
  const accelerated = new AcceleratedVsmmu(env, { bql });
  const first = emulatedVsmmuOf(env.topology, vm);
  const devices = emulated.map((d) => ({ index: d.index, sid: d.vsid, vsmmu: 0 }));
  return new VsmmuSet([
    { label: 'accelerated', model: accelerated },
    { label: 'emulated', model: new EmulatedVsmmu(env, devices, { first, bql }) },
  ]);
}

registerVmmDevice('nested-smmuv3', nestedVsmmus);
// With VCMDQs the same vSMMU still takes every command the guest cannot put in a VCMDQ.
registerVmmDevice('nested-smmuv3-vcmdq', nestedVsmmus);
