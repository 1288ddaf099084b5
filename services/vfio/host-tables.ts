import { CD_TABLE_LOG2, GUEST_RAM_SIZE, HOST_TABLE_BASE, cdIpa, hostRamFile, steAddr, vmRamBase } from '../machine/board.js';
import type { Topology__Output } from '../runtime/generated/vmmsim/v1/Topology.js';
import { FileMemory, FrameAllocator } from '../machine/memory.js';
import { PageTable } from '../machine/pagetable.js';
import { viommuVmid, vmidOf } from '../machine/iommufd-objects.js';
import { STE_CONFIG, encodeSte } from '../formats/smmu/structures.js';
import { VIRTIO_MEM_REGION_BASE } from '../machine/virtio-mem.js';
import { designOf } from '../designs/registry.js';


/**
 * The host kernel's translation state in host memory, shared with the physical SMMUs: for each VM
 * a stage-2 table mapping all its RAM (VFIO maps guest RAM once at VM start; 1 GiB blocks, as the
 * kernel uses the largest page size it can) or, for shadowing models, the shadow of the guest's
 * I/O mappings, and each assigned device's STE in its SMMU's stream
 * table: nested (S1 context pointer = the guest's CD, an IPA) or stage-2 only.
 */
export class HostTables {
  readonly mem: FileMemory;
  readonly stage2: PageTable[] = [];

  constructor(t: Topology__Output) {
    this.mem = new FileMemory(hostRamFile(t.ramDir), 'create');
    const host = designOf(t.model).traits.hostTables;
    // Bare metal: no VM, no VFIO: the host kernel's own IOMMU driver writes its STEs and tables.
    if (host === 'bare-metal') return;
    const frames = new FrameAllocator(HOST_TABLE_BASE);
    const vms = Math.max(0, ...t.devices.map((d) => d.vm)) + 1;
    for (let vm = 0; vm < vms; vm++) {
      const s2 = new PageTable(this.mem, frames);
      // A shadow table starts empty and is filled map by map (VFIO_IOMMU_MAP_DMA or the in-kernel equivalent).
      if (host !== 'shadow') {
        // Boot RAM in 1 GiB blocks; the virtio-mem region block by block, as QEMU maps it (each of
        // its blocks an IOAS area of its own, so one can be unplugged alone).
        s2.mapBlocks(0, vmRamBase(vm), VIRTIO_MEM_REGION_BASE, 1);
        s2.mapBlocks(VIRTIO_MEM_REGION_BASE, vmRamBase(vm) + VIRTIO_MEM_REGION_BASE, GUEST_RAM_SIZE - VIRTIO_MEM_REGION_BASE, 2);
      }
      this.stage2.push(s2);
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
