import { Errno } from '../runtime/errors.js';
import { GUEST_BUFFER_BASE } from '../machine/board.js';
import { PAGE_SIZE } from '../machine/memory.js';
import type { OpContext } from '../runtime/op-context.js';
import type { DmaApi, GuestDevice, GuestKernel } from './driver.js';

/** Bounce pools sit above the benchmark buffers in guest RAM. */
const BOUNCE_POOL_BASE = GUEST_BUFFER_BASE + 0x1_0000_0000;
const BOUNCE_POOL_STRIDE = 0x40_0000;
const BOUNCE_POOLS = 0x1_0000_0000 / BOUNCE_POOL_STRIDE;

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
 * bounce: a pool of buffers per CPU and device, mapped once; dma_map copies the data into a pool
 * slot and hands out its IOVA, dma_unmap copies back and frees the slot (swiotlb-style). Nothing
 * reaches the IOMMU per I/O; each I/O pays a copy per page instead.
 */
class BounceDma extends DmaMode {
  private readonly pools = new Map<string, { iova: number; free: number[]; slotPages: number }>();

  private async pool(ctx: OpContext, cpu: number, device: GuestDevice, pages: number): Promise<{ iova: number; free: number[]; slotPages: number } | number> {
    const key = `${cpu}/${device.index}`;
    const have = this.pools.get(key);
    if (have) return have;
    // Two slots per CPU and device are enough for one I/O in flight per thread.
    const slots = 2;
    // Each pool in its own 4 MiB (2 slots of up to 512 pages) of the 4 GiB between the workload
    // buffers and the receive rings: 1024 pools, past which (CPUs x devices) they share memory,
    // which only the bounced data would notice.
    const n = Math.max(1, this.kernel.devices.length);
    const at = Math.max(0, this.kernel.devices.indexOf(device));
    const pa = BOUNCE_POOL_BASE + ((cpu * n + at) % BOUNCE_POOLS) * BOUNCE_POOL_STRIDE;
    const iova = await this.inner.map(ctx, cpu, device, pa, slots * pages);
    if (iova < 0) return iova;
    const p = { iova, free: [0, 1], slotPages: pages };
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

/** Wraps an architecture's DMA API in the guest's DMA mode (strict and lazy live in the API itself). */
export function withDmaMode(mode: string, inner: DmaApi, kernel: GuestKernel): DmaApi {
  if (mode === 'static') return new StaticDma(inner, kernel);
  if (mode === 'bounce') return new BounceDma(inner, kernel);
  return inner;
}
