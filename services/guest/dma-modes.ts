import { Errno } from '../runtime/errors.js';
import { GUEST_BUFFER_BASE } from '../machine/board.js';
import { PAGE_SIZE } from '../machine/memory.js';
import type { OpContext } from '../runtime/op-context.js';
import type { DmaApi, GuestDevice, GuestKernel } from './driver.js';
import { IovaAllocator } from './iova.js';
import { queueDepthOf } from './workloads/common.js';

/** Bounce pools (and the swiotlb's areas: one mode per run) sit above the benchmark buffers in guest RAM. */
const BOUNCE_POOL_BASE = GUEST_BUFFER_BASE + 0x1_0000_0000;
const BOUNCE_POOL_STRIDE = 0x40_0000;
const BOUNCE_POOLS = 0x1_0000_0000 / BOUNCE_POOL_STRIDE;
/**
 * swiotlb: one area per CPU (swiotlb splits its pool into areas, one per CPU by default, so CPUs
 * do not share a lock), 64 MiB each, in the same 4 GiB: up to 64 vCPUs (more share areas).
 */
const SWIOTLB_AREA = 0x400_0000;
const SWIOTLB_AREAS = 0x1_0000_0000 / SWIOTLB_AREA;
/**
 * Under dma=swiotlb the workload's buffers start this many bytes into their first page and end at
 * the end of their last one (an skb's data after its headroom, a kmalloc'd block): not IOVA-granule
 * aligned, so dma-iommu bounces every one of them.
 */
export const SWIOTLB_BUFFER_OFFSET = 64;

/**
 * A DMA mode over the architecture's DMA API: the invalidations are the inner API's, whatever the
 * mode saves of them.
 */
abstract class DmaMode implements DmaApi {
  constructor(
    protected readonly inner: DmaApi,
    protected readonly kernel: GuestKernel,
  ) {}

  get guestCommands(): number {
    return this.inner.guestCommands;
  }

  get guestCommandsFailed(): number | undefined {
    return this.inner.guestCommandsFailed;
  }

  get emulatedCommands(): number | undefined {
    return this.inner.emulatedCommands;
  }

  get emulatedCommandsFailed(): number | undefined {
    return this.inner.emulatedCommandsFailed;
  }

  async boot(): Promise<void> {
    await this.inner.boot?.();
  }

  abstract map(ctx: OpContext, cpu: number, device: GuestDevice, pa: number, pages: number): Promise<number>;
  abstract unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number>;
  abstract drain(): Promise<void>;

  close(): void {
    this.inner.close();
  }
}

/**
 * static: the driver maps its buffers once and reuses them (DPDK style). A buffer's first map goes
 * through the IOMMU; later maps of it only look the IOVA up, unmaps keep it mapped, and the real
 * unmaps happen when the workload ends.
 */
class StaticDma extends DmaMode {
  private readonly mapped = new Map<string, number>();

  async map(ctx: OpContext, cpu: number, device: GuestDevice, pa: number, pages: number): Promise<number> {
    const key = `${device.index}/${pa}/${pages}`;
    const iova = this.mapped.get(key);
    if (iova !== undefined) {
      ctx.charge('guest.static_lookup');
      return iova;
    }
    const fresh = await this.inner.map(ctx, cpu, device, pa, pages);
    if (fresh >= 0) this.mapped.set(key, fresh);
    return fresh;
  }

  async unmap(ctx: OpContext): Promise<number> {
    ctx.charge('guest.static_lookup');
    return 0;
  }

  async drain(): Promise<void> {
    for (const [key, iova] of this.mapped) {
      const [device, , pages] = key.split('/').map(Number) as [number, number, number];
      const d = this.kernel.devices.find((x) => x.index === device) as GuestDevice;
      await this.inner.unmap(this.kernel.env.newContext(0, 0), 0, d, iova, pages);
    }
    this.mapped.clear();
    await this.inner.drain();
  }
}

/**
 * bounce: the IOMMU-backed reusable bounce pool, a driver-level design (the shape of D. Stevens'
 * "dynamic iommu backed bounce buffers" series), not Linux's swiotlb (that is dma=swiotlb): a pool
 * of buffers per CPU and device, mapped through the IOMMU once; dma_map copies the data into a pool
 * slot and hands out its IOVA, dma_unmap copies back and frees the slot. Nothing reaches the IOMMU
 * per I/O; each I/O pays a copy per page instead.
 */
class BounceDma extends DmaMode {
  private readonly pools = new Map<string, { iova: number; free: number[]; slotPages: number }>();

  private async pool(ctx: OpContext, cpu: number, device: GuestDevice, pages: number): Promise<{ iova: number; free: number[]; slotPages: number } | number> {
    const key = `${cpu}/${device.index}`;
    const have = this.pools.get(key);
    if (have) return have;
    // A slot per I/O a thread has mapped at once: two (one I/O in flight, as dma-map-benchmark and
    // packet-stream map them), or a block batch's queueDepth, as many as fit in the pool's 4 MiB.
    const w = this.kernel.env.topology.workload;
    const depth = w ? queueDepthOf(w) : 1;
    const slots = Math.max(2, Math.min(depth, Math.floor(BOUNCE_POOL_STRIDE / (pages * PAGE_SIZE))));
    // Each pool in its own 4 MiB of the 4 GiB between the workload buffers and the receive rings:
    // 1024 pools, past which (CPUs x devices) they share memory, which only the bounced data would
    // notice.
    const n = Math.max(1, this.kernel.devices.length);
    const at = Math.max(0, this.kernel.devices.indexOf(device));
    const pa = BOUNCE_POOL_BASE + ((cpu * n + at) % BOUNCE_POOLS) * BOUNCE_POOL_STRIDE;
    const iova = await this.inner.map(ctx, cpu, device, pa, slots * pages);
    if (iova < 0) return iova;
    const p = { iova, free: Array.from({ length: slots }, (_, i) => i), slotPages: pages };
    this.pools.set(key, p);
    return p;
  }

  async map(ctx: OpContext, cpu: number, device: GuestDevice, _pa: number, pages: number): Promise<number> {
    const p = await this.pool(ctx, cpu, device, pages);
    if (typeof p === 'number') return p;
    const slot = p.free.pop();
    if (slot === undefined || pages > p.slotPages) return -Errno.ENOMEM; // the pool is exhausted
    ctx.charge('guest.bounce_copy', pages);
    return p.iova + slot * p.slotPages * PAGE_SIZE;
  }

  async unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number> {
    const p = this.pools.get(`${cpu}/${device.index}`);
    if (!p) return -Errno.EINVAL; // not a bounce address
    ctx.charge('guest.bounce_copy', pages);
    p.free.push((iova - p.iova) / (p.slotPages * PAGE_SIZE));
    return 0;
  }

  async drain(): Promise<void> {
    await this.inner.drain();
  }
}

/**
 * swiotlb: dma-iommu's bounce path for untrusted devices (an external-facing PCI port, or
 * iommu.passthrough off for an untrusted device): iommu_dma_map_phys (iommu_dma_map_page before
 * v6.18) sees dev_use_swiotlb() and a buffer that is not IOVA-granule aligned (iova_unaligned), so
 * it bounces: swiotlb_tbl_map_single claims slots in the CPU's area (aligned to the IOVA granule
 * with the buffer's offset kept, alloc_align_mask = iova_mask), zeroes the padding the device must
 * not see and copies the buffer in (DMA_BIDIRECTIONAL), then the slot is mapped through the IOMMU as
 * any buffer is (the inner API's map: its PTEs and, per design, its invalidation). dma_unmap is the
 * IOMMU unmap first (__iommu_dma_unmap, with its invalidation, strict or lazy), then
 * swiotlb_tbl_unmap_single copies back and releases the slots. So every I/O pays the whole
 * map/unmap path plus two copies and the slot bookkeeping.
 *
 * Alignment: the workload's buffers are taken to start SWIOTLB_BUFFER_OFFSET bytes into their first
 * page and to end at the end of their last page, so every one bounces, and its slot, keeping that
 * offset, spans as many pages as the buffer: the IOMMU maps granulePages pages, as in strict mode.
 * (A page-aligned whole-page buffer would not bounce: then this mode is strict.) The copies are
 * priced per page (guest.bounce_copy); the 64 bytes short of a page are not told apart.
 */
class SwiotlbDma extends DmaMode {
  private readonly areas = new Map<number, IovaAllocator>();
  /** Each bounced mapping's slot, by device and IOVA. */
  private readonly slots = new Map<string, { pa: number; area: number }>();

  private area(cpu: number): IovaAllocator {
    const n = cpu % SWIOTLB_AREAS;
    let a = this.areas.get(n);
    if (!a) {
      const base = BOUNCE_POOL_BASE + n * SWIOTLB_AREA;
      a = new IovaAllocator(base, base + SWIOTLB_AREA);
      this.areas.set(n, a);
    }
    return a;
  }

  async map(ctx: OpContext, cpu: number, device: GuestDevice, _pa: number, pages: number): Promise<number> {
    const area = cpu % SWIOTLB_AREAS;
    const slot = this.area(cpu).tryAlloc(pages);
    // swiotlb_tbl_map_single finds no room: DMA_MAPPING_ERROR.
    if (slot === undefined) return -Errno.ENOMEM;
    ctx.charge('guest.swiotlb_slot');
    ctx.charge('guest.bounce_copy', pages);
    const iova = await this.inner.map(ctx, cpu, device, slot, pages);
    if (iova < 0) {
      // The map failed: the slot goes back (swiotlb_tbl_unmap_single, no copy).
      ctx.charge('guest.swiotlb_slot');
      this.area(cpu).release(slot, pages);
      return iova;
    }
    this.slots.set(`${device.index}/${iova}`, { pa: slot, area });
    return iova;
  }

  async unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number> {
    const key = `${device.index}/${iova}`;
    const slot = this.slots.get(key);
    const status = await this.inner.unmap(ctx, cpu, device, iova, pages);
    // is_swiotlb_buffer: copy back and release the slots, whatever the unmap's status.
    if (slot) {
      this.slots.delete(key);
      ctx.charge('guest.bounce_copy', pages);
      ctx.charge('guest.swiotlb_slot');
      this.area(slot.area).release(slot.pa, pages);
    }
    return status;
  }

  async drain(): Promise<void> {
    await this.inner.drain();
  }
}

/** Wraps an architecture's DMA API in the guest's DMA mode (strict and lazy live in the API itself). */
export function withDmaMode(mode: string, inner: DmaApi, kernel: GuestKernel): DmaApi {
  if (mode === 'static') return new StaticDma(inner, kernel);
  if (mode === 'bounce') return new BounceDma(inner, kernel);
  if (mode === 'swiotlb') return new SwiotlbDma(inner, kernel);
  return inner;
}
