import { GUEST_TABLE_BASE } from '../../machine/board.js';
import { Errno } from '../../runtime/errors.js';
import { FrameAllocator } from '../../machine/memory.js';
import type { OpContext } from '../../runtime/op-context.js';
import { ContextTT, DescType, Granularity, VTD_CAP, VTD_ROOT_TABLE_GPA, capMaxAmask, capPsi, capReadDrain, capWriteDrain, encodeContextEntry, encodeRootEntry, psiRange, ridParts, vtdContextTableGpa, CONTEXT_ENTRY_SIZE, ROOT_ENTRY_SIZE, type IotlbDesc } from '../../formats/vtd.js';
import { VtdPageTable } from '../../machine/vtd-page-table.js';
import { type DmaApi, type DmaApiFactory, type GuestDevice, type GuestKernel } from '../../guest/driver.js';
import { FlushQueue } from '../../guest/flush-queue.js';
import { CpuIovaSpace, type IovaAllocator } from '../../guest/iova.js';
import { GuestQi } from './vtd-qi.js';

/**
 * The DMA window IOVAs come from: each CPU allocates top-down in its own 256 MiB slice, so which
 * operation first touches a new page-table page does not depend on how vCPUs interleave. Every
 * domain has the same window, as Linux hands out the same IOVAs in every domain: each device has
 * its own address space in QEMU, its own VFIO container and host domain, so they never collide.
 */
const IOVA_BASE = 0x1_0000_0000;
const IOVA_SLICE = 0x1000_0000;
/** Linux allocates domain ids from IDA_START_DID (0: caching mode's invalid id, 1: FLPT_DEFAULT_DID). */
const FIRST_DID = 2;

/** Context AW for a 4-level (48-bit) second-level table. */
const AW_48 = 2;

interface Deferred {
  /** The CPU whose IOVA allocator the range came from (not the queue's, with a single queue). */
  cpu: number;
  iova: number;
  pages: number;
  /** Page-table frames the unmap freed, reusable once the flush covered them. */
  freed: number[];
}

/** A dmar_domain: one per assigned device here, with its domain id, second-level table and IOVAs. */
class Domain {
  private readonly iovas: CpuIovaSpace;
  /** Lazy mode's flush queue (set by the driver once the domain exists). */
  fq: FlushQueue<Deferred> | undefined;

  constructor(
    readonly device: GuestDevice,
    readonly did: number,
    readonly table: VtdPageTable,
  ) {
    this.iovas = new CpuIovaSpace(IOVA_BASE, IOVA_SLICE);
  }

  iova(cpu: number): IovaAllocator {
    return this.iovas.of(cpu);
  }
}

/**
 * dma-iommu over the guest's intel-iommu driver on an emulated VT-d in caching mode. The guest owns
 * a second-level table per domain in its RAM; every change it makes is followed by an IOTLB
 * invalidation through the queued-invalidation interface, because caching mode says the unit may
 * cache not-present entries (it is how the VMM learns of new mappings):
 *  - map: write the PTEs, then a page-selective invalidation (PSI) of the range + wait;
 *  - strict unmap: clear the PTEs (freeing tables the range covers), PSI + wait, then free the
 *    IOVA and the tables; IH is set when no table was freed, as Linux does;
 *  - lazy unmap: clear the PTEs and queue the IOVA in the domain's flush queue (flush-queue.ts:
 *    per CPU by default, as intel-iommu does not set shadow_on_flush); a flush is one
 *    domain-selective invalidation (DSI) + wait (intel_flush_iotlb_all), after which the entries it
 *    covers (IOVAs and tables) are freed: by the full ring's own unmap, or the domain's timer.
 * A range whose aligned AM exceeds the unit's MAMV is invalidated domain-selectively. A failed
 * invalidation fails the operation (Linux ignores qi_submit_sync's result; reporting it here shows
 * the cost of a queue error instead of hiding it).
 */
class IntelCmDmaIommu implements DmaApi {
  private commands = 0;
  /** Of `commands`, those whose wait descriptor never completed (the queue stopped on them). */
  private failed = 0;
  private readonly domains = new Map<number, Domain>();
  private readonly lazy: boolean;
  private readonly qi: GuestQi;

  constructor(private readonly kernel: GuestKernel) {
    this.lazy = kernel.env.topology.dma === 'lazy';
    this.qi = new GuestQi(kernel.ram, `${kernel.env.self.name}.qi`);
    const frames = new FrameAllocator(GUEST_TABLE_BASE);
    const ram = kernel.ram;
    const buses = new Set<number>();
    for (const d of kernel.devices) {
      const table = new VtdPageTable(ram, frames);
      const did = FIRST_DID + d.index;
      const { bus, devfn } = ridParts(d.vsid);
      if (!buses.has(bus)) {
        ram.write(VTD_ROOT_TABLE_GPA + bus * ROOT_ENTRY_SIZE, encodeRootEntry({ present: true, ctp: vtdContextTableGpa(bus) }));
        buses.add(bus);
      }
      ram.write(vtdContextTableGpa(bus) + devfn * CONTEXT_ENTRY_SIZE, encodeContextEntry({ present: true, fpd: false, tt: ContextTT.MULTI_LEVEL, slptptr: table.root, aw: AW_48, did }));
      const domain = new Domain(d, did, table);
      if (this.lazy) {
        domain.fq = new FlushQueue<Deferred>(FlushQueue.kindFor(kernel, false), kernel, {
          flush: (ctx) => this.invalidate(ctx, this.iotlbDesc(did)),
          release: (ctx, items) => {
            for (const e of items) {
              table.release(e.freed);
              domain.iova(e.cpu).release(e.iova, e.pages);
              ctx.charge('guest.iova_free');
            }
          },
        });
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

  private domain(device: GuestDevice): Domain {
    const d = this.domains.get(device.index);
    if (!d) throw new Error(`device ${device.index} has no domain`);
    return d;
  }

  /** qi_flush_iotlb's descriptor: PSI of the aligned range, or DSI when PSI cannot cover it. */
  private iotlbDesc(did: number, range?: { iova: number; pages: number; ih: boolean }): IotlbDesc {
    const drain = { dr: capReadDrain(VTD_CAP), dw: capWriteDrain(VTD_CAP) };
    const psi = range ? psiRange(range.iova, range.pages) : undefined;
    if (!range || !psi || !capPsi(VTD_CAP) || psi.am > capMaxAmask(VTD_CAP)) {
      return { type: DescType.IOTLB, granularity: Granularity.DOMAIN, ...drain, did, addr: 0, ih: false, am: 0 };
    }
    return { type: DescType.IOTLB, granularity: Granularity.DEVICE_OR_PAGE, ...drain, did, addr: psi.addr, ih: range.ih, am: psi.am };
  }

  private async invalidate(ctx: OpContext, desc: IotlbDesc): Promise<number> {
    this.commands += 1;
    const status = await this.qi.submit(ctx, [desc]);
    if (status < 0) this.failed += 1;
    return status;
  }

  async map(ctx: OpContext, cpu: number, device: GuestDevice, pa: number, pages: number): Promise<number> {
    const d = this.domain(device);
    await d.fq?.enter(cpu);
    const iova = d.iova(cpu).tryAlloc(pages);
    ctx.charge('guest.iova_alloc');
    if (iova === undefined) return -Errno.ENOMEM;
    ctx.charge('guest.pte_write', d.table.map(iova, pa, pages));
    // Caching mode: a not-present -> present change must be invalidated too.
    const status = await this.invalidate(ctx, this.iotlbDesc(d.did, { iova, pages, ih: false }));
    if (status === 0) return iova;
    d.table.release(d.table.unmap(iova, pages).freed);
    d.iova(cpu).release(iova, pages);
    return status;
  }

  async unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number> {
    const d = this.domain(device);
    await d.fq?.enter(cpu);
    const { cleared, freed } = d.table.unmap(iova, pages);
    ctx.charge('guest.pte_write', cleared);
    if (!d.fq) {
      const status = await this.invalidate(ctx, this.iotlbDesc(d.did, { iova, pages, ih: freed.length === 0 }));
      d.table.release(freed);
      d.iova(cpu).release(iova, pages);
      ctx.charge('guest.iova_free');
      return status;
    }
    const now = (this.kernel.vcpuNs[cpu] ?? 0) + ctx.modeledNs;
    return d.fq.queue(ctx, cpu, now, { cpu, iova, pages, freed });
  }

  async drain(): Promise<void> {
    for (const d of this.domains.values()) await d.fq?.drain();
  }

  close(): void {}
}

export const dmaApi: DmaApiFactory = (kernel) => new IntelCmDmaIommu(kernel);
