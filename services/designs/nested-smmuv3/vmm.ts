import { emulatedDevicesOf, emulatedVsmmuOf } from '../../machine/emulated-vsmmu.js';
import type { MmioAccess } from '../../formats/kvm-run.js';
import { Mutex } from '../../machine/mutex.js';
import type { OpContext } from '../../runtime/op-context.js';
import { type HandlerResult, type RoleEnv, type Request } from '../../runtime/role-api.js';
import type { DesignTraits } from '../types.js';
import type { VmmDevice, VmmDeviceFactory } from '../../qemu/device.js';
import { AcceleratedVsmmu } from './vsmmu-accel.js';
import { EmulatedVsmmu } from '../emulated-smmuv3/vmm.js';
import type { VsmmuCmdq } from '../emulated-smmuv3/vsmmu-cmdq.js';
import { TRANSLATION_COUNTERS } from '../../machine/device-dma.js';

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

  mmioExit(access: MmioAccess, req: Request, ctx: OpContext): Promise<HandlerResult> {
    return this.modelAt(access.physAddr).mmioExit(access, req, ctx);
  }

  start(): void {
    for (const p of this.parts) p.model.start?.();
  }

  close(): void {
    for (const p of this.parts) p.model.close?.();
  }

  /**
   * Every model's counters: the first model's under their own names, every other's under its label
   * (`emulated.commands`), but for the counters of the DMA each translates, which are the run's DMA
   * summed over every translator (machine/device-dma.ts), and the VMM's lock, which they share.
   */
  stats(): Record<string, number> {
    const out: Record<string, number> = {};
    this.parts.forEach((p, i) => {
      for (const [k, v] of Object.entries(p.model.stats())) {
        if (k === 'bqlContended') out[k] = v;
        else if (SUMMED.has(k)) out[k] = (out[k] ?? 0) + v;
        else out[i === 0 ? k : `${p.label}.${k}`] = v;
      }
    });
    return out;
  }
}

const SUMMED: ReadonlySet<string> = new Set(TRANSLATION_COUNTERS);

/**
 * The vSMMUs of a nested design's VMM: the accelerated ones in front of the VFIO devices and, when
 * the VM also has devices the VMM emulates, a separate emulated vSMMU instance for those, numbered
 * after the accelerated ones. Its commands stop in the VMM (no ioctl, no physical SMMU), and its
 * devices' DMA is translated here, through its software IOTLB over the VM's RAM.
 */
export function nestedVmm(traits: DesignTraits): VmmDeviceFactory {
  return (env: RoleEnv): VmmDevice => nestedVsmmus(env, traits);
}

function nestedVsmmus(env: RoleEnv, traits: DesignTraits): VmmDevice {
  const vm = env.self.index;
  const emulated = emulatedDevicesOf(env.topology, vm);
  if (emulated.length === 0) return new AcceleratedVsmmu(env, traits);
  const bql = new Mutex(`${env.self.name}.bql`);
  const accelerated = new AcceleratedVsmmu(env, traits, { bql });
  const first = emulatedVsmmuOf(env.topology, vm);
  const devices = emulated.map((d) => ({ index: d.index, sid: d.vsid, vsmmu: 0 }));
  return new VsmmuSet([
    { label: 'accelerated', model: accelerated },
    { label: 'emulated', model: new EmulatedVsmmu(env, devices, { first, bql }) },
  ]);
}
