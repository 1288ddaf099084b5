import { describe, expect, it } from 'vitest';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { viommuVmid } from '../../services/machine/iommufd-objects.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { devices } from '../../services/controller/session.js';
import { iommufdLayoutOf } from '../../services/designs/registry.js';

/** The topology fields the object layout reads, for a scenario's devices. */
function topology(over: Record<string, unknown>, vmidPolicy: string, vsmmu: string): Topology__Output {
  const s = resolveScenario({ topology: over });
  return {
    model: 'nested-smmuv3-vcmdq', devices: devices(s), vmids: Array.from({ length: s.topology.vms }, (_, v) => v + 1), vsmmu, vmidPolicy, vcmdqsPerVsmmu: 2,
  } as unknown as Topology__Output;
}

describe('the iommufd objects a VMM creates', () => {
  it('gives one vIOMMU per (VM, pSMMU), each with the VM\'s VMID under per-s2-parent', () => {
    const t = topology({ psmmus: 3, vms: 2, devicesPerPsmmu: 2 }, 'per-s2-parent', 'per-psmmu');
    const l = iommufdLayoutOf(t);
    expect(l.viommus.map((v) => [v.vm, v.psmmu, v.vmid])).toEqual([[0, 0, 1], [0, 1, 1], [0, 2, 1], [1, 0, 2], [1, 1, 2], [1, 2, 2]]);
    expect(l.vdevices).toHaveLength(6);
  });

  it('gives each vSMMU its own VMID under per-vsmmu with one vSMMU per pSMMU, never one another VM uses', () => {
    const t = topology({ psmmus: 3, vms: 2, devicesPerPsmmu: 2 }, 'per-vsmmu', 'per-psmmu');
    const vmids = iommufdLayoutOf(t).viommus.map((v) => v.vmid);
    expect(new Set(vmids).size).toBe(6);
    expect(viommuVmid(t, 1, 2)).toBe(6);
    // A single vSMMU is one instance: the VM's one VMID again.
    const single = topology({ psmmus: 3, vms: 2, devicesPerPsmmu: 2 }, 'per-vsmmu', 'single');
    expect(iommufdLayoutOf(single).viommus.map((v) => v.vmid)).toEqual([1, 1, 1, 2, 2, 2]);
  });

  it('hands out VCMDQs only to a vSMMU that fronts one pSMMU', () => {
    expect(iommufdLayoutOf(topology({ psmmus: 2 }, 'per-s2-parent', 'single')).hwQueues).toEqual([]);
    expect(iommufdLayoutOf(topology({ psmmus: 2 }, 'per-s2-parent', 'per-psmmu')).hwQueues).toHaveLength(4);
  });
});
