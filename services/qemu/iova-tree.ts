/**
 * One mapping a vIOMMU model has told VFIO about (QEMU's DMAMap: iova, translated_addr, size,
 * perm), with `size` in bytes rather than QEMU's inclusive size.
 */
export interface IovaMapping {
  iova: number;
  size: number;
  /** Guest-physical address the range translates to. */
  gpa: number;
  read: boolean;
  write: boolean;
}

/**
 * QEMU's IOVATree (util/iova-tree.c): non-overlapping ranges sorted by IOVA, where a lookup finds
 * any range overlapping the one asked and a removal removes every range overlapping it. The VT-d
 * model keeps one per device address space to know what its shadow holds.
 */
export class IovaTree {
  private readonly ranges: IovaMapping[] = [];

  get size(): number {
    return this.ranges.length;
  }

  /** Bytes mapped in all. */
  get bytes(): number {
    return this.ranges.reduce((n, r) => n + r.size, 0);
  }

  /** Index of the first range that ends after `iova`. */
  private lowerBound(iova: number): number {
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const r = this.ranges[mid] as IovaMapping;
      if (r.iova + r.size <= iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** A range overlapping [iova, iova + size), or undefined (iova_tree_find). */
  find(iova: number, size: number): IovaMapping | undefined {
    const r = this.ranges[this.lowerBound(iova)];
    return r && r.iova < iova + size ? r : undefined;
  }

  /** Inserts a range; false when it overlaps one already there (IOVA_ERR_OVERLAP). */
  insert(m: IovaMapping): boolean {
    if (m.size <= 0 || this.find(m.iova, m.size)) return false;
    this.ranges.splice(this.lowerBound(m.iova), 0, { ...m });
    return true;
  }

  /** Removes every range overlapping [iova, iova + size); returns them (iova_tree_remove). */
  remove(iova: number, size: number): IovaMapping[] {
    const first = this.lowerBound(iova);
    let last = first;
    while (last < this.ranges.length && (this.ranges[last] as IovaMapping).iova < iova + size) last += 1;
    return this.ranges.splice(first, last - first);
  }

  entries(): readonly IovaMapping[] {
    return this.ranges;
  }
}
