/**
 * The fixed memory map of the simulated machine, as QEMU's virt board and the host kernel fix
 * theirs: where the guest keeps its queues, context descriptors, device rings, page tables and DMA
 * buffers (guest-physical), and where the host keeps the stream table and stage-2 tables
 * (host-physical). Every process derives addresses from here instead of replaying the probe.
 */
import { join } from 'node:path';

// Guest-physical (IPA) layout (the vSMMU queues and VINTF pages are in smmu/registers.ts)
export const GUEST_CD_BASE = 0x5000_0000;
/** Per assigned device: the ring of buffers its driver posted (see device-ring.ts). */
export const GUEST_DEVICE_RING_BASE = 0x6000_0000;
export const GUEST_DEVICE_RING_STRIDE = 0x1000;
export const GUEST_TABLE_BASE = 0x8000_0000;
export const GUEST_BUFFER_BASE = 0x1_0000_0000;
/** Guest RAM the host maps into stage 2 at VM start (VFIO maps all of it once). */
export const GUEST_RAM_SIZE = 0x4_0000_0000;

// Host-physical layout
export const HOST_STRTAB_BASE = 0x1000_0000;
/** Linear stream table: StreamIDs below this. */
export const HOST_STRTAB_SIDS = 1 << 16;
export const HOST_TABLE_BASE = 0x2000_0000;
/** Guest RAM of VM n sits at (n + 1) * this in host-physical space. */
export const HOST_VM_RAM_STRIDE = 0x100_0000_0000;

export const STE_SIZE = 64;
export const CD_SIZE = 64;

export function vmRamBase(vm: number): number {
  return (vm + 1) * HOST_VM_RAM_STRIDE;
}

/**
 * Each device's context-descriptor table: linear, 2^CD_TABLE_LOG2 entries indexed by SubstreamID
 * (STE S1CDMax). SSID 0 is the device's DMA domain; SSID 1 (SVA_SSID) the process bound to it for
 * SVA (iommu_sva_bind_device gives it a PASID and arm_smmu_sva_set_dev_pasid writes its CD there).
 */
export const CD_TABLE_LOG2 = 1;
export const SVA_SSID = 1;

/** Guest-physical address of device `device`'s CD for SubstreamID `ssid` (0: its DMA domain). */
export function cdIpa(device: number, ssid = 0): number {
  return GUEST_CD_BASE + ((device << CD_TABLE_LOG2) + ssid) * CD_SIZE;
}

export function deviceRingIpa(device: number): number {
  return GUEST_DEVICE_RING_BASE + device * GUEST_DEVICE_RING_STRIDE;
}

/** Each physical SMMU has its own linear stream table (SMMU_STRTAB_BASE). */
export function strtabBase(psmmu: number): number {
  return HOST_STRTAB_BASE + psmmu * HOST_STRTAB_SIDS * STE_SIZE;
}

export function steAddr(psmmu: number, sid: number): number {
  return strtabBase(psmmu) + sid * STE_SIZE;
}

/** Memory files of one host, in the run's RAM folder. */
export function guestRamFile(ramDir: string, vm: number): string {
  return join(ramDir, `guest-${vm}.ram`);
}

export function hostRamFile(ramDir: string): string {
  return join(ramDir, 'host.ram');
}
