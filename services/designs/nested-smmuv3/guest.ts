import { CD_TABLE_LOG2, GUEST_TABLE_BASE, SVA_SSID, cdIpa } from '../../machine/board.js';
import { Errno } from '../../runtime/errors.js';
import { FrameAllocator, OwnedMemory, type Memory } from '../../machine/memory.js';
import type { OpContext } from '../../runtime/op-context.js';
import { PageTable } from '../../machine/pagetable.js';
import { atcInvRange, tlbiNhAsid, tlbiNhVaRange, type SmmuCommand } from '../../formats/smmu/commands.js';
import { encodeCd } from '../../formats/smmu/structures.js';

import { GUEST_VCMDQ_OPCODES } from '../../formats/smmu/allow-lists.js';
import {
  SMMU_REG, VCMDQ_GUEST_LOG2_ENTRIES, VCMDQ_REG, VSMMU_CMDQ_LOG2_ENTRIES, smmuFeatures, vcmdqGuestGpa, vcmdqRegister, vsmmuCmdqGpa, vsmmuMmioBase,
  type SmmuFeatures,
} from '../../formats/smmu/registers.js';
import { GuestCmdq, type GatherEnv, type IssueOutcome } from './guest-cmdq.js';
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

/**
 * arm-smmu-v3-sva.c CMDQ_MAX_TLBI_OPS (1 << (PAGE_SHIFT - 3)): without range invalidation, an SVA
 * invalidation of this many pages or more is sent as one TLBI by ASID instead of one per page.
 */
const CMDQ_MAX_TLBI_OPS = 512;

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
    readonly smmu: DriverSmmu,
    /** The StreamID the driver's SID-scoped commands name the device by (its vSID, or its pSID on the host). */
    readonly sid: number,
    /** The device is ATS-capable (device.ats; an assigned device, not one the VMM emulates). */
    private readonly atsCapable: boolean,
  ) {}

  /** master->ats_enabled (arm_smmu_ats_supported): the SMMU has ATS (IDR0.ATS) and the device can. */
  get ats(): boolean {
    return this.atsCapable && this.smmu.features.ats;
  }

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


/** One SMMU instance as the arm-smmu-v3 driver drives it: a vSMMU (and its VCMDQs), or a pSMMU on the host. */
export interface DriverSmmu {
  /** What the driver made of the SMMU's ID registers at probe (arm_smmu_device_hw_probe). */
  readonly features: SmmuFeatures;
  probe(ctx: OpContext): Promise<void>;
  /** Issues commands on the queue this CPU uses for them, with a CMD_SYNC after the last (GuestCmdq.issue). */
  issue(ctx: OpContext, cpu: number, cmds: readonly SmmuCommand[], outcome?: IssueOutcome): Promise<number>;
}

/**
 * Where the arm-smmu-v3 driver runs: a guest kernel in front of vSMMUs (the nested and emulated
 * designs), or the host kernel on its pSMMUs (design host). The driver itself is the same.
 */
export interface SmmuPlatform {
  /** The memory the driver writes its tables and CDs into, by the addresses the SMMU reads them at. */
  readonly mem: Memory;
  /** Frames for its page tables (in `mem`'s addresses). */
  readonly frames: FrameAllocator;
  /** The address the SMMU reads for what the kernel calls physical address `pa` (a guest's IPA, the host's PA). */
  output(pa: number): number;
  /** The SMMU instance a device sits behind. */
  smmuOf(device: GuestDevice): DriverSmmu;
  /** The StreamID the driver names the device by in its commands. */
  sidOf(device: GuestDevice): number;
  /** Every SMMU instance, probed at boot. */
  readonly smmus: readonly DriverSmmu[];
  /**
   * The device's CD table is written: a host kernel points the device's STE at it (a guest's STE
   * is the VMM's business). `ssids`: log2 of its entries.
   */
  attach?(device: GuestDevice, cdTable: number, ssids: number): void;
  /** A live migration left the first `hwQueues[v]` VCMDQs of vSMMU v backed by hardware. */
  migrated?(hwQueues: readonly number[]): void;
  /** Releases what the platform holds open (the host's stream tables). */
  close?(): void;
}

/**
 * One vSMMU instance as the guest driver drives it: its trapped command queue and, when the host
 * gave it a CMDQV (nested-smmuv3-vcmdq), its VCMDQs, which the guest picks per CPU as Linux does.
 * After a live migration to a host with fewer free VCMDQs only the first `backed` are hardware: a
 * CPU whose queue is not falls back to the trapped queue, as Linux's tegra241_cmdqv_get_cmdq does
 * for a queue that is missing or disabled.
 */
class GuestSmmu implements DriverSmmu {
  private readonly vcmdqs: GuestCmdq[] = [];
  readonly cmdq: GuestCmdq;
  private backed = 0;
  private readonly regs: number;
  /**
   * What the driver made of the vSMMU's ID registers at probe (arm_smmu_device_hw_probe). Before
   * the probe: QEMU's vSMMU as registers.ts describes it (no MSI, no SEV, RIL, no ATS).
   */
  features: SmmuFeatures = { msiPoll: false, sev: false, ril: true, ats: false };

  constructor(vsmmu: number, ram: GuestKernel['ram'], vcmdqPsmmu: number | undefined, vcmdqs: number, env: GatherEnv) {
    const regs = vsmmuMmioBase(vsmmu);
    this.regs = regs;
    // Every access to the vSMMU's registers traps: PROD writes and CONS reads alike.
    this.cmdq = new GuestCmdq({
      gpa: vsmmuCmdqGpa(vsmmu), log2: VSMMU_CMDQ_LOG2_ENTRIES, prodRegister: regs + SMMU_REG.CMDQ_PROD, consRegister: regs + SMMU_REG.CMDQ_CONS,
      gerrorRegister: regs + SMMU_REG.GERROR, gerrornRegister: regs + SMMU_REG.GERRORN, peer: 'kvm', kind: 'MMIO_WRITE', readKind: 'MMIO_READ', completion: 'sev',
    }, ram, env);
    if (vcmdqPsmmu === undefined) return;
    for (let q = 0; q < vcmdqs; q++) {
      this.vcmdqs.push(new GuestCmdq({
        gpa: vcmdqGuestGpa(vsmmu, q), log2: VCMDQ_GUEST_LOG2_ENTRIES, prodRegister: vcmdqRegister(vsmmu, q, VCMDQ_REG.PROD),
        consRegister: vcmdqRegister(vsmmu, q, VCMDQ_REG.CONS), gerrorRegister: vcmdqRegister(vsmmu, q, VCMDQ_REG.GERROR),
        // A VCMDQ takes CMD_SYNC with CS_NONE only (arm_smmu_cmdq_needs_busy_polling): the CPU polls
        // the queue's CONS on the VINTF page mapped into the guest, a load with no trap; the read
        // that sees the sync complete is priced with it (smmu.sync_polled).
        gerrornRegister: vcmdqRegister(vsmmu, q, VCMDQ_REG.GERRORN), peer: `psmmu-${vcmdqPsmmu}`, kind: 'VINTF_MMIO',
        readCost: 'cpu.mmio_read_device', syncReadInSync: true, completion: 'none', errorHandler: 'tegra241_vintf0_handle_error',
      }, ram, env));
    }
    this.backed = this.vcmdqs.length;
  }

  /**
   * The driver's probe (arm_smmu_device_hw_probe): reads IDR0 and IDR3, each a trapped read to the
   * VMM, and picks how its CMD_SYNCs on the vSMMU's queue complete: MSI polling only with IDR0.MSI
   * on a coherent SMMU, else CS=SEV and CONS polling.
   */
  async probe(ctx: OpContext): Promise<void> {
    const idr0 = await this.cmdq.readRegister(ctx, this.regs + SMMU_REG.IDR0);
    const idr3 = await this.cmdq.readRegister(ctx, this.regs + SMMU_REG.IDR3);
    if (idr0 === undefined || idr3 === undefined) throw new Error(`probing the vSMMU at 0x${this.regs.toString(16)} failed`);
    this.features = smmuFeatures(idr0, idr3);
    this.cmdq.completion = this.features.msiPoll ? 'msi' : 'sev';
  }

  /** The host now backs the first `n` VCMDQs with hardware (a live migration). */
  setBackedVcmdqs(n: number): void {
    this.backed = Math.max(0, Math.min(n, this.vcmdqs.length));
    // The destination's queues start empty (the VMM programmed them afresh); nothing is in flight
    // while the VM is paused, so the driver starts its view of them over too.
    for (const q of this.vcmdqs.slice(0, this.backed)) q.restart();
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
    return this.queueFor(cpu, cmds).issue(ctx, cmds, outcome, cpu);
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
class SmmuDmaIommu implements DmaApi {
  private commands = 0;
  /** Commands to an emulated vSMMU instance beside the accelerated ones (topology.emulatedDevices). */
  private emulated = 0;
  private emulatedFailed = 0;
  /** Of `commands`, those whose batch failed (the queue stopped on it, or the sync never completed). */
  private failed = 0;
  private readonly domains = new Map<number, Domain>();
  private readonly lazy: boolean;

  constructor(
    private readonly kernel: GuestKernel,
    private readonly platform: SmmuPlatform,
  ) {
    this.lazy = kernel.env.topology.dma === 'lazy';
    const t = kernel.env.topology;
    const { mem, frames } = platform;
    // The guest alone writes its stage-1 tables: it walks them from its own copy (OwnedMemory).
    const tables = new OwnedMemory(mem);
    for (const d of kernel.devices) {
      const stage1 = new PageTable(tables, frames);
      const asid = d.index + 1;
      // The context descriptor the SMMU finds through the STE's S1ContextPtr (an IPA in a guest).
      mem.write(platform.output(cdIpa(d.index)), encodeCd({ valid: true, asid, ttb0: stage1.root }));
      // The SVA process bound to the device (one per device), bound at boot: its CD at its PASID
      // with the process's ASID (arm_smmu_sva_set_dev_pasid), so whoever reads the CD table (the
      // SMMU, a VMM routing by ASID) knows the ASID its invalidations carry. Its table is the
      // process's own (the CPU's page table; empty here, as no device DMA uses the PASID).
      mem.write(platform.output(cdIpa(d.index, SVA_SSID)), encodeCd({ valid: true, asid: svaAsid(d), ttb0: new PageTable(tables, frames).root }));
      platform.attach?.(d, platform.output(cdIpa(d.index)), CD_TABLE_LOG2);
      const domain = new Domain(d, asid, stage1, platform.smmuOf(d), platform.sidOf(d), (t.device?.ats ?? false) && !d.emulated);
      if (this.lazy) {
        domain.fq = new FlushQueue<Deferred>(FlushQueue.kindFor(kernel, false), kernel, {
          // arm_smmu_tlb_inv_context: the ASID, then arm_smmu_atc_inv_domain(domain, 0, 0): the whole ATC.
          flush: (ctx, cpu) => this.issueThenAtc(ctx, domain, cpu, [tlbiNhAsid({ vmid: 0, asid })], atcInvRange(domain.sid, 0, 0)),
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

  /** Probes every vSMMU instance the guest has, as the driver does at boot, before any operation. */
  async probe(): Promise<void> {
    for (const smmu of this.platform.smmus) await smmu.probe(this.kernel.env.newContext(0, 0));
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
    this.platform.migrated?.(hwQueues);
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
    ctx.charge('guest.pte_write', d.stage1.map(iova, this.platform.output(pa), pages));
    return iova;
  }

  async unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number> {
    const d = this.domain(device);
    await d.fq?.enter(cpu);
    ctx.charge('guest.pte_write', d.stage1.unmap(iova, pages));
    if (!d.fq) {
      // arm_smmu_iotlb_sync -> __arm_smmu_tlb_inv_range: range commands with IDR3.RIL, else one per page.
      const tlbis = tlbiNhVaRange(d.asid, iova, pages, 0, { ril: d.smmu.features.ril });
      const status = await this.issueThenAtc(ctx, d, cpu, tlbis, atcInvRange(d.sid, iova, pages));
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
   * TLBI_NH_VA + CMD_SYNC, strict whatever the DMA mode (the CPU's page is being freed). The
   * notifier asks for a non-leaf invalidation of PAGE_SIZE granules (arm_smmu_tlb_inv_range_asid
   * with leaf false): TTL 0.
   */
  async invalidateVa(ctx: OpContext, cpu: number, device: GuestDevice, va: number, pages: number): Promise<number> {
    const d = this.domain(device);
    const ril = d.smmu.features.ril;
    // Without range invalidation a range of CMDQ_MAX_TLBI_OPS pages or more becomes one TLBI by ASID.
    const sized = !ril && pages >= CMDQ_MAX_TLBI_OPS;
    const tlbis = sized ? [tlbiNhAsid({ vmid: 0, asid: svaAsid(device) })] : tlbiNhVaRange(svaAsid(device), va, pages, 0, { leaf: false, ril });
    // arm_smmu_atc_inv_domain for the SVA domain: the process's PASID (SSV), its range or all of it.
    return this.issueThenAtc(ctx, d, cpu, tlbis, atcInvRange(d.sid, va, sized ? 0 : pages, SVA_SSID));
  }

  /**
   * The TLB invalidation and, when the device has ATS enabled, arm_smmu_atc_inv_domain after it:
   * the ATC_INV in a batch of its own with its own CMD_SYNC, never in the TLBI's batch (the IOTLB
   * must be clean before the device is asked to refetch). arm_smmu_atc_inv_domain returns at once
   * without ARM_SMMU_FEAT_ATS (IDR0.ATS of the vSMMU) or with no ATS master.
   */
  private async issueThenAtc(ctx: OpContext, d: Domain, cpu: number, tlbis: readonly SmmuCommand[], atc: SmmuCommand): Promise<number> {
    const status = await this.issue(ctx, d, cpu, tlbis);
    if (!d.ats) return status;
    const atcStatus = await this.issue(ctx, d, cpu, [atc]);
    return status < 0 ? status : atcStatus;
  }

  async drain(): Promise<void> {
    for (const d of this.domains.values()) await d.fq?.drain();
  }

  close(): void {
    this.platform.close?.();
  }
}

/**
 * The guest's side of its vSMMUs: each instance (its trapped queue, and its VCMDQs under
 * nested-smmuv3-vcmdq) at the board's addresses, the guest's RAM by IPA.
 */
function guestPlatform(kernel: GuestKernel, traits: DesignTraits): SmmuPlatform {
  const t = kernel.env.topology;
  // The HW_QUEUEs the VMM allocated for this VM's vSMMUs, by vSMMU: which pSMMU and how many.
  const queues = new Map<number, { psmmu: number; n: number }>();
  for (const q of iommufdLayout(t, traits.vcmdq).hwQueues.filter((h) => h.vm === kernel.env.self.index)) {
    const cur = queues.get(q.vsmmu);
    queues.set(q.vsmmu, { psmmu: q.psmmu, n: (cur?.n ?? 0) + 1 });
  }
  const smmus = new Map<number, GuestSmmu>();
  for (const d of kernel.devices) {
    if (smmus.has(d.vsmmu)) continue;
    const q = queues.get(d.vsmmu);
    // The vCPUs gather each other's lists in modeled time (cmdq-gather.ts).
    const env = { vcpus: kernel.vcpus, vcpuNs: kernel.vcpuNs, writeNs: kernel.vcpus ? kernel.env.costs.of('guest.cmdq_write') : 0 };
    smmus.set(d.vsmmu, new GuestSmmu(d.vsmmu, kernel.ram, q?.psmmu, q?.n ?? 0, env));
  }
  return {
    mem: kernel.ram,
    frames: new FrameAllocator(GUEST_TABLE_BASE),
    output: (pa) => pa,
    smmuOf: (d) => smmus.get(d.vsmmu) as GuestSmmu,
    sidOf: (d) => d.vsid,
    smmus: [...smmus.values()],
    migrated: (hwQueues) => {
      for (const [v, smmu] of smmus) smmu.setBackedVcmdqs(hwQueues[v] ?? 0);
    },
  };
}

/**
 * Linux's dma-iommu over the arm-smmu-v3 driver. An emulated vSMMUv3, an accelerated one and one
 * with VCMDQs are the same SMMUv3 to the guest: the same driver drives them all.
 */
export function smmuv3DmaApi(traits: DesignTraits): DmaApiFactory {
  return (kernel) => new SmmuDmaIommu(kernel, guestPlatform(kernel, traits));
}

/** The same driver on another platform (the host kernel on its pSMMUs: design host). */
export function smmuv3DmaApiOn(platform: (kernel: GuestKernel) => SmmuPlatform): DmaApiFactory {
  return (kernel) => new SmmuDmaIommu(kernel, platform(kernel));
}
