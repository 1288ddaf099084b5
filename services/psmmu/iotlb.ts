import { PAGE_SIZE } from '../common/memory.js';

/** One cached translation: tagged by VMID, ASID (stage 1; -1 for stage-2-only) and input page. */
export interface IotlbEntry {
  vmid: number;
  asid: number;
  /** Input address of the page (VA for stage 1 and nested, IPA for stage 2 only). */
  page: number;
  /** Output page address. */
  pa: number;
  writable: boolean;
  /** IPA of the page for nested entries (a stage-2 invalidation by IPA must drop them too). */
  ipa: number;
}

function key(vmid: number, asid: number, page: number): string {
  return `${vmid}/${asid}/${page}`;
}

/**
 * The SMMU's TLB: a fixed number of entries with least-recently-used replacement (a Map keeps
 * insertion order; a hit re-inserts). Invalidations drop exactly the entries in their scope.
 */
export class Iotlb {
  private readonly entries = new Map<string, IotlbEntry>();
  hits = 0;
  misses = 0;
  evictions = 0;
  invalidated = 0;

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.entries.size;
  }

  lookup(vmid: number, asid: number, va: number): IotlbEntry | undefined {
    const page = va - (va % PAGE_SIZE);
    const k = key(vmid, asid, page);
    const e = this.entries.get(k);
    if (!e) {
      this.misses += 1;
      return undefined;
    }
    this.hits += 1;
    this.entries.delete(k);
    this.entries.set(k, e);
    return e;
  }

  insert(e: IotlbEntry): void {
    const k = key(e.vmid, e.asid, e.page);
    this.entries.delete(k);
    if (this.entries.size >= this.capacity) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) {
        this.entries.delete(oldest.value);
        this.evictions += 1;
      }
    }
    this.entries.set(k, e);
  }

  private dropWhere(pred: (e: IotlbEntry) => boolean): number {
    let n = 0;
    for (const [k, e] of this.entries) {
      if (pred(e)) {
        this.entries.delete(k);
        n += 1;
      }
    }
    this.invalidated += n;
    return n;
  }

  /** TLBI_NH_VA: pages [va, va + span) of one ASID in one VMID. */
  invalidateVa(vmid: number, asid: number, va: number, span: number): number {
    if (span / PAGE_SIZE <= this.entries.size) {
      let n = 0;
      for (let p = va - (va % PAGE_SIZE); p < va + span; p += PAGE_SIZE) {
        if (this.entries.delete(key(vmid, asid, p))) n += 1;
      }
      this.invalidated += n;
      return n;
    }
    return this.dropWhere((e) => e.vmid === vmid && e.asid === asid && e.page >= va && e.page < va + span);
  }

  /** TLBI_NH_VAA: the range in every ASID of one VMID. */
  invalidateVaAllAsid(vmid: number, va: number, span: number): number {
    return this.dropWhere((e) => e.vmid === vmid && e.asid >= 0 && e.page >= va && e.page < va + span);
  }

  /** TLBI_NH_ASID. */
  invalidateAsid(vmid: number, asid: number): number {
    return this.dropWhere((e) => e.vmid === vmid && e.asid === asid);
  }

  /** TLBI_NH_ALL: every stage-1 entry of the VMID. */
  invalidateStage1(vmid: number): number {
    return this.dropWhere((e) => e.vmid === vmid && e.asid >= 0);
  }

  /** TLBI_S12_VMALL: everything of the VMID. */
  invalidateVmid(vmid: number): number {
    return this.dropWhere((e) => e.vmid === vmid);
  }

  /** TLBI_S2_IPA: entries whose stage-2 input falls in the range. */
  invalidateIpa(vmid: number, ipa: number, span: number): number {
    return this.dropWhere((e) => e.vmid === vmid && e.ipa >= ipa && e.ipa < ipa + span);
  }

  /** TLBI_NSNH_ALL: every non-secure, non-hyp entry. */
  invalidateAll(): number {
    return this.dropWhere(() => true);
  }
}
