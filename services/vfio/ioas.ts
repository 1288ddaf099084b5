import { GUEST_RAM_SIZE, vmRamBase } from '../machine/board.js';
import { Errno } from '../runtime/errors.js';
import type { Topology__Output } from '../runtime/generated/vmmsim/v1/Topology.js';
import { IOAS_MAP_SIZE, IOAS_UNMAP_SIZE, IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE, type IoasMap, type IoasUnmap } from '../formats/iommufd-ioas.js';
import { viommuVmid, vmidOf } from '../machine/iommufd-objects.js';
import { IovaTree, type IovaRange } from '../machine/iova-tree.js';
import { PAGE_SIZE } from '../machine/memory.js';
import { Mutex } from '../machine/mutex.js';
import type { OpContext } from '../runtime/op-context.js';
import type { PageTable } from '../machine/pagetable.js';
import { CMD_SIZE, atcInvRange, cmdSync, encodeCommand, tlbiNhAll, tlbiS2IpaRange, type SmmuCommand } from '../formats/smmu/commands.js';
import { VMM_RAM_VADDR } from '../formats/vfio-type1.js';
import { VIRTIO_MEM_BLOCK_SIZE, VIRTIO_MEM_REGION_BASE } from '../machine/virtio-mem.js';
import type { SubmitCommands } from './host-iommu.js';
import { iommufdLayoutOf } from '../designs/registry.js';
import { designOf } from '../designs/registry.js';

/** Counters of every VM's IOAS, summed. */
export const IOAS_COUNTERS = ['ioasMaps', 'ioasUnmaps', 'ioasErrors', 'stage2Flushes'] as const;
export type IoasCounters = Record<(typeof IOAS_COUNTERS)[number], number>;

/** log2 of the block size of an area's stage-2 entries, by level (1: 1 GiB, 2: 2 MiB). */
const AREA_GRANULE_LOG2 = { 1: 30, 2: 21 } as const;

/** An IOAS area: one IOAS_MAP, unmapped only whole. */
interface Area extends IovaRange {
  /** Block level its stage-2 entries use (1: 1 GiB, 2: 2 MiB). */
  level: 1 | 2;
}

/**
 * One VM's I/O address space when its stage 2 maps guest RAM itself (no vIOMMU, or the stage-2
 * parent of the nested designs): the areas QEMU mapped at VM start, boot RAM as one and each
 * virtio-mem block as its own (QEMU's RamDiscardListener populates block by block), over the
 * stage-2 table every pSMMU with a device of the VM walks. An unmap clears each area's entries and
 * then invalidates every one of those pSMMUs (see flush): TLBI_S2_IPA over the area with the VMID
 * that pSMMU uses for the VM and a CMD_SYNC and, when the table is a nesting parent, TLBI_NH_ALL of
 * that VMID (the combined stage-1 + stage-2 entries cached from it) with its own CMD_SYNC, one pSMMU
 * after another as the kernel walks the domains. A map needs no invalidation: SMMUv3 caches no
 * invalid entries.
 */
export class VmIoas {
  private readonly areas = new IovaTree<Area>();
  readonly lock: Mutex;
  readonly ioasId: number;
  private readonly nested: boolean;
  /** The pSMMUs' range invalidation (IDR3.RIL; smmu.ril): without it one TLBI_S2_IPA per block. */
  private readonly ril: boolean;
  /**
   * Each pSMMU of the VM with the VMID it tags the VM's stage-2 entries with, and the StreamIDs of
   * the VM's devices there that have ATS enabled (device.ats).
   */
  private readonly psmmus: { psmmu: number; vmid: number; atsSids: number[] }[];
  /** Commands (not syncs) each pSMMU got from host stage-2 changes, for the invalidation accounting. */
  readonly delivered = new Map<number, number>();

  constructor(
    private readonly vm: number,
    private readonly table: PageTable,
    t: Topology__Output,
    private readonly submit: SubmitCommands,
    private readonly counters: IoasCounters,
  ) {
    this.lock = new Mutex(`vfio.ioas-${vm}`);
    this.ioasId = iommufdLayoutOf(t).ioasId;
    this.nested = designOf(t.model).traits.hostTables === 'nested';
    this.ril = t.smmu?.ril ?? true;
    const ids = [...new Set(t.devices.filter((d) => d.vm === vm).map((d) => d.psmmu))].sort((a, b) => a - b);
    const ats = t.device?.ats ?? false;
    this.psmmus = ids.map((p) => ({
      psmmu: p,
      vmid: this.nested ? viommuVmid(t, vm, p) : vmidOf(t, vm),
      atsSids: ats ? t.devices.filter((d) => d.vm === vm && d.psmmu === p).map((d) => d.psid) : [],
    }));
    for (const p of ids) this.delivered.set(p, 0);
    this.areas.insert({ iova: 0, size: VIRTIO_MEM_REGION_BASE, level: 1 });
    for (let a = VIRTIO_MEM_REGION_BASE; a < GUEST_RAM_SIZE; a += VIRTIO_MEM_BLOCK_SIZE) this.areas.insert({ iova: a, size: VIRTIO_MEM_BLOCK_SIZE, level: 2 });
  }

  /**
   * IOMMU_IOAS_UNMAP as iommufd_ioas_unmap / iopt_unmap_iova: a bad size or a zero or unaligned
   * range is EINVAL, another IOAS's id ENOENT, a range that cuts an area or holds none ENOENT.
   * Gives the bytes unmapped or -errno. The range is checked whole before anything is unmapped,
   * where the kernel unmaps areas in order until it meets one that is cut: a VMM that sends whole
   * areas, as QEMU does, sees no difference.
   */
  async unmap(ctx: OpContext, u: IoasUnmap): Promise<number> {
    if (u.size < IOAS_UNMAP_SIZE) return this.fail(-Errno.EINVAL);
    if (u.ioasId !== this.ioasId) return this.fail(-Errno.ENOENT);
    if (u.length === 0 || u.iova % PAGE_SIZE !== 0 || u.length % PAGE_SIZE !== 0) return this.fail(-Errno.EINVAL);
    return this.lock.with(async () => {
      const inside = this.areas.overlapping(u.iova, u.length);
      if (inside.length === 0 || inside.some((a) => a.iova < u.iova || a.iova + a.size > u.iova + u.length)) return this.fail(-Errno.ENOENT);
      let bytes = 0;
      let status = 0;
      // iopt_unmap_iova, area by area: iopt_area_unfill_domains unmaps the area from the domain
      // (one iommu_unmap of its physically contiguous pages, so one gather and one iotlb_sync),
      // then the pages are unpinned.
      for (const a of inside) {
        ctx.charge('kernel.vfio_dma_op');
        ctx.charge('kernel.iommu_pte_write', this.table.unmapBlocks(a.iova, a.size, a.level));
        const s = await this.flush(ctx, a.iova, a.size / PAGE_SIZE, AREA_GRANULE_LOG2[a.level]);
        if (s < 0) status = s;
        ctx.charge('kernel.vfio_unpin_page', a.size / PAGE_SIZE);
        this.areas.delete(a);
        bytes += a.size;
      }
      this.counters.ioasUnmaps += 1;
      return status < 0 ? status : bytes;
    }, ctx);
  }

  /**
   * IOMMU_IOAS_MAP with a fixed IOVA of the VMM's RAM: pins and maps one area. Unknown flags or a
   * zero or unaligned range are EINVAL, another IOAS ENOENT, an overlap EEXIST, memory that is not
   * the VM's RAM EFAULT. Gives 0 or -errno.
   */
  async map(ctx: OpContext, m: IoasMap): Promise<number> {
    const known = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
    // iommufd_ioas_map: unknown flags, a non-zero reserved field, or neither READABLE nor WRITEABLE is EINVAL.
    if (m.size < IOAS_MAP_SIZE || m.reserved !== 0 || (m.flags & ~known) !== 0) return this.fail(-Errno.EINVAL);
    if (!(m.flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE))) return this.fail(-Errno.EINVAL);
    if (m.ioasId !== this.ioasId) return this.fail(-Errno.ENOENT);
    // Only fixed-IOVA maps of whole blocks are what a VMM sends here (iommufd would pick an IOVA otherwise).
    if (!(m.flags & IOMMU_IOAS_MAP_FIXED_IOVA) || m.length === 0 || m.iova % VIRTIO_MEM_BLOCK_SIZE !== 0 || m.length % VIRTIO_MEM_BLOCK_SIZE !== 0) return this.fail(-Errno.EINVAL);
    const gpa = m.userVa - VMM_RAM_VADDR;
    if (gpa < 0 || gpa + m.length > GUEST_RAM_SIZE || gpa % VIRTIO_MEM_BLOCK_SIZE !== 0) return this.fail(-Errno.EFAULT);
    return this.lock.with(async () => {
      if (this.areas.overlapping(m.iova, m.length).length > 0) return this.fail(-Errno.EEXIST);
      ctx.charge('kernel.vfio_dma_op');
      ctx.charge('kernel.vfio_pin_page', m.length / PAGE_SIZE);
      const write = (m.flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0;
      ctx.charge('kernel.iommu_pte_write', this.table.mapBlocks(m.iova, vmRamBase(this.vm) + gpa, m.length, 2, { read: true, write }));
      this.areas.insert({ iova: m.iova, size: m.length, level: 2 });
      this.counters.ioasMaps += 1;
      return 0;
    }, ctx);
  }

  private fail(status: number): number {
    this.counters.ioasErrors += 1;
    return status;
  }

  /**
   * One iommu_unmap's invalidation on each pSMMU's domain, one after another as the kernel walks
   * them: arm_smmu_iotlb_sync -> arm_smmu_tlb_inv_range_domain. io-pgtable gathered blocks of
   * `granuleLog2` (gather->pgsize), so the leaf TLBI_S2_IPAs carry that block's TTL
   * (__arm_smmu_tlb_inv_range), and go out as one batch with its CMD_SYNC. A nesting parent then
   * flushes the stage-1 entries cached through it: TLBI_NH_ALL of the VMID with a CMD_SYNC of its own
   * (arm_smmu_cmdq_issue_cmd_with_sync; v6.13 "iommu/arm-smmu-v3: Support IOMMU_VIOMMU_ALLOC"),
   * after the stage-2 sync, as the S2 entries must go first. With ATS masters, ATC_INV follows
   * with a third sync.
   */
  private async flush(ctx: OpContext, iova: number, pages: number, granuleLog2: number): Promise<number> {
    let status = 0;
    for (const { psmmu, vmid, atsSids } of this.psmmus) {
      const lists: SmmuCommand[][] = [tlbiS2IpaRange(vmid, iova, pages, { granuleLog2, ril: this.ril })];
      if (this.nested) lists.push([tlbiNhAll({ vmid })]);
      // arm_smmu_atc_inv_domain, in a batch with a sync of its own: a nesting parent's change
      // flushes the whole ATC of every ATS master (nested_ats_flush), a plain S2 domain the range.
      if (atsSids.length > 0) lists.push(atsSids.map((sid) => (this.nested ? atcInvRange(sid, 0, 0) : atcInvRange(sid, iova, pages))));
      this.counters.stage2Flushes += 1;
      for (const cmds of lists) {
        const s = await this.submitWithSync(ctx, psmmu, cmds);
        // Counted once executed: a refused submission delivered nothing.
        if (s === 0) this.delivered.set(psmmu, (this.delivered.get(psmmu) ?? 0) + cmds.length);
        else status = s;
      }
    }
    return status;
  }

  /** arm_smmu_cmdq_batch_submit: the commands and a CMD_SYNC to one pSMMU's CMDQ, waited for. */
  private submitWithSync(ctx: OpContext, psmmu: number, cmds: readonly SmmuCommand[]): Promise<number> {
    const all = [...cmds, cmdSync()];
    const buf = Buffer.alloc(all.length * CMD_SIZE);
    all.forEach((c, i) => encodeCommand(c, buf, i * CMD_SIZE));
    ctx.charge('kernel.cmdq_insert', all.length);
    return this.submit(ctx, psmmu, buf);
  }
}
