import type { DmaApiFactory } from '../guest/driver.js';
import type { KvmDeviceFactory } from '../kvm/device.js';
import type { VmmDeviceFactory } from '../qemu/device.js';
import type { Scenario } from '../scenario/schema.js';
import type { ModelName } from './names.js';

/**
 * What the host kernel keeps for the VM's assigned devices, which decides what VFIO/iommufd sets up
 * at VM start and what a host-side stage-2 change (virtio-mem) has to invalidate:
 * - `stage2`: all guest RAM mapped at stage 2 once, no vIOMMU (VFIO's container over the VM's RAM);
 * - `nested`: the same stage-2 parent with the guest's stage 1 nested over it (iommufd HWPTs);
 * - `shadow`: a host table that shadows the guest's I/O mappings, filled map by map;
 * - `emulated`: none: the devices are the VMM's own, no physical SMMU translates for them;
 * - `bare-metal`: no VM at all: the host kernel's own IOMMU driver owns the SMMUs, writes its
 *   devices' STEs and its stage-1 tables itself (the guest process plays the host kernel), and
 *   VFIO sets nothing up.
 */
export type HostTables = 'stage2' | 'nested' | 'shadow' | 'emulated' | 'bare-metal';

/**
 * What a `shadow` design's host shadows the guest's mappings into:
 * - `device-domain`: one host IOMMU domain per assigned device. QEMU gives each device behind VT-d
 *   or virtio-iommu an address space of its own (vtd_find_add_as, virtio_iommu_find_add_as), and
 *   VFIO one container per address space (vfio_address_space_get), so each device gets its own
 *   type1 container and domain; an in-kernel device (vhost-iommu) maps into the endpoint's domain
 *   the same way. On the SMMUv3 host it is a stage-1 paging domain with an ASID of its own on the
 *   device's pSMMU: nothing is invalidated on map (arm-smmu-v3 has no iotlb_sync_map), and an unmap
 *   is TLBI_NH_VA over the range + CMD_SYNC on that pSMMU only.
 * - `tce-table`: sPAPR: one VFIO sPAPR container and one TCE table per guest PHB (the VM's one
 *   liobn here), programmed into every PE (IOMMU group) of the container; the host kills the TCE
 *   cache of every PE of the table after each map and each clear (iommu_tce_kill).
 */
export type ShadowHost = 'device-domain' | 'tce-table';

/**
 * Whether the design is in upstream Linux and QEMU, a prototype people posted (vmmsim runs what its
 * code does), an extrapolation (vmmsim runs a prototype's idea further than its code goes: say how
 * in the summary), or a design people proposed (as a patch or only in a thread: say which in the
 * summary).
 */
export type DesignStatus = 'upstream' | 'prototype' | 'extrapolation' | 'proposal';

export interface DesignTraits {
  readonly hostTables: HostTables;
  /** With `shadow` host tables (and only then): what the host shadows into. */
  readonly shadow?: ShadowHost;
  /** The guest's IOMMU can bind a process address space (SVA): SMMUv3 stage 1 owned by the guest. */
  readonly sva: boolean;
  /** Guest invalidations can go to hardware queues (Tegra241 VCMDQs) mapped into the guest. */
  readonly vcmdq: boolean;
  /**
   * Emulated devices can sit beside the assigned ones (topology.emulatedDevices), behind a separate
   * emulated vSMMU instance; or why not.
   */
  readonly emulatedDevices: true | { readonly refused: string };
  /**
   * The guest's streaming DMA API is Linux's dma-iommu (drivers/iommu/dma-iommu.c), which bounces
   * an untrusted device's unaligned buffers through swiotlb (dma=swiotlb). Not dma-direct (no
   * vIOMMU) nor powerpc's dma_iommu_ops (sPAPR: iommu_map_page, no such bounce).
   */
  readonly dmaIommu: boolean;
  /** The architecture whose guest and host the design runs on (a profile of another says so). */
  readonly arch: 'arm64' | 'ppc64' | 'x86_64';
  /**
   * PCIe ATS for the assigned devices (device.ats): modelled for the designs whose IOMMU driver is
   * arm-smmu-v3 (device ATCs, ATC_INV after every TLB invalidation); or why not. Absent: not
   * modelled for the design.
   */
  readonly ats?: true | { readonly refused: string };
  /**
   * KVM takes the PROD writes (and CONS reads) of the guest's trapped vSMMU command queue itself
   * and issues the invalidations it allows to the pSMMU through iommufd in the kernel, with no exit
   * to the VMM (nested-smmuv3-kvm: `always`); or does so only when the scenario asks for it as the
   * fallback of vCPUs whose VCMDQ a live migration took away (workload.migration.fallback kvm:
   * `fallback`). Absent: every access to the vSMMU's registers goes to the VMM. With it, KVM and
   * the VMM share the queue's registers (a page both map).
   */
  readonly kvmCmdq?: 'always' | 'fallback';
}

/**
 * Everything one design adds to each role. The parts load on demand, so a process loads only its
 * own role's part of the design it runs; the compiler checks that every part a design names exists
 * and has its role's type.
 */
export interface DesignParts {
  /** The guest kernel's DMA API and IOMMU driver. */
  readonly guest: () => Promise<DmaApiFactory>;
  /** The VMM's vIOMMU device model (absent: the VMM has none). */
  readonly vmm?: () => Promise<VmmDeviceFactory>;
  /** What the design puts inside KVM (absent: every exit goes to the VMM). */
  readonly kvm?: () => Promise<KvmDeviceFactory>;
}

export interface DesignDescriptor {
  readonly name: ModelName;
  /** One line: what it models, for scenario-keys and the documentation. */
  readonly summary: string;
  readonly status: DesignStatus;
  readonly traits: DesignTraits;
  readonly parts: DesignParts;
  /** Refuses a scenario this design cannot run, with the field and why (beyond what traits say). */
  readonly check?: (s: Scenario) => void;
}
