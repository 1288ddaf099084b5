/**
 * The VFIO containers the VMM of a shadowing design opens, and the assigned devices each holds
 * (its IOMMU groups), derived from the topology as a VMM derives them from its address spaces:
 * - one per assigned device when the host keeps a domain per device (`device-domain`: QEMU's
 *   vfio_address_space_get finds no container for a new per-device address space and opens one);
 * - one per VM when the host keeps one TCE table per guest PHB (`tce-table`: the VM's devices sit
 *   on its one PHB, whose address space all of them share).
 * A container is named by the file descriptor the VMM holds, as an ioctl names it.
 */
import type { RunTopology } from '../runtime/role-api.js';

/** The first container fd of each VMM (after stdio, the memory files and the VFIO group fds). */
export const VFIO_CONTAINER_FD_BASE = 10;

export interface VfioContainer {
  vm: number;
  fd: number;
  /** Topology indices of the devices whose groups are in it. */
  devices: number[];
}

/** `perDevice`: one container per device (`device-domain`), else one per VM (`tce-table`). */
export function vfioContainers(t: Pick<RunTopology, 'devices'>, perDevice: boolean): VfioContainer[] {
  const out: VfioContainer[] = [];
  const perVm = new Map<number, number[]>();
  t.devices.forEach((d, i) => {
    const list = perVm.get(d.vm) ?? [];
    list.push(i);
    perVm.set(d.vm, list);
  });
  for (const [vm, devices] of [...perVm.entries()].sort((a, b) => a[0] - b[0])) {
    if (!perDevice) out.push({ vm, fd: VFIO_CONTAINER_FD_BASE, devices });
    else devices.forEach((device, n) => out.push({ vm, fd: VFIO_CONTAINER_FD_BASE + n, devices: [device] }));
  }
  return out;
}

/** The container holding topology device `device`, or undefined if it is none of these. */
export function containerOf(t: Pick<RunTopology, 'devices'>, perDevice: boolean, device: number): VfioContainer | undefined {
  return vfioContainers(t, perDevice).find((c) => c.devices.includes(device));
}
