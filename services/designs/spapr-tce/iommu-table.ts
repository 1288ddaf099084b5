/**
 * The IOBA allocator of a pseries guest's iommu_table (arch/powerpc/kernel/iommu.c): a bitmap of
 * the DMA window's TCEs, split into pools that each keep a next-fit hint. Linux picks a pool by a
 * per-CPU hash over 4 pools and sends allocations above 15 pages to a shared large pool; here each
 * CPU has its own pool slice for every size, so which IOBA an operation gets (and so which host
 * table pages it touches) does not depend on how the vCPUs interleave.
 */

/** iommu_table.it_blocksize: small allocations move the hint to the next 16-entry block. */
const BLOCK = 16;
/** iommu_range_alloc: above this many pages an allocation is "large" and does not round the hint. */
const LARGE_ALLOC = 15;

interface Pool {
  start: number;
  end: number;
  hint: number;
}

export class IommuTable {
  private readonly bits: Uint32Array;
  private readonly pools: Pool[];

  /** `size` entries (TCEs) in `pools` pools; pool n serves CPU n (modulo the pool count). */
  constructor(
    readonly size: number,
    pools: number,
  ) {
    this.bits = new Uint32Array(Math.ceil(size / 32));
    const n = Math.max(1, Math.min(pools, Math.floor(size / BLOCK)));
    const per = Math.floor(size / n);
    this.pools = Array.from({ length: n }, (_, i) => ({ start: i * per, end: i === n - 1 ? size : (i + 1) * per, hint: i * per }));
    // iommu_table_reserve_pages: entry 0 is never handed out (drivers take DMA address 0 as invalid).
    this.set(0, 1, true);
  }

  /** Allocates `npages` consecutive entries for `cpu`; returns the first entry, or undefined when full. */
  alloc(cpu: number, npages: number): number | undefined {
    if (npages <= 0 || npages > this.size) return undefined;
    const first = cpu % this.pools.length;
    // Own pool from its hint, then from its start, then every other pool from its start.
    for (let pass = 0; pass <= this.pools.length; pass++) {
      const pool = this.pools[(first + Math.max(0, pass - 1)) % this.pools.length] as Pool;
      if (pass > 0) pool.hint = pool.start;
      const start = pool.hint >= pool.end ? pool.start : pool.hint;
      const n = this.areaAlloc(start, pool.end, npages);
      if (n === undefined) continue;
      this.set(n, npages, true);
      const end = n + npages;
      pool.hint = npages > LARGE_ALLOC ? end : Math.ceil(end / BLOCK) * BLOCK;
      return n;
    }
    return undefined;
  }

  /** Frees entries; false when the range is outside the table (iommu_free_check), which frees nothing. */
  free(entry: number, npages: number): boolean {
    if (entry < 0 || npages <= 0 || entry + npages > this.size) return false;
    this.set(entry, npages, false);
    return true;
  }

  isSet(entry: number): boolean {
    return ((this.bits[entry >>> 5] as number) & (1 << (entry & 31))) !== 0;
  }

  /** The first run of `npages` clear entries in [start, limit), or undefined. */
  private areaAlloc(start: number, limit: number, npages: number): number | undefined {
    let run = 0;
    for (let i = start; i < limit; i++) {
      if (this.isSet(i)) {
        run = 0;
        continue;
      }
      run += 1;
      if (run === npages) return i - npages + 1;
    }
    return undefined;
  }

  private set(entry: number, npages: number, on: boolean): void {
    for (let i = entry; i < entry + npages; i++) {
      const w = i >>> 5;
      const m = 1 << (i & 31);
      this.bits[w] = on ? (this.bits[w] as number) | m : (this.bits[w] as number) & ~m;
    }
  }
}
