import { CD_TABLE_LOG2, GUEST_RAM_SIZE, HOST_TABLE_BASE, cdIpa, hostRamFile, steAddr, vmRamBase } from '../machine/board.js';
import type { Topology__Output } from '../runtime/generated/vmmsim/v1/Topology.js';
import { FileMemory, FrameAllocator, OwnedMemory } from '../machine/memory.js';
import { PageTable } from '../machine/pagetable.js';
import { viommuVmid, vmidOf } from '../machine/iommufd-objects.js';
import { STE_CONFIG, encodeCd, encodeSte } from '../formats/smmu/structures.js';
import { VIRTIO_MEM_REGION_BASE } from '../machine/virtio-mem.js';
import { designOf, shadowOf } from '../designs/registry.js';

/** One assigned device's own host domain (`device-domain` shadowing): an SMMUv3 stage-1 paging domain. */
export interface DeviceDomainTables {
  /** Topology index of the device. */
  device: number;
  vm: number;
  psmmu: number;
  table: PageTable;
  asid: number;
}

/**
 * The ASID of assigned device `device`'s host stage-1 domain. arm-smmu-v3 allocates domain ASIDs
 * from one xarray for all SMMUs (arm_smmu_asid_xa, from 1), in domain allocation order: here the
 * devices' order. The STE of a stage-1 domain carries no VMID on a host without E2H (VMID 0).
 */
export function hostAsidOf(device: number): number {
  return 1 + device;
}


/**
 * The host kernel's translation state in host memory, shared with the physical SMMUs: for each VM
 * a stage-2 table mapping all its RAM (VFIO maps guest RAM once at VM start; 1 GiB blocks, as the
 * kernel uses the largest page size it can) or, for shadowing models, the shadow of the guest's
 * I/O mappings (one per VM for a TCE table, one stage-1 domain per device otherwise), and each
 * assigned device's STE in its SMMU's stream table: nested (S1 context pointer = the guest's CD, an
 * IPA), stage 1 (its own domain's CD, host-physical) or stage-2 only.
 */
export class HostTables {
  readonly mem: FileMemory;
  readonly stage2: PageTable[] = [];
  /** `device-domain` shadowing: each assigned device's own domain, by topology index. */
  readonly deviceDomains = new Map<number, DeviceDomainTables>();

  constructor(t: Topology__Output) {
    this.mem = new FileMemory(hostRamFile(t.ramDir), 'create');
    const host = designOf(t.model).traits.hostTables;
    // Bare metal: no VM, no VFIO: the host kernel's own IOMMU driver writes its STEs and tables.
    if (host === 'bare-metal') return;
    const frames = new FrameAllocator(HOST_TABLE_BASE);
    // The host kernel alone writes its stage-2 and shadow tables: it walks them from its own copy.
    const tables = new OwnedMemory(this.mem);
    const vms = Math.max(0, ...t.devices.map((d) => d.vm)) + 1;
    for (let vm = 0; vm < vms; vm++) {
      const s2 = new PageTable(tables, frames);
      // A shadow table starts empty and is filled map by map (VFIO_IOMMU_MAP_DMA or the in-kernel equivalent).
      if (host !== 'shadow') {
        // Boot RAM in 1 GiB blocks; the virtio-mem region block by block, as QEMU maps it (each of
        // its blocks an IOAS area of its own, so one can be unplugged alone).
        s2.mapBlocks(0, vmRamBase(vm), VIRTIO_MEM_REGION_BASE, 1);
        s2.mapBlocks(VIRTIO_MEM_REGION_BASE, vmRamBase(vm) + VIRTIO_MEM_REGION_BASE, GUEST_RAM_SIZE - VIRTIO_MEM_REGION_BASE, 2);
      }
      this.stage2.push(s2);
    }
    // A device with a domain of its own: an empty stage-1 table, the domain's context descriptor
    // (its ASID and table) in host memory, and an STE that points at it (arm_smmu_make_cdtable_ste).
    if (shadowOf(t.model) === 'device-domain') {
      t.devices.forEach((d, i) => {
        const table = new PageTable(tables, frames);
        const cd = frames.alloc();
        const asid = hostAsidOf(i);
        this.mem.write(cd, encodeCd({ valid: true, asid, ttb0: table.root }));
        this.mem.write(steAddr(d.psmmu, d.psid), encodeSte({ valid: true, config: STE_CONFIG.S1, s1ContextPtr: cd, vmid: 0, s2ttb: 0 }));
        this.deviceDomains.set(i, { device: i, vm: d.vm, psmmu: d.psmmu, table, asid });
      });
      return;
    }
    // The guest owns stage 1 (the STE is nested); everything else translates by stage 2 only.
    const nested = host === 'nested';
    t.devices.forEach((d, i) => {
      const s2 = this.stage2[d.vm] as PageTable;
      const ste = encodeSte({
        valid: true,
        config: nested ? STE_CONFIG.NESTED : STE_CONFIG.S2,
        s1ContextPtr: nested ? cdIpa(i) : 0,
        // The guest's CD table: its DMA domain and its SVA process (board.ts).
        s1CdMax: nested ? CD_TABLE_LOG2 : 0,
        // Nested: the VMID of the device's vIOMMU (the VMID policy); shadowed: the VM's host domain.
        vmid: nested ? viommuVmid(t, d.vm, d.psmmu) : vmidOf(t, d.vm),
        s2ttb: s2.root,
      });
      this.mem.write(steAddr(d.psmmu, d.psid), ste);
    });
  }

  close(): void {
    this.mem.close();
  }
}
