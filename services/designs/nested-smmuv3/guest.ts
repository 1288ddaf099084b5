import { GUEST_TABLE_BASE, cdIpa } from '../../machine/board.js';
import { Errno } from '../../runtime/errors.js';
import { FrameAllocator } from '../../machine/memory.js';
import type { OpContext } from '../../runtime/op-context.js';
import { PageTable } from '../../machine/pagetable.js';
import { tlbiNhAsid, tlbiNhVaRange, type SmmuCommand } from '../../formats/smmu/commands.js';
import { encodeCd } from '../../formats/smmu/structures.js';

import { GUEST_VCMDQ_OPCODES } from '../../formats/smmu/allow-lists.js';
import {
  SMMU_REG, VCMDQ_GUEST_LOG2_ENTRIES, VCMDQ_REG, VSMMU_CMDQ_LOG2_ENTRIES, vcmdqGuestGpa, vcmdqRegister, vsmmuCmdqGpa, vsmmuMmioBase,
} from '../../formats/smmu/registers.js';
import { GuestCmdq, type IssueOutcome } from './guest-cmdq.js';
import { deviceOpName, type DmaApi, type DmaApiFactory, type GuestDevice, type GuestKernel } from '../../guest/driver.js';
import { FlushQueue } from '../../guest/flush-queue.js';
import { IovaAllocator } from '../../guest/iova.js';
import type { DesignTraits } from '../types.js';
import { iommufdLayout } from '../../machine/iommufd-objects.js';

/**
 * The DMA window IOVAs come from. Each CPU allocates top-down in its own 256 MiB slice (Linux's
 * IOVA caches are per CPU), so which operation first touches a new page-table page, and pays for
 * it, does not depend on how the vCPUs interleave.
 */
const IOVA_BASE = 0x1_0000_0000;
const IOVA_SLICE = 0x1000_0000;

/** The ASID of the SVA process bound to a device: its own, apart from the DMA domain's. */
function svaAsid(device: GuestDevice): number {
  return 0x8000 + device.index;
}

interface Deferred {
  cpu: number;
  iova: number;
  pages: number;
}

/**
 * A guest IOMMU domain: one per device here (assigned or emulated), with its own ASID, stage-1
 * table and IOVAs, on the vSMMU instance the device sits behind.
 */
class Domain {
  private readonly iovas = new Map<number, IovaAllocator>();
  /** Lazy mode's flush queue (per CPU, or one; set by the driver once the domain exists). */
  fq: FlushQueue<Deferred> | undefined;

  constructor(
    readonly device: GuestDevice,
    readonly asid: number,
    readonly stage1: PageTable,
    readonly smmu: GuestSmmu,
  ) {}

  /** The CPU's IOVA allocator. */
  iova(cpu: number): IovaAllocator {
    let a = this.iovas.get(cpu);
    if (!a) {
      const base = IOVA_BASE + cpu * IOVA_SLICE;
      a = new IovaAllocator(base, base + IOVA_SLICE);
      this.iovas.set(cpu, a);
    }
    return a;
  }
}


/**
 * One vSMMU instance as the guest driver drives it: its trapped command queue and, when the host
 * gave it a CMDQV (nested-smmuv3-vcmdq), its VCMDQs, which the guest picks per CPU as Linux does.
 * After a live migration to a host with fewer free VCMDQs only the first `backed` are hardware: a
 * CPU whose queue is not falls back to the trapped queue, as Linux's tegra241_cmdqv_get_cmdq does
 * for a queue that is missing or disabled.
 */
class GuestSmmu {
  private readonly vcmdqs: GuestCmdq[] = [];
  readonly cmdq: GuestCmdq;
  private backed = 0;

  constructor(vsmmu: number, ram: GuestKernel['ram'], vcmdqPsmmu: number | undefined, vcmdqs: number) {
    const regs = vsmmuMmioBase(vsmmu);
    this.cmdq = new GuestCmdq({
      gpa: vsmmuCmdqGpa(vsmmu), log2: VSMMU_CMDQ_LOG2_ENTRIES, prodRegister: regs + SMMU_REG.CMDQ_PROD, consRegister: regs + SMMU_REG.CMDQ_CONS,
      gerrorRegister: regs + SMMU_REG.GERROR, gerrornRegister: regs + SMMU_REG.GERRORN, peer: 'kvm', kind: 'MMIO_WRITE',
    }, ram);
    if (vcmdqPsmmu === undefined) return;
    for (let q = 0; q < vcmdqs; q++) {
      this.vcmdqs.push(new GuestCmdq({
        gpa: vcmdqGuestGpa(vsmmu, q), log2: VCMDQ_GUEST_LOG2_ENTRIES, prodRegister: vcmdqRegister(vsmmu, q, VCMDQ_REG.PROD),
        consRegister: vcmdqRegister(vsmmu, q, VCMDQ_REG.CONS), gerrorRegister: vcmdqRegister(vsmmu, q, VCMDQ_REG.GERROR),
        gerrornRegister: vcmdqRegister(vsmmu, q, VCMDQ_REG.GERRORN), peer: `psmmu-${vcmdqPsmmu}`, kind: 'VINTF_MMIO',
      }, ram));
    }
    this.backed = this.vcmdqs.length;
  }

  /** The host now backs the first `n` VCMDQs with hardware (a live migration). */
  setBackedVcmdqs(n: number): void {
    this.backed = Math.max(0, Math.min(n, this.vcmdqs.length));
  }

  /**
   * The queue for these commands on this CPU: its VCMDQ (CPU index modulo the VCMDQs the vSMMU
   * exposes) when every command is allowed there and the queue is backed; else the trapped queue.
   */
  queueFor(cpu: number, cmds: readonly SmmuCommand[]): GuestCmdq {
    if (this.vcmdqs.length === 0 || !cmds.every((c) => GUEST_VCMDQ_OPCODES.has(c.opcode))) return this.cmdq;
    const q = cpu % this.vcmdqs.length;
    return q < this.backed ? (this.vcmdqs[q] as GuestCmdq) : this.cmdq;
  }

  issue(ctx: OpContext, cpu: number, cmds: readonly SmmuCommand[], outcome?: IssueOutcome): Promise<number> {
    return this.queueFor(cpu, cmds).issue(ctx, cmds, outcome);
  }
}

/**
 * dma-iommu over the guest's arm-smmu-v3 driver with nested translation: the guest owns stage 1 and
 * edits it without trapping; only its command-queue writes reach the host.
 *  - strict: dma_unmap clears the PTEs, invalidates the range (TLBI_NH_VA + CMD_SYNC) and returns
 *    when the sync completed;
 *  - lazy: dma_unmap clears the PTEs and queues the IOVA in the domain's flush queue (per CPU by
 *    default: rings of 256, a 10 ms timer; see flush-queue.ts); a flush invalidates the domain
 *    (TLBI_NH_ASID + CMD_SYNC) and only then are the IOVAs it covers reused. The unmap that finds its
 *    ring full pays the flush; the domain's timer flushes in timer context, charged to no unmap.
 * Devices the VMM emulates beside the assigned ones (topology.emulatedDevices) sit behind the VM's
 * separate emulated vSMMU: the same driver drives it as one more SMMU with its own registers,
 * queue and context descriptors, and its commands, counted apart, stop in the VMM.
 */
class NestedDmaIommu implements DmaApi {
  private commands = 0;
  /** Commands to an emulated vSMMU instance beside the accelerated ones (topology.emulatedDevices). */
  private emulated = 0;
  private emulatedFailed = 0;
  /** Of `commands`, those whose batch failed (the queue stopped on it, or the sync never completed). */
  private failed = 0;
  private readonly domains = new Map<number, Domain>();
  /** The guest's vSMMU instances, by index. */
  private readonly smmus = new Map<number, GuestSmmu>();
  private readonly lazy: boolean;

  constructor(
    private readonly kernel: GuestKernel,
    traits: DesignTraits,
  ) {
    this.lazy = kernel.env.topology.dma === 'lazy';
    const frames = new FrameAllocator(GUEST_TABLE_BASE);
    const t = kernel.env.topology;
    // The HW_QUEUEs the VMM allocated for this VM's vSMMUs, by vSMMU: which pSMMU and how many.
    const queues = new Map<number, { psmmu: number; n: number }>();
    for (const q of iommufdLayout(t, traits.vcmdq).hwQueues.filter((h) => h.vm === kernel.env.self.index)) {
      const cur = queues.get(q.vsmmu);
      queues.set(q.vsmmu, { psmmu: q.psmmu, n: (cur?.n ?? 0) + 1 });
    }
    const smmus = this.smmus;
    for (const d of kernel.devices) {
      let smmu = smmus.get(d.vsmmu);
      if (!smmu) {
        const q = queues.get(d.vsmmu);
        smmu = new GuestSmmu(d.vsmmu, kernel.ram, q?.psmmu, q?.n ?? 0);
        smmus.set(d.vsmmu, smmu);
      }
      const stage1 = new PageTable(kernel.ram, frames);
      const asid = d.index + 1;
      // The context descriptor the SMMU finds through the STE's S1ContextPtr (an IPA).
      kernel.ram.write(cdIpa(d.index), encodeCd({ valid: true, asid, ttb0: stage1.root }));
      const domain = new Domain(d, asid, stage1, smmu);
      if (this.lazy) {
        domain.fq = new FlushQueue<Deferred>(FlushQueue.kindFor(kernel, false), kernel, {
          flush: (ctx, cpu) => this.issue(ctx, domain, cpu, [tlbiNhAsid({ vmid: 0, asid })]),
          release: (ctx, items) => {
            for (const f of items) {
              domain.iova(f.cpu).release(f.iova, f.pages);
              ctx.charge('guest.iova_free');
            }
          },
        }, deviceOpName('flush', d));
      }
      this.domains.set(d.index, domain);
    }
  }

  get guestCommands(): number {
    return this.commands;
  }

  get guestCommandsFailed(): number {
    return this.failed;
  }

  get emulatedCommands(): number {
    return this.emulated;
  }

  get emulatedCommandsFailed(): number {
    return this.emulatedFailed;
  }

  /** Counts invalidation commands against the kind of vSMMU instance they go to. */
  private count(d: Domain, n: number): void {
    if (d.device.emulated) this.emulated += n;
    else this.commands += n;
  }

  /**
   * Issues a batch on the domain's vSMMU, counting its commands and those that did not run (the
   * refused one of a recovered queue, or all of them when the sync never completed).
   */
  private async issue(ctx: OpContext, d: Domain, cpu: number, cmds: readonly SmmuCommand[]): Promise<number> {
    this.count(d, cmds.length);
    const outcome: IssueOutcome = { failed: 0 };
    const status = await d.smmu.issue(ctx, cpu, cmds, outcome);
    if (status < 0) {
      if (d.device.emulated) this.emulatedFailed += outcome.failed;
      else this.failed += outcome.failed;
    }
    return status;
  }

  migrated(hwQueues: readonly number[]): void {
    for (const [v, smmu] of this.smmus) smmu.setBackedVcmdqs(hwQueues[v] ?? 0);
  }

  private domain(device: GuestDevice): Domain {
    const d = this.domains.get(device.index);
    if (!d) throw new Error(`device ${device.index} has no domain`);
    return d;
  }

  async map(ctx: OpContext, cpu: number, device: GuestDevice, pa: number, pages: number): Promise<number> {
    const d = this.domain(device);
    await d.fq?.enter(cpu);
    // A full window (lazy mode's queues holding its IOVAs) is a mapping error, not a crash.
    const iova = d.iova(cpu).tryAlloc(pages);
    if (iova === undefined) return -Errno.ENOMEM;
    ctx.charge('guest.iova_alloc');
    ctx.charge('guest.pte_write', d.stage1.map(iova, pa, pages));
    return iova;
  }

  async unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number> {
    const d = this.domain(device);
    await d.fq?.enter(cpu);
    ctx.charge('guest.pte_write', d.stage1.unmap(iova, pages));
    if (!d.fq) {
      const tlbis = tlbiNhVaRange(d.asid, iova, pages);
      const status = await this.issue(ctx, d, cpu, tlbis);
      d.iova(cpu).release(iova, pages);
      ctx.charge('guest.iova_free');
      return status;
    }
    const now = (this.kernel.vcpuNs[cpu] ?? 0) + ctx.modeledNs;
    return d.fq.queue(ctx, cpu, now, { cpu, iova, pages });
  }

  /**
   * SVA: the process bound to the device unmapped part of its address space, and the MMU notifier
   * (arm_smmu_mm_arch_invalidate_secondary_tlbs) invalidates that range for the process's ASID:
   * TLBI_NH_VA + CMD_SYNC, strict whatever the DMA mode (the CPU's page is being freed).
   */
  async invalidateVa(ctx: OpContext, cpu: number, device: GuestDevice, va: number, pages: number): Promise<number> {
    const d = this.domain(device);
    const tlbis = tlbiNhVaRange(svaAsid(device), va, pages);
    return this.issue(ctx, d, cpu, tlbis);
  }

  async drain(): Promise<void> {
    for (const d of this.domains.values()) await d.fq?.drain();
  }

  close(): void {}
}

/**
 * Linux's dma-iommu over the arm-smmu-v3 driver. An emulated vSMMUv3, an accelerated one and one
 * with VCMDQs are the same SMMUv3 to the guest: the same driver drives them all.
 */
export function smmuv3DmaApi(traits: DesignTraits): DmaApiFactory {
  return (kernel) => new NestedDmaIommu(kernel, traits);
}
