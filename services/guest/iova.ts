import { PAGE_SIZE } from '../machine/memory.js';

/**
 * The guest DMA API's IOVA allocator, reduced to what matters for the simulated path: ranges of a
 * given size come back in LIFO order (as Linux's per-CPU rcache hands out the most recently freed
 * IOVA), and new space is carved from the top of the DMA window downwards.
 */
export class IovaAllocator {
  private readonly free = new Map<number, number[]>();
  private next: number;

  constructor(
    private readonly base: number,
    limit: number,
  ) {
    this.next = limit;
  }

  alloc(pages: number): number {
    const iova = this.tryAlloc(pages);
    if (iova === undefined) throw new RangeError('IOVA space exhausted');
    return iova;
  }

  /**
   * A range, or undefined when the window has no room left: what a DMA API reports as a mapping
   * error (DMA_MAPPING_ERROR), e.g. when lazy mode's flush queues hold more IOVAs than the window.
   */
  tryAlloc(pages: number): number | undefined {
    const cached = this.free.get(pages)?.pop();
    if (cached !== undefined) return cached;
    const iova = this.next - pages * PAGE_SIZE;
    if (iova < this.base) return undefined;
    this.next = iova;
    return iova;
  }

  release(iova: number, pages: number): void {
    let list = this.free.get(pages);
    if (!list) {
      list = [];
      this.free.set(pages, list);
    }
    list.push(iova);
  }
}

/**
 * A domain's IOVA space as its CPUs allocate from it: each CPU has its own allocator over its own
 * slice [window + cpu * slice, + slice), so which operation gets which IOVA (and first touches a
 * page-table page) does not depend on how the vCPUs interleave.
 */
export class CpuIovaSpace {
  private readonly byCpu = new Map<number, IovaAllocator>();

  constructor(
    private readonly window: number,
    private readonly slice: number,
  ) {}

  of(cpu: number): IovaAllocator {
    let a = this.byCpu.get(cpu);
    if (!a) {
      const base = this.window + cpu * this.slice;
      a = new IovaAllocator(base, base + this.slice);
      this.byCpu.set(cpu, a);
    }
    return a;
  }
}
