import type { EmulatedDevice } from '../runtime/generated/vmmsim/v1/EmulatedDevice.js';
import type { Topology__Output } from '../runtime/generated/vmmsim/v1/Topology.js';
import { vsmmuOfDevice } from './iommufd-objects.js';

/**
 * The emulated vSMMU instance a VM of a nested design gets beside its accelerated vSMMUs when it
 * also has devices its VMM emulates (topology.emulatedDevices): an accelerated vSMMU fronts only
 * VFIO devices, so the emulated ones sit on a root bus of their own whose RID range the IORT maps
 * to a separate, emulated SMMUv3. The guest numbers it after the accelerated ones, so its MMIO
 * registers and command queue come from the same board layout (smmu/registers.ts).
 */

/** PCI bus number of the emulated devices' root complex: assigned devices are on bus 0. */
export const EMULATED_ROOT_BUS = 0x80;

/** An emulated device as the guest and its VMM see it. */
export interface EmulatedDeviceInfo {
  /**
   * Guest device number: after every assigned device of the topology, so its context descriptor,
   * ring and ASID never collide with an assigned device's.
   */
  index: number;
  /** RID on the emulated root bus: the StreamID the emulated vSMMU knows it by. */
  vsid: number;
}

/**
 * The topology's emulated devices, `perVm` per VM, VM by VM. The k-th of a VM is device k + 1,
 * function 0, of the emulated root bus (at most 31 fit on one bus).
 */
export function emulatedDeviceList(vms: number, perVm: number): EmulatedDevice[] {
  const out: EmulatedDevice[] = [];
  for (let vm = 0; vm < vms; vm++) {
    for (let k = 0; k < perVm; k++) out.push({ vm, vsid: (EMULATED_ROOT_BUS << 8) | ((k + 1) << 3) });
  }
  return out;
}

/** VM `vm`'s emulated devices (none when the topology has none; older controllers send none). */
export function emulatedDevicesOf(t: Topology__Output, vm: number): EmulatedDeviceInfo[] {
  const all = t.emulatedDevices ?? [];
  return all.flatMap((d, k) => (d.vm === vm ? [{ index: t.devices.length + k, vsid: d.vsid }] : []));
}

/** How many accelerated vSMMU instances VM `vm` has: one, or one per pSMMU its assigned devices use. */
export function acceleratedVsmmus(t: Topology__Output, vm: number): number {
  let n = 0;
  t.devices.forEach((d, i) => {
    if (d.vm === vm) n = Math.max(n, vsmmuOfDevice(t, i) + 1);
  });
  return n;
}

/** The guest's number of VM `vm`'s emulated vSMMU instance: the one after its accelerated vSMMUs. */
export function emulatedVsmmuOf(t: Topology__Output, vm: number): number {
  return acceleratedVsmmus(t, vm);
}
