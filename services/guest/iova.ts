import { PAGE_SIZE } from '../common/memory.js';

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
    const cached = this.free.get(pages)?.pop();
    if (cached !== undefined) return cached;
    const iova = this.next - pages * PAGE_SIZE;
    if (iova < this.base) throw new RangeError('IOVA space exhausted');
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
