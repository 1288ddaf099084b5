import { describe, expect, it } from 'vitest';
import { EMULATED_ROOT_BUS, acceleratedVsmmus, emulatedDeviceList, emulatedDevicesOf, emulatedVsmmuOf } from '../../services/machine/emulated-vsmmu.js';
import { VmmsimError } from '../../services/runtime/errors.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { MODELS, type ModelName } from '../../services/scenario/schema.js';
import { checkEmulatedDevices, resolveScenario } from '../../services/scenario/validate.js';
import { devices } from '../../services/controller/session.js';

/** The topology the controller pushes for a scenario, as far as the emulated instance reads it. */
function topology(over: Record<string, unknown>): Topology__Output {
  const s = resolveScenario({ topology: over });
  return {
    vsmmu: s.topology.vsmmu, devices: devices(s), emulatedDevices: emulatedDeviceList(s.topology.vms, s.topology.emulatedDevices),
  } as unknown as Topology__Output;
}

function refusal(fn: () => void): VmmsimError | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof VmmsimError) return err;
    throw err;
  }
  return undefined;
}

describe('the emulated vSMMU instance beside the accelerated ones', () => {
  it('puts each VM\'s emulated devices on a root bus of their own, one device number each', () => {
    const list = emulatedDeviceList(2, 3);
    expect(list.map((d) => d.vm)).toEqual([0, 0, 0, 1, 1, 1]);
    expect(list.slice(0, 3).map((d) => d.vsid)).toEqual([0x8008, 0x8010, 0x8018]);
    // Bus 0x80: no RID of an assigned device (bus 0) can be one of them.
    for (const d of list) expect((d.vsid ?? 0) >> 8).toBe(EMULATED_ROOT_BUS);
    const last = emulatedDeviceList(1, 31).at(-1);
    expect(last?.vsid).toBe((EMULATED_ROOT_BUS << 8) | (31 << 3));
  });

  it('numbers a VM\'s emulated devices after every assigned device, so CDs, rings and ASIDs stay apart', () => {
    const t = topology({ psmmus: 2, vms: 2, devicesPerPsmmu: 2, emulatedDevices: 2 });
    expect(t.devices).toHaveLength(4);
    expect(emulatedDevicesOf(t, 0).map((d) => d.index)).toEqual([4, 5]);
    expect(emulatedDevicesOf(t, 1).map((d) => d.index)).toEqual([6, 7]);
    expect(emulatedDevicesOf(topology({ psmmus: 2 }), 0)).toEqual([]);
  });

  it('comes after the accelerated vSMMUs: after the single one, or after one per pSMMU the VM uses', () => {
    const single = topology({ psmmus: 3, vsmmu: 'single', emulatedDevices: 1 });
    expect(acceleratedVsmmus(single, 0)).toBe(1);
    expect(emulatedVsmmuOf(single, 0)).toBe(1);
    const perPsmmu = topology({ psmmus: 3, vsmmu: 'per-psmmu', emulatedDevices: 1 });
    expect(emulatedVsmmuOf(perPsmmu, 0)).toBe(3);
    // Two VMs sharing three pSMMUs one device each: VM 0 uses pSMMUs 0 and 2, VM 1 only pSMMU 1.
    const shared = topology({ psmmus: 3, vms: 2, vsmmu: 'per-psmmu', emulatedDevices: 1 });
    expect(emulatedVsmmuOf(shared, 0)).toBe(2);
    expect(emulatedVsmmuOf(shared, 1)).toBe(1);
  });
});

describe('scenario key topology.emulatedDevices', () => {
  it('defaults to none and takes up to one root bus of devices under the nested designs', () => {
    expect(resolveScenario({}).topology.emulatedDevices).toBe(0);
    expect(resolveScenario({ model: 'nested-smmuv3-vcmdq', topology: { emulatedDevices: 31 } }).topology.emulatedDevices).toBe(31);
    const over = refusal(() => resolveScenario({ topology: { emulatedDevices: 32 } }));
    expect(over?.code).toBe('E_SCENARIO_FIELD');
    expect(over?.message).toContain('topology.emulatedDevices');
  });

  it('is refused, naming the reason and the fix, under every design without a separate emulated vSMMU', () => {
    const accepting: ModelName[] = ['nested-smmuv3', 'nested-smmuv3-vcmdq', 'nested-smmuv3-kvm'];
    for (const model of MODELS) {
      const err = refusal(() => resolveScenario({ model, topology: { emulatedDevices: 1 } }));
      if (accepting.includes(model)) {
        expect(err, model).toBeUndefined();
        continue;
      }
      expect(err?.code, model).toBe('E_NOT_SUPPORTED');
      expect(err?.message, model).toContain(`topology.emulatedDevices: 1 is not supported with model ${model}`);
      expect(err?.fix, model).toContain('nested-smmuv3');
      // With none, the scenario itself is fine: only the model rules the key out.
      expect(refusal(() => resolveScenario({ model, topology: { emulatedDevices: 0 } })), model).toBeUndefined();
    }
    expect(refusal(() => resolveScenario({ model: 'emulated-smmuv3', topology: { emulatedDevices: 2 } }))?.message).toContain('already emulated');
  });

  it('is checked again for each model a scenario runs under (compare, sweep)', () => {
    const s = resolveScenario({ topology: { emulatedDevices: 1 } });
    expect(refusal(() => checkEmulatedDevices(s.topology, 'nested-smmuv3-vcmdq'))).toBeUndefined();
    expect(refusal(() => checkEmulatedDevices(s.topology, 'virtio-iommu'))?.code).toBe('E_NOT_SUPPORTED');
  });
});
