import { GUEST_TABLE_BASE, hostRamFile, steAddr, vmRamBase } from '../../machine/board.js';
import { FileMemory, FrameAllocator, type Memory } from '../../machine/memory.js';
import type { OpContext } from '../../runtime/op-context.js';
import type { MemoryRange } from '../../runtime/role-api.js';
import type { SmmuCommand } from '../../formats/smmu/commands.js';
import { SMMU_REG, smmuFeatures, type SmmuFeatures } from '../../formats/smmu/registers.js';
import { STE_CONFIG, encodeSte } from '../../formats/smmu/structures.js';
import type { DmaApiFactory, GuestDevice, GuestKernel } from '../../guest/driver.js';
import { GuestCmdq, type GatherEnv, type IssueOutcome } from '../nested-smmuv3/guest-cmdq.js';
import { smmuv3DmaApiOn, type DriverSmmu, type SmmuPlatform } from '../nested-smmuv3/guest.js';

/** log2 of each pSMMU's main CMDQ (as the psmmu process sizes it). */
const CMDQ_LOG2 = 8;
/** Where, in the host kernel's RAM, the driver keeps its copy of each pSMMU's command queue. */
const CMDQ_COPY_BASE = 0x4000_0000;
const CMDQ_COPY_STRIDE = 0x1_0000;

/**
 * The host kernel's RAM by host-physical address: the memory file the guest process owns, which the
 * pSMMUs see at vmRamBase(0) (machine/board.ts). The driver writes its page tables, CDs and STE
 * pointers with the addresses the SMMU reads: physical ones, as there is no stage 2.
 */
class HostRam implements Memory {
  constructor(
    private readonly ram: Memory,
    private readonly base: number,
  ) {}

  private at(addr: number): number {
    const off = addr - this.base;
    if (off < 0) throw new RangeError(`host-physical 0x${addr.toString(16)} is below the kernel's RAM at 0x${this.base.toString(16)}`);
    return off;
  }

  view(addr: number, len: number): Buffer {
    return this.ram.view(this.at(addr), len);
  }

  read32(addr: number): number {
    return this.ram.read32(this.at(addr));
  }

  write32(addr: number, value: number): void {
    this.ram.write32(this.at(addr), value);
  }

  write(addr: number, data: Buffer): void {
    this.ram.write(this.at(addr), data);
  }

  read(addr: number, len: number): Buffer {
    return this.ram.read(this.at(addr), len);
  }
}

/**
 * A pSMMU's main command queue as the host driver drives it: PROD written straight to the SMMU
 * (CMDQ_SUBMIT: the slots and the PROD write, a `hw` transition), its registers read and written
 * directly (HOST_MMIO). With MSI polling the sync's MSI write lands in the queue's memory, which the
 * psmmu's reply stands for.
 */
class HostCmdq extends GuestCmdq {
  constructor(
    private readonly peer: string,
    ram: Memory,
    psmmu: number,
    env: GatherEnv,
  ) {
    super({
      gpa: CMDQ_COPY_BASE + psmmu * CMDQ_COPY_STRIDE, log2: CMDQ_LOG2, prodRegister: SMMU_REG.CMDQ_PROD, consRegister: SMMU_REG.CMDQ_CONS,
      gerrorRegister: SMMU_REG.GERROR, gerrornRegister: SMMU_REG.GERRORN, peer, kind: 'HOST_MMIO', completion: 'msi', writeCost: 'kernel.cmdq_insert',
    }, ram, env);
  }

  protected override async publish(ctx: OpContext, _prod: number, _ranges: MemoryRange[], bytes: Buffer): Promise<number> {
    return (await ctx.call(this.peer, 'CMDQ_SUBMIT', bytes)).status;
  }

  /** The SMMU completed the sync (its MSI write into the queue's memory) when the submission, or the queue's acknowledgement, went through. */
  protected override msiLanded(_syncGpa: number, delivered: boolean): boolean {
    return delivered;
  }
}

/** One pSMMU as the host's arm-smmu-v3 driver drives it: its main command queue, no VCMDQ. */
class HostSmmu implements DriverSmmu {
  private readonly cmdq: HostCmdq;
  /** The hardware's, as a coherent SMMU with MSI reports them, until the probe reads them. */
  features: SmmuFeatures = { msiPoll: true, sev: true, ril: true, ats: true };

  constructor(
    private readonly psmmu: number,
    ram: Memory,
    env: GatherEnv,
  ) {
    this.cmdq = new HostCmdq(`psmmu-${psmmu}`, ram, psmmu, env);
  }

  /** arm_smmu_device_hw_probe: IDR0 and IDR3 read from the SMMU itself (no trap). */
  async probe(ctx: OpContext): Promise<void> {
    const idr0 = await this.cmdq.readRegister(ctx, SMMU_REG.IDR0);
    const idr3 = await this.cmdq.readRegister(ctx, SMMU_REG.IDR3);
    if (idr0 === undefined || idr3 === undefined) throw new Error(`probing pSMMU ${this.psmmu} failed`);
    this.features = smmuFeatures(idr0, idr3);
    this.cmdq.completion = this.features.msiPoll ? 'msi' : 'sev';
  }

  issue(ctx: OpContext, cpu: number, cmds: readonly SmmuCommand[], outcome?: IssueOutcome): Promise<number> {
    return this.cmdq.issue(ctx, cmds, outcome, cpu);
  }
}

/**
 * The host kernel on its pSMMUs: its RAM at host-physical vmRamBase(0), its devices named by their
 * pSIDs, and the STE of each device written by the driver itself (arm_smmu_make_cdtable_ste: stage
 * 1 through the device's CD table; the host is modelled without VHE, so its TLBIs are TLBI_NH_* of
 * VMID 0 rather than TLBI_EL2_*, the same count and cost).
 */
function hostPlatform(kernel: GuestKernel): SmmuPlatform {
  const t = kernel.env.topology;
  const base = vmRamBase(kernel.env.self.index);
  const mem = new HostRam(kernel.ram, base);
  const smmus = new Map<number, HostSmmu>();
  const psmmuOf = (d: GuestDevice): number => t.devices[d.index]?.psmmu ?? 0;
  for (const d of kernel.devices) {
    const k = psmmuOf(d);
    // The host's CPUs gather each other's lists in modeled time, as the guests' do (cmdq-gather.ts).
    if (!smmus.has(k)) smmus.set(k, new HostSmmu(k, kernel.ram, { vcpus: kernel.vcpus, vcpuNs: kernel.vcpuNs, writeNs: kernel.vcpus ? kernel.env.costs.of('kernel.cmdq_insert') : 0 }));
  }
  // The stream tables in host memory (VFIO's HostTables created the file and leaves them to us).
  const streamTables = new FileMemory(hostRamFile(t.ramDir), 'open');
  return {
    mem,
    frames: new FrameAllocator(base + GUEST_TABLE_BASE),
    output: (pa) => base + pa,
    smmuOf: (d) => smmus.get(psmmuOf(d)) as HostSmmu,
    sidOf: (d) => t.devices[d.index]?.psid ?? 0,
    smmus: [...smmus.values()],
    attach: (d, cdTable, ssids) => {
      const dev = t.devices[d.index];
      if (!dev) return;
      streamTables.write(steAddr(dev.psmmu, dev.psid), encodeSte({ valid: true, config: STE_CONFIG.S1, s1ContextPtr: cdTable, s1CdMax: ssids, vmid: 0, s2ttb: 0 }));
    },
    close: () => streamTables.close(),
  };
}

/** Linux's dma-iommu over arm-smmu-v3 on the host itself. */
export const hostDmaApi: DmaApiFactory = smmuv3DmaApiOn(hostPlatform);
