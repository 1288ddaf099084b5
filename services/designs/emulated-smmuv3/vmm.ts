import { CD_SIZE, cdIpa } from '../../machine/board.js';
import { GuestRam } from '../../machine/guest-ram.js';
import { vsmmuOfDevice } from '../../machine/iommufd-objects.js';
import { PAGE_SIZE, type Memory } from '../../machine/memory.js';
import type { OpContext } from '../../runtime/op-context.js';
import { PageTable, levelSpan } from '../../machine/pagetable.js';
import { Random } from '../../machine/random.js';
import type { RoleEnv } from '../../runtime/role-api.js';
import { Opcode, readSid, tlbiRangePages, type DecodedCommand } from '../../formats/smmu/commands.js';
import { EVENT, decodeCd } from '../../formats/smmu/structures.js';
import type { VmmDeviceFactory } from '../../qemu/device.js';
import { DeviceDma, type DmaDevice, type DmaTranslator } from '../../machine/device-dma.js';
import { NO_VMID, SoftIotlb } from './soft-iotlb.js';
import { VsmmuCmdq, type VsmmuInstances } from './vsmmu-cmdq.js';

/** A StreamID's configuration as the emulated SMMU caches it (QEMU's SMMUTransCfg, stage 1). */
interface StreamConfig {
  asid: number;
  /** Stage-1 table root, guest-physical. */
  ttb0: number;
}

export interface EmulatedTranslation {
  /** Guest-physical output address, or -1 on a fault. */
  pa: number;
  hit: boolean;
  /** Served from an entry the guest's current table no longer backs. */
  stale: boolean;
  /** Event type of the fault (structures.ts EVENT), when pa is -1. */
  event?: number;
}

/** What a command did to the emulated SMMU's caches. */
export type CommandEffect = 'tlbi' | 'cfgi' | 'none' | 'illegal';

export interface EmulatedSmmuCounters {
  translations: number;
  iotlbHits: number;
  iotlbMisses: number;
  /** Guest-memory reads of translation: context descriptors and table descriptors. */
  walkAccesses: number;
  faults: number;
  /** Hits the guest's current table no longer backs (whatever the buffer's state). */
  staleHits: number;
  configMisses: number;
  /** Modeled time of those reads (QEMU reading guest descriptors; hash lookups are not costed). */
  modeledNs: number;
}

/**
 * One instance of QEMU's emulated SMMUv3 (hw/arm/smmuv3.c over smmu-common.c), stage 1 only as
 * QEMU's default: a config cache of each StreamID's STE and CD, dropped by CFGI_*, and a software
 * IOTLB filled by translations of the devices behind it. Guest-physical memory is the VMM's own
 * mapping of guest RAM: there is no stage 2 to walk.
 *
 * The guest's STE for each StreamID (stage-1 translation, S1ContextPtr at its CD) is fixed by the
 * board, as CMDQ_BASE is (smmu/registers.ts): `streams` gives the CD address of each StreamID.
 * The CD itself is read from guest RAM as the guest driver wrote it.
 */
export class EmulatedSmmu implements DmaTranslator {
  readonly iotlb = new SoftIotlb();
  private readonly configs = new Map<number, StreamConfig>();
  readonly counters: EmulatedSmmuCounters = { translations: 0, iotlbHits: 0, iotlbMisses: 0, walkAccesses: 0, faults: 0, staleHits: 0, configMisses: 0, modeledNs: 0 };

  constructor(
    private readonly ram: Memory,
    private readonly streams: ReadonlyMap<number, number>,
    /** Cost of one guest-descriptor read by the VMM (vmm.iommu_walk_pte). */
    private readonly readNs = 0,
  ) {}

  /** smmuv3_translate: config, IOTLB, and on a miss a stage-1 walk whose leaf is cached. */
  translate(sid: number, va: number, write: boolean): EmulatedTranslation {
    this.counters.translations += 1;
    const cfg = this.config(sid);
    if (typeof cfg === 'number') return this.fault(cfg);
    const hit = this.iotlb.lookup(cfg.asid, NO_VMID, va);
    if (hit) {
      if (write && !hit.writable) return this.fault(EVENT.F_PERMISSION);
      this.counters.iotlbHits += 1;
      const pa = hit.pa + (va - hit.iova);
      // The simulator's oracle, not a QEMU access (not counted): what the guest's table says now.
      const stale = PageTable.walk(this.ram, cfg.ttb0, va).pa !== pa;
      if (stale) this.counters.staleHits += 1;
      return { pa, hit: true, stale };
    }
    this.counters.iotlbMisses += 1;
    const w = PageTable.walk(this.ram, cfg.ttb0, va);
    this.read(w.reads);
    if (w.pa < 0) return this.fault(EVENT.F_TRANSLATION);
    if (write && !w.writable) return this.fault(EVENT.F_PERMISSION);
    // Without a stage 2 the walk reads one descriptor per level down to the leaf.
    const level = w.reads - 1;
    const offset = va % levelSpan(level);
    this.iotlb.insert({ asid: cfg.asid, vmid: NO_VMID, iova: va - offset, level, pa: w.pa - offset, writable: w.writable });
    return { pa: w.pa, hit: false, stale: false };
  }

  /**
   * What smmuv3_cmdq_consume does with one command (CMD_SYNC excepted): invalidate the IOTLB or
   * the config cache; nothing for prefetches, EL2/EL3 TLBIs, ATC_INV, PRI_RESP, RESUME and
   * STALL_TERM (QEMU leaves them unhandled); stage-2 TLBIs are illegal on a stage-1-only SMMU.
   */
  execute(cmd: DecodedCommand, bytes: Buffer): CommandEffect {
    const f = cmd.fields;
    switch (cmd.opcode) {
      case Opcode.CFGI_STE:
      case Opcode.CFGI_CD:
      case Opcode.CFGI_CD_ALL:
        this.configs.delete(f.sid ?? 0);
        return 'cfgi';
      case Opcode.CFGI_ALL:
        this.invalidateSteRange(readSid(bytes), f.range ?? 0);
        return 'cfgi';
      case Opcode.TLBI_NH_ALL:
      case Opcode.TLBI_NSNH_ALL:
        this.iotlb.invalidateAll();
        return 'tlbi';
      case Opcode.TLBI_NH_ASID:
        this.iotlb.invalidateAsid(f.asid ?? 0);
        return 'tlbi';
      case Opcode.TLBI_NH_VA:
      case Opcode.TLBI_NH_VAA: {
        const { granule, pages } = tlbiRangePages(f);
        const asid = cmd.opcode === Opcode.TLBI_NH_VA ? (f.asid ?? 0) : -1;
        // TG = 0 names one address: whatever entry holds it.
        this.iotlb.invalidateRange(asid, -1, Number(f.va ?? 0n), granule === 0 ? PAGE_SIZE : granule * pages);
        return 'tlbi';
      }
      case Opcode.TLBI_S12_VMALL:
      case Opcode.TLBI_S2_IPA:
        return 'illegal';
      default:
        return 'none';
    }
  }

  /** CFGI_STE_RANGE: the 2^(RANGE+1) StreamIDs around `sid`; RANGE 31 (CFGI_ALL) is all of them. */
  private invalidateSteRange(sid: number, range: number): void {
    if (range >= 31) {
      this.configs.clear();
      return;
    }
    const span = 2 ** (range + 1);
    const start = sid - (sid % span);
    for (const s of [...this.configs.keys()]) if (s >= start && s < start + span) this.configs.delete(s);
  }

  /** The cached config, or the STE and CD read again; an event type when they are unusable. */
  private config(sid: number): StreamConfig | number {
    const cached = this.configs.get(sid);
    if (cached) return cached;
    this.counters.configMisses += 1;
    const cdAddr = this.streams.get(sid);
    if (cdAddr === undefined) return EVENT.C_BAD_STE;
    this.read(1);
    const cd = decodeCd(this.ram.view(cdAddr, CD_SIZE));
    if (!cd.valid) return EVENT.C_BAD_CD;
    const cfg = { asid: cd.asid, ttb0: cd.ttb0 };
    this.configs.set(sid, cfg);
    return cfg;
  }

  private read(descriptors: number): void {
    this.counters.walkAccesses += descriptors;
    this.counters.modeledNs += descriptors * this.readNs;
  }

  private fault(event: number): EmulatedTranslation {
    this.counters.faults += 1;
    return { pa: -1, hit: false, stale: false, event };
  }
}

/** A device the VMM emulates: the guest's device number, its StreamID, and the model's instance (from 0) it sits behind. */
export interface EmulatedVsmmuDevice {
  index: number;
  sid: number;
  vsmmu: number;
}

/**
 * The emulated vSMMUv3 of a VMM, for the devices it emulates itself (QEMU cannot put one in front
 * of a VFIO device: it refuses the MAP notifier shadowing would need). Its command queue is the
 * shared one (vsmmu-cmdq.ts); each command runs on the instance's own caches, in the vCPU thread
 * that wrote CMDQ_PROD, and nothing leaves the VMM: no ioctl, no host SMMU. The emulated devices
 * DMA through the same instances from this process.
 */
export class EmulatedVsmmu extends VsmmuCmdq {
  private readonly smmus: EmulatedSmmu[];
  private readonly guestRam: Memory;
  private readonly dma: DeviceDma;
  private readonly counters = { commands: 0, invalidations: 0, cfgi: 0 };

  constructor(env: RoleEnv, mine: readonly EmulatedVsmmuDevice[], at: VsmmuInstances = {}) {
    const t = env.topology;
    const vm = env.self.index;
    const instances = Math.max(1, ...mine.map((d) => d.vsmmu + 1));
    super(env, instances, at);
    this.guestRam = new GuestRam(t.ramDir, vm);
    const readNs = env.costs.of('vmm.iommu_walk_pte');
    this.smmus = Array.from({ length: instances }, (_, i) => {
      const streams = new Map(mine.filter((d) => d.vsmmu === i).map((d) => [d.sid, cdIpa(d.index)]));
      return new EmulatedSmmu(this.guestRam, streams, readNs);
    });
    const ram = this.guestRam;
    const devices: DmaDevice[] = mine.map((d) => ({ index: d.index, sid: d.sid, ram: () => ram, iommu: this.smmus[d.vsmmu] as EmulatedSmmu }));
    const traffic = t.device;
    this.dma = new DeviceDma(devices, { rate: traffic?.dmaRate ?? 0, lingerMs: traffic?.lingerMs ?? 0, lingerShare: traffic?.lingerShare ?? 0 }, new Random(t.seed, 2000 + vm));
  }

  protected async execute(vsmmu: number, cmd: DecodedCommand, bytes: Buffer, ctx: OpContext): Promise<boolean> {
    const smmu = this.smmus[vsmmu];
    if (!smmu) return false;
    const effect = smmu.execute(cmd, bytes);
    if (effect === 'illegal') return false;
    this.counters.commands += 1;
    if (effect === 'tlbi') {
      this.counters.invalidations += 1;
      ctx.charge('vmm.iotlb_invalidate');
    } else if (effect === 'cfgi') {
      this.counters.cfgi += 1;
    }
    return true;
  }

  start(): void {
    this.dma.start();
  }

  close(): void {
    this.dma.stop();
  }

  override stats(): Record<string, number> {
    const sum = (pick: (s: EmulatedSmmu) => number): number => this.smmus.reduce((n, s) => n + pick(s), 0);
    return {
      ...this.counters,
      ...super.stats(),
      translations: sum((s) => s.counters.translations),
      iotlbHits: sum((s) => s.counters.iotlbHits),
      iotlbMisses: sum((s) => s.counters.iotlbMisses),
      walkAccesses: sum((s) => s.counters.walkAccesses),
      faults: sum((s) => s.counters.faults),
      staleHits: sum((s) => s.counters.staleHits),
      configMisses: sum((s) => s.counters.configMisses),
      dmaModeledNs: sum((s) => s.counters.modeledNs),
      iotlbEntries: sum((s) => s.iotlb.size),
      iotlbInvalidated: sum((s) => s.iotlb.counters.invalidated),
      iotlbOverflows: sum((s) => s.iotlb.counters.overflows),
      ...this.dma.counters,
    };
  }
}

/** Every device of the VM is emulated here, behind as many instances as the topology gives it vSMMUs. */
export const vmmDevice: VmmDeviceFactory = (env) => {
  const t = env.topology;
  const mine = t.devices.flatMap((d, index) => (d.vm === env.self.index ? [{ index, sid: d.vsid, vsmmu: vsmmuOfDevice(t, index) }] : []));
  return new EmulatedVsmmu(env, mine);
};
