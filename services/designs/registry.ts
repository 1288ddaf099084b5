/**
 * The one list of designs. Each entry is the design's descriptor (its folder's index.ts): adding a
 * design is a folder and a line here, and a design missing from the list, or a part of the wrong
 * type, is a compile error. Roles and the controller reach a design only through this list.
 */
import type { RunTopology } from '../runtime/role-api.js';
import { iommufdLayout, type IommufdLayout } from '../machine/iommufd-objects.js';
import { emulatedSmmuv3 } from './emulated-smmuv3/index.js';
import { intelCm } from './intel-cm/index.js';
import { MODELS, type ModelName } from './names.js';
import { nestedSmmuv3Kvm } from './nested-smmuv3-kvm/index.js';
import { nestedSmmuv3Vcmdq } from './nested-smmuv3-vcmdq/index.js';
import { nestedSmmuv3 } from './nested-smmuv3/index.js';
import { host } from './host/index.js';
import { none } from './none/index.js';
import { spaprTceKvm } from './spapr-tce-kvm/index.js';
import { spaprTce } from './spapr-tce/index.js';
import type { DesignDescriptor, ShadowHost } from './types.js';
import { vhostIommu } from './vhost-iommu/index.js';
import { virtioIommu } from './virtio-iommu/index.js';

export const DESIGNS = {
  'none': none,
  'host': host,
  'intel-cm': intelCm,
  'emulated-smmuv3': emulatedSmmuv3,
  'virtio-iommu': virtioIommu,
  'vhost-iommu': vhostIommu,
  'spapr-tce': spaprTce,
  'spapr-tce-kvm': spaprTceKvm,
  'nested-smmuv3': nestedSmmuv3,
  'nested-smmuv3-vcmdq': nestedSmmuv3Vcmdq,
  'nested-smmuv3-kvm': nestedSmmuv3Kvm,
} as const satisfies Record<ModelName, DesignDescriptor>;

/** The descriptor of a design by name; a name no design has is a caller's bug (names are validated at the edge). */
export function designOf(name: string): DesignDescriptor {
  const d = (DESIGNS as Record<string, DesignDescriptor | undefined>)[name];
  if (!d) throw new Error(`no design named ${JSON.stringify(name)}`);
  return d;
}

/** Every design, in the order of MODELS (the order tables and compares list them). */
export function allDesigns(): DesignDescriptor[] {
  return MODELS.map((m) => DESIGNS[m]);
}

/** The designs whose traits satisfy `pick`, by name. */
export function designsWhere(pick: (d: DesignDescriptor) => boolean): ModelName[] {
  return allDesigns().filter(pick).map((d) => d.name);
}

/** iommufd's objects for a run (machine/iommufd-objects.ts), with HW queues only under a VCMDQ design. */
export function iommufdLayoutOf(t: RunTopology): IommufdLayout {
  return iommufdLayout(t, designOf(t.model).traits.vcmdq);
}

/**
 * What a shadowing design's host shadows into (DesignTraits.shadow), or undefined for a design
 * whose host does not shadow. A `shadow` design without it is a descriptor's bug.
 */
export function shadowOf(model: string): ShadowHost | undefined {
  const traits = designOf(model).traits;
  if (traits.hostTables !== 'shadow') return undefined;
  if (!traits.shadow) throw new Error(`design ${model} shadows but does not say into what (traits.shadow)`);
  return traits.shadow;
}
