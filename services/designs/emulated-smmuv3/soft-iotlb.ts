import { LEVELS, levelSpan } from '../../machine/pagetable.js';

/** QEMU's SMMU_IOTLB_MAX_SIZE: past this many entries the next insert empties the whole table. */
export const SOFT_IOTLB_MAX_ENTRIES = 256;

/** VMID of entries made under a stage-1-only configuration (QEMU keys them with no VMID). */
export const NO_VMID = -1;

/** One cached translation: a leaf of the guest's table at some level (QEMU's SMMUTLBEntry). */
export interface SoftTlbEntry {
  asid: number;
  vmid: number;
  /** Input address the leaf covers from (aligned to its span). */
  iova: number;
  /** Level of the leaf descriptor (3: a 4 KiB page, 2: a 2 MiB block, 1: a 1 GiB block). */
  level: number;
  /** Output (guest-physical) address of `iova`. */
  pa: number;
  writable: boolean;
}

export interface SoftIotlbCounters {
  inserted: number;
  /** Entries dropped by invalidation commands. */
  invalidated: number;
  /** Times an insert found the table full and emptied it. */
  overflows: number;
}

/**
 * The software IOTLB of QEMU's emulated SMMU (hw/arm/smmu-common.c): a hash of leaf translations
 * keyed by ASID, VMID, the leaf's input address and its level (the granule is always 4 KiB here).
 * A lookup tries each level an entry could have been cached at; a full table is emptied rather
 * than evicting one entry, as QEMU does.
 */
export class SoftIotlb {
  private readonly entries = new Map<string, SoftTlbEntry>();
  readonly counters: SoftIotlbCounters = { inserted: 0, invalidated: 0, overflows: 0 };

  get size(): number {
    return this.entries.size;
  }

  lookup(asid: number, vmid: number, iova: number): SoftTlbEntry | undefined {
    for (let level = 1; level < LEVELS; level++) {
      const span = levelSpan(level);
      const e = this.entries.get(key(asid, vmid, iova - (iova % span), level));
      if (e) return e;
    }
    return undefined;
  }

  insert(e: SoftTlbEntry): void {
    if (this.entries.size >= SOFT_IOTLB_MAX_ENTRIES) {
      this.counters.overflows += 1;
      this.entries.clear();
    }
    this.counters.inserted += 1;
    this.entries.set(key(e.asid, e.vmid, e.iova, e.level), e);
  }

  /** TLBI_NH_ALL / TLBI_NSNH_ALL. */
  invalidateAll(): number {
    return this.drop(() => true);
  }

  /** TLBI_NH_ASID: every entry of the ASID. */
  invalidateAsid(asid: number): number {
    return this.drop((e) => e.asid === asid);
  }

  /**
   * TLBI_NH_VA (one ASID) or TLBI_NH_VAA (asid < 0: every ASID): every entry whose span overlaps
   * [iova, iova + bytes). `vmid` < 0 matches any VMID.
   */
  invalidateRange(asid: number, vmid: number, iova: number, bytes: number): number {
    const end = iova + bytes;
    return this.drop((e) => (asid < 0 || e.asid === asid) && (vmid < 0 || e.vmid === vmid) && e.iova < end && e.iova + levelSpan(e.level) > iova);
  }

  private drop(match: (e: SoftTlbEntry) => boolean): number {
    let n = 0;
    for (const [k, e] of this.entries) {
      if (!match(e)) continue;
      this.entries.delete(k);
      n += 1;
    }
    this.counters.invalidated += n;
    return n;
  }
}

function key(asid: number, vmid: number, iova: number, level: number): string {
  return `${asid}:${vmid}:${iova}:${level}`;
}
