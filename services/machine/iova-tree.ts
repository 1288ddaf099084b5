/** A range of I/O virtual addresses: [iova, iova + size), size in bytes. */
export interface IovaRange {
  iova: number;
  size: number;
}

/**
 * One mapping a vIOMMU model has told VFIO about (QEMU's DMAMap: iova, translated_addr, size,
 * perm), with `size` in bytes rather than QEMU's inclusive size.
 */
export interface IovaMapping extends IovaRange {
  /** Guest-physical address the range translates to. */
  gpa: number;
  read: boolean;
  write: boolean;
}

/**
 * Non-overlapping IOVA ranges sorted by address, as QEMU's IOVATree (util/iova-tree.c), the
 * virtio-iommu device's per-domain GTree of mappings and VFIO type1's rb-tree of vfio_dma keep
 * them: a lookup finds the ranges overlapping the one asked, in O(log n) to the first, and an
 * insert refuses an overlap. Each user stores its own record type beside the range.
 */
export class IovaTree<T extends IovaRange = IovaMapping> {
  private readonly ranges: T[] = [];

  get size(): number {
    return this.ranges.length;
  }

  /** Bytes covered in all. */
  get bytes(): number {
    return this.ranges.reduce((n, r) => n + r.size, 0);
  }

  /** Index of the first range that ends after `iova`. */
  private lowerBound(iova: number): number {
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const r = this.ranges[mid] as T;
      if (r.iova + r.size <= iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** A range overlapping [iova, iova + size), or undefined (iova_tree_find). */
  find(iova: number, size: number): T | undefined {
    const r = this.ranges[this.lowerBound(iova)];
    return r && r.iova < iova + size ? r : undefined;
  }

  /** Every range overlapping [iova, iova + size), in address order. */
  overlapping(iova: number, size: number): T[] {
    const out: T[] = [];
    for (let i = this.lowerBound(iova); i < this.ranges.length; i++) {
      const r = this.ranges[i] as T;
      if (r.iova >= iova + size) break;
      out.push(r);
    }
    return out;
  }

  /** Inserts a range (kept as given); false when it is empty or overlaps one already there (IOVA_ERR_OVERLAP). */
  insert(m: T): boolean {
    if (m.size <= 0 || this.find(m.iova, m.size)) return false;
    this.ranges.splice(this.lowerBound(m.iova), 0, m);
    return true;
  }

  /** Removes every range overlapping [iova, iova + size); returns them (iova_tree_remove). */
  remove(iova: number, size: number): T[] {
    const first = this.lowerBound(iova);
    let last = first;
    while (last < this.ranges.length && (this.ranges[last] as T).iova < iova + size) last += 1;
    return this.ranges.splice(first, last - first);
  }

  /** Removes this very range record; false when it is not in the tree. */
  delete(m: T): boolean {
    const i = this.lowerBound(m.iova);
    if (this.ranges[i] !== m) return false;
    this.ranges.splice(i, 1);
    return true;
  }

  entries(): readonly T[] {
    return this.ranges;
  }
}
