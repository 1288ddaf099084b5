import { GUEST_RAM_SIZE } from '../../machine/board.js';
import { encodeMmio, type MmioAccess } from '../../formats/kvm-run.js';
import { mapGuestRam } from '../../machine/guest-ram.js';
import { PAGE_SIZE, type Memory } from '../../machine/memory.js';
import { Mutex } from '../../machine/mutex.js';
import type { OpContext } from '../../runtime/op-context.js';
import { type HandlerResult, type RoleEnv, type Request } from '../../runtime/role-api.js';
import type { MemoryRange } from '../../runtime/role-api.js';
import { VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VMM_RAM_VADDR, encodeContainerIoctl, encodeDmaMap, encodeDmaUnmap } from '../../formats/vfio-type1.js';
import { vfioContainers } from '../../machine/vfio-containers.js';
import { CONTEXT_ENTRY_SIZE, ContextTT, DESC_SIZE, DescType, EVENT_CTL, FSTS, GSTS, Granularity, ICS_IWC, ROOT_ENTRY_SIZE, VTD_AW_BITS, VTD_CAP, VTD_ECAP, VTD_IQ_ENTRIES, VTD_IQ_GPA, VTD_IQ_QS, VTD_MAMV, VTD_MMIO_BASE, VTD_REG, VTD_REG_SIZE, VTD_ROOT_TABLE_GPA, VTD_VERSION, decodeContextEntry, decodeDescriptor, decodeRootEntry, encodeIqa, iqIndexOf, iqRegisterOf, levelsOfAw, reservedBitsSet, ridParts, vtdIqSlotGpa, type ContextEntry, type VtdDescriptor } from '../../formats/vtd.js';
import { walkSecondLevel, type SlWalkEvent } from '../../machine/vtd-page-table.js';
import type { VmmDevice, VmmDeviceFactory } from '../../qemu/device.js';
import { IovaTree, type IovaMapping } from '../../machine/iova-tree.js';

/**
 * One assigned device's DMA address space behind the vIOMMU (QEMU's VTDAddressSpace, one per
 * device: vtd_find_add_as), with the VFIO container of its own (vfio_address_space_get).
 */
interface AddressSpace {
  bus: number;
  devfn: number;
  /** The fd of the address space's VFIO container. */
  fd: number;
  /** What the shadow holds for it: QEMU's per-address-space iova_tree. */
  tree: IovaTree;
}

const lo32 = (v: bigint): number => Number(v & 0xffff_ffffn);
const hi32 = (v: bigint): number => Number((v >> 32n) & 0xffff_ffffn);
const IQA = encodeIqa(VTD_IQ_GPA, VTD_IQ_QS);

/**
 * QEMU's intel-iommu with caching-mode=on in front of VFIO devices. A trapped register access
 * exits to here; under the VMM's big lock the model consumes the invalidation queue from IQH to
 * IQT, one descriptor at a time, as vtd_fetch_inv_desc does, and stops at an invalid descriptor
 * with FSTS.IQE set and IQH on it. An IOTLB invalidation re-syncs the shadow of each address space
 * of that domain: it walks the guest's second-level table over the range (the whole address width
 * for a domain-selective or global one) and, for every leaf or hole whose state differs from its
 * IOVA tree, sends VFIO one VFIO_IOMMU_MAP_DMA or UNMAP_DMA, as vtd_page_walk_one notifies VFIO
 * per entry. A wait descriptor writes its status into guest RAM, where the guest polls it.
 *
 * The guest's probe (RTADDR, IQA, GCMD.TE/QIE) is taken as done at the board's addresses.
 * Interrupts are not delivered: fault and completion events only set their pending bits.
 */
class VtdCachingMode implements VmmDevice {
  /** The VMM's mapping of guest RAM (undefined until the guest created it). */
  private ram: Memory | undefined;
  private readonly ramDir: string;
  private readonly vm: number;
  private readonly bql: Mutex;
  private readonly spaces: AddressSpace[] = [];
  private iqh = 0;
  /** IQT as written (QT in bits 18:4; QEMU's writable mask 0x7fff0). */
  private iqtReg = 0;
  private fsts = 0;
  private fectl: number = EVENT_CTL.IM;
  private ics = 0;
  private iectl: number = EVENT_CTL.IM;
  private readonly counters = {
    descriptors: 0, iotlbPsi: 0, iotlbDsi: 0, iotlbGlobal: 0, contextCache: 0, waits: 0, queueErrors: 0,
    walkReads: 0, mapDma: 0, unmapDma: 0, ioctlErrors: 0, nonRamMaps: 0, faultEvents: 0,
  };

  constructor(env: RoleEnv) {
    const vm = env.self.index;
    this.vm = vm;
    this.ramDir = env.topology.ramDir;
    this.bql = new Mutex(`${env.self.name}.bql`);
    for (const c of vfioContainers(env.topology, true).filter((x) => x.vm === vm)) {
      const d = env.topology.devices[c.devices[0] as number];
      if (d) this.spaces.push({ ...ridParts(d.vsid), fd: c.fd, tree: new IovaTree() });
    }
  }

  async mmioExit(access: MmioAccess, req: Request, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('exit.to_user');
    const offset = access.physAddr - VTD_MMIO_BASE;
    // Not ours: writes ignored, reads 0.
    if (offset < 0 || offset >= VTD_REG_SIZE) return { status: 0, payload: access.isWrite ? req.payload : encodeMmio({ ...access, data: 0 }) };
    return this.bql.with(async () => {
      this.ram = mapGuestRam(this.ramDir, this.vm);
      // The guest RAM the exit carries is already in the RAM file; a guest that only sent it gets it written.
      for (const r of req.guestMemory) {
        if (Number(r.gpa) + r.data.length <= GUEST_RAM_SIZE) this.ram?.write(Number(r.gpa), r.data);
      }
      if (!access.isWrite) return { status: 0, payload: encodeMmio({ ...access, data: this.readRegister(offset) }) };
      const writes = await this.writeRegister(offset, access.data >>> 0, ctx);
      return { status: 0, payload: req.payload, guestMemory: writes };
    }, ctx);
  }

  private readRegister(offset: number): number {
    switch (offset) {
      case VTD_REG.VER:
        return VTD_VERSION;
      case VTD_REG.CAP:
        return lo32(VTD_CAP);
      case VTD_REG.CAP + 4:
        return hi32(VTD_CAP);
      case VTD_REG.ECAP:
        return lo32(VTD_ECAP);
      case VTD_REG.ECAP + 4:
        return hi32(VTD_ECAP);
      case VTD_REG.GSTS:
        return (GSTS.TES | GSTS.RTPS | GSTS.QIES) >>> 0;
      case VTD_REG.RTADDR:
        return VTD_ROOT_TABLE_GPA % 2 ** 32;
      case VTD_REG.RTADDR + 4:
        return Math.floor(VTD_ROOT_TABLE_GPA / 2 ** 32);
      case VTD_REG.FSTS:
        return this.fsts;
      case VTD_REG.FECTL:
        return this.fectl >>> 0;
      case VTD_REG.IQH:
        return iqRegisterOf(this.iqh);
      case VTD_REG.IQT:
        return this.iqtReg;
      case VTD_REG.IQA:
        return lo32(IQA);
      case VTD_REG.IQA + 4:
        return hi32(IQA);
      case VTD_REG.ICS:
        return this.ics;
      case VTD_REG.IECTL:
        return this.iectl >>> 0;
      default:
        return 0;
    }
  }

  /** A 32-bit register write; returns the guest memory the unit wrote (wait statuses). */
  private async writeRegister(offset: number, value: number, ctx: OpContext): Promise<MemoryRange[]> {
    const writes: MemoryRange[] = [];
    switch (offset) {
      case VTD_REG.IQT: {
        this.iqtReg = value & 0x7fff0;
        // vtd_handle_iqt_write: a tail beyond the queue is a queue error; IQE stops fetching.
        if (iqIndexOf(this.iqtReg) >= VTD_IQ_ENTRIES) this.queueError();
        else if ((this.fsts & FSTS.IQE) === 0) await this.fetch(ctx, writes);
        break;
      }
      case VTD_REG.FSTS:
        // PFO and IQE are write-1-to-clear. Clearing IQE does not restart fetching: the next IQT
        // write does (as in QEMU).
        this.fsts &= ~(value & (FSTS.PFO | FSTS.IQE));
        if (this.fectl & EVENT_CTL.IP && (this.fsts & (FSTS.PFO | FSTS.PPF | FSTS.IQE)) === 0) this.fectl &= ~EVENT_CTL.IP;
        break;
      case VTD_REG.FECTL:
        this.fectl = (this.fectl & ~EVENT_CTL.IM) | (value & EVENT_CTL.IM);
        if (this.fectl & EVENT_CTL.IP && !(this.fectl & EVENT_CTL.IM)) this.fireFault();
        break;
      case VTD_REG.ICS:
        this.ics &= ~(value & ICS_IWC);
        if (this.iectl & EVENT_CTL.IP && !(this.ics & ICS_IWC)) this.iectl &= ~EVENT_CTL.IP;
        break;
      case VTD_REG.IECTL:
        this.iectl = (this.iectl & ~EVENT_CTL.IM) | (value & EVENT_CTL.IM);
        if (this.iectl & EVENT_CTL.IP && !(this.iectl & EVENT_CTL.IM)) this.iectl &= ~EVENT_CTL.IP;
        break;
      default:
        break; // registers this model keeps at their probed values
    }
    return writes;
  }

  /** vtd_fetch_inv_desc: process from IQH to IQT; stop with IQE at the first invalid descriptor. */
  private async fetch(ctx: OpContext, writes: MemoryRange[]): Promise<void> {
    const tail = iqIndexOf(this.iqtReg);
    while (this.iqh !== tail) {
      // vtd_get_inv_desc: a queue outside RAM cannot be read, which is a queue error too.
      const bytes = this.ram?.read(vtdIqSlotGpa(this.iqh), DESC_SIZE);
      ctx.charge('vmm.vtd_desc');
      this.counters.descriptors += 1;
      const desc = !bytes || reservedBitsSet(bytes) ? undefined : decodeDescriptor(bytes);
      if (!desc || !(await this.process(desc, ctx, writes))) {
        this.queueError();
        return;
      }
      this.iqh = (this.iqh + 1) % VTD_IQ_ENTRIES;
    }
  }

  /** One valid-looking descriptor; false when the unit refuses it (a queue error). */
  private async process(d: VtdDescriptor, ctx: OpContext, writes: MemoryRange[]): Promise<boolean> {
    switch (d.type) {
      case DescType.CONTEXT_CACHE: {
        if (d.granularity === 0) return false;
        this.counters.contextCache += 1;
        // Global and domain-selective both replay every address space (QEMU falls through).
        const fmMask = ~([0, 4, 6, 7][d.fm & 3] ?? 0) & 0xff;
        const { bus, devfn } = ridParts(d.sid);
        for (const s of this.spaces) {
          if (d.granularity !== Granularity.DEVICE_OR_PAGE || (s.bus === bus && (s.devfn & fmMask) === (devfn & fmMask))) await this.syncSpace(s, ctx);
        }
        return true;
      }
      case DescType.IOTLB:
        return this.iotlb(d.granularity, d.did, d.addr, d.am, ctx);
      case DescType.DEVICE_TLB:
      case DescType.IEC:
        // No device here caches translations (no ATS) and interrupt remapping is not modelled.
        return true;
      case DescType.WAIT:
        return this.wait(d.statusWrite, d.interrupt, d.statusData, d.statusAddr, writes);
    }
  }

  private async iotlb(granularity: number, did: number, addr: number, am: number, ctx: OpContext): Promise<boolean> {
    if (granularity === Granularity.GLOBAL) {
      this.counters.iotlbGlobal += 1;
      for (const s of this.spaces) await this.syncSpace(s, ctx);
      return true;
    }
    if (granularity === Granularity.DOMAIN) {
      this.counters.iotlbDsi += 1;
      for (const s of this.spaces) {
        const ce = this.inDomain(s, did);
        if (ce) await this.walk(s, ce, 0, 2 ** VTD_AW_BITS, ctx);
      }
      return true;
    }
    if (granularity !== Granularity.DEVICE_OR_PAGE || am > VTD_MAMV) return false;
    this.counters.iotlbPsi += 1;
    for (const s of this.spaces) {
      const ce = this.inDomain(s, did);
      if (ce) await this.walk(s, ce, addr, PAGE_SIZE * 2 ** am, ctx);
    }
    return true;
  }

  /** vtd_process_wait_desc: status write into guest RAM and/or the completion event. */
  private wait(statusWrite: boolean, interrupt: boolean, data: number, addr: number, writes: MemoryRange[]): boolean {
    if (!statusWrite && !interrupt) return false;
    this.counters.waits += 1;
    if (statusWrite) {
      if (!this.ram || addr + 4 > GUEST_RAM_SIZE) return false; // dma_memory_write fails: a queue error
      const status = Buffer.alloc(4);
      status.writeUInt32LE(data >>> 0);
      this.ram.write(addr, status);
      writes.push({ gpa: addr, data: status });
    }
    if (interrupt && !(this.ics & ICS_IWC)) {
      this.ics |= ICS_IWC;
      this.iectl |= EVENT_CTL.IP;
      if (!(this.iectl & EVENT_CTL.IM)) this.iectl &= ~EVENT_CTL.IP;
    }
    return true;
  }

  /**
   * vtd_dev_to_context_entry: the device's context entry when present and usable here; 'absent'
   * when its context entry is not present (the device left its domain).
   */
  private contextOf(s: AddressSpace): ContextEntry | 'absent' | undefined {
    if (!this.ram) return undefined;
    const root = decodeRootEntry(this.ram.read(VTD_ROOT_TABLE_GPA + s.bus * ROOT_ENTRY_SIZE, ROOT_ENTRY_SIZE));
    if (!root.present || root.reserved || root.ctp + PAGE_SIZE > GUEST_RAM_SIZE) return undefined;
    const ce = decodeContextEntry(this.ram.read(root.ctp + s.devfn * CONTEXT_ENTRY_SIZE, CONTEXT_ENTRY_SIZE));
    if (!ce.present) return 'absent';
    // Reserved bits, an unsupported width, or a type other than translated DMA: no shadow to sync.
    if (ce.reserved || (ce.aw !== 1 && ce.aw !== 2) || ce.tt !== ContextTT.MULTI_LEVEL) return undefined;
    return ce;
  }

  /** The context entry of an address space in domain `did`, or undefined. */
  private inDomain(s: AddressSpace, did: number): ContextEntry | undefined {
    const ce = this.contextOf(s);
    return typeof ce === 'object' && ce.did === did ? ce : undefined;
  }

  /**
   * vtd_address_space_sync: re-walk a whole address space; with its context entry gone, drop its
   * whole shadow. (QEMU notifies one UNMAP over the whole address width there; each mapping is
   * unmapped on its own here, as VFIO would find them.)
   */
  private async syncSpace(s: AddressSpace, ctx: OpContext): Promise<void> {
    const ce = this.contextOf(s);
    if (typeof ce === 'object') await this.walk(s, ce, 0, 2 ** VTD_AW_BITS, ctx);
    else if (ce === 'absent') for (const m of s.tree.remove(0, 2 ** VTD_AW_BITS)) await this.vfioUnmap(s, m.iova, m.size, ctx);
  }

  /** vtd_sync_shadow_page_table_range: walk [start, start + size) and bring the shadow in line. */
  private async walk(s: AddressSpace, ce: ContextEntry, start: number, size: number, ctx: OpContext): Promise<void> {
    if (!this.ram) return;
    await walkSecondLevel(
      this.ram, ce.slptptr, levelsOfAw(ce.aw), start, start + size,
      (e) => this.walkOne(s, e, ctx),
      (n) => {
        this.counters.walkReads += n;
        ctx.charge('vmm.iommu_walk_pte', n);
      },
    );
  }

  /** vtd_page_walk_one: compare one entry with the IOVA tree and notify VFIO of a change. */
  private async walkOne(s: AddressSpace, e: SlWalkEvent, ctx: OpContext): Promise<void> {
    const mapped = s.tree.find(e.iova, e.span);
    if (!e.present) {
      if (!mapped) return;
      s.tree.remove(e.iova, e.span);
      await this.vfioUnmap(s, e.iova, e.span, ctx);
      return;
    }
    const target: IovaMapping = { iova: e.iova, size: e.span, gpa: e.pa, read: e.read, write: e.write };
    if (mapped) {
      if (mapped.iova === target.iova && mapped.size === target.size && mapped.gpa === target.gpa && mapped.read === target.read && mapped.write === target.write) return;
      // The translation changed under a live mapping: VFIO has no "modify", so unmap, then map.
      s.tree.remove(e.iova, e.span);
      await this.vfioUnmap(s, e.iova, e.span, ctx);
    }
    s.tree.insert(target);
    await this.vfioMap(s, target, ctx);
  }

  /**
   * vfio_iommu_map_notify (MAP): the guest-physical range must be RAM (else QEMU reports "iommu
   * map to non memory area" and maps nothing); VFIO gets READ, and WRITE unless read-only.
   */
  private async vfioMap(s: AddressSpace, m: IovaMapping, ctx: OpContext): Promise<void> {
    if (m.gpa + m.size > GUEST_RAM_SIZE) {
      this.counters.nonRamMaps += 1;
      return;
    }
    this.counters.mapDma += 1;
    const flags = VFIO_DMA_MAP_FLAG_READ | (m.write ? VFIO_DMA_MAP_FLAG_WRITE : 0);
    const r = await ctx.call('vfio', 'VFIO_DMA_MAP', encodeContainerIoctl(s.fd, encodeDmaMap({ flags, vaddr: VMM_RAM_VADDR + m.gpa, iova: m.iova, size: m.size })));
    if (r.status !== 0) this.counters.ioctlErrors += 1;
  }

  private async vfioUnmap(s: AddressSpace, iova: number, size: number, ctx: OpContext): Promise<void> {
    this.counters.unmapDma += 1;
    const r = await ctx.call('vfio', 'VFIO_DMA_UNMAP', encodeContainerIoctl(s.fd, encodeDmaUnmap({ flags: 0, iova, size })));
    if (r.status !== 0) this.counters.ioctlErrors += 1;
  }

  /** vtd_handle_inv_queue_error: IQE, and a fault event unless one is already reported. */
  private queueError(): void {
    this.counters.queueErrors += 1;
    const before = this.fsts;
    this.fsts |= FSTS.IQE;
    if (before & (FSTS.PPF | FSTS.PFO | FSTS.IQE)) return;
    this.fectl |= EVENT_CTL.IP;
    if (!(this.fectl & EVENT_CTL.IM)) this.fireFault();
  }

  /** The fault event interrupt would be sent now; delivery is not modelled, only counted. */
  private fireFault(): void {
    this.counters.faultEvents += 1;
    this.fectl &= ~EVENT_CTL.IP;
  }

  stats(): Record<string, number> {
    const mappings = this.spaces.reduce((n, s) => n + s.tree.size, 0);
    const pages = this.spaces.reduce((n, s) => n + s.tree.bytes / PAGE_SIZE, 0);
    return { ...this.counters, shadowMappings: mappings, shadowPages: pages, bqlContended: this.bql.contended };
  }
}

export const vmmDevice: VmmDeviceFactory = (env) => new VtdCachingMode(env);
