/**
 * The pSMMU's IOTLB, held in a SharedArrayBuffer so the psmmu main thread (translations, main CMDQ)
 * and the VCMDQ worker threads invalidate the same entries. It lives in worker-pool/ because both
 * sides import it and worker-pool must not import the psmmu role.
 *
 * Organisation: set-associative like a hardware TLB. `capacity` entries in `capacity / ways` sets;
 * an input page goes to one set (chosen from its page number only, so a VA range maps to sets
 * without knowing the ASID), and within a set the least recently used way is replaced.
 *
 * Concurrency: one lock word per set, taken with Atomics.compareExchange (a futex-style mutex:
 * spin briefly, then Atomics.wait). A seqlock was rejected because every lookup writes too (the LRU
 * stamp of the hit way), so readers would need the writer lock anyway; the per-set critical sections
 * are a scan of `ways` entries, so contention is rare and short. All entry fields are read and
 * written inside the lock, which orders the plain typed-array accesses between threads (the
 * Atomics operations on the lock word are the synchronisation edges), so no reader sees a torn
 * entry. Counters live in per-thread slots (each attached instance takes one) updated with
 * Atomics.add, so threads do not fight over one cache line on every lookup.
 *
 * Addresses are JS numbers (exact below 2^53). Page numbers (address >> 12, up to 2^40 for 52-bit
 * addresses, more for sign-extended VAs) are stored as two 32-bit words; nothing on the hot paths
 * uses BigInt.
 */

/** One cached translation. */
export interface IotlbEntry {
  vmid: number;
  /** Stage-1 ASID (0..65535); -1 in entries and lookups that are stage-2 only. */
  asid: number;
  /** Stage-2-only entry (no ASID; `page` is an IPA). `asid < 0` on insert implies it too. */
  stage2Only: boolean;
  /** Input address of the page, 4K aligned (VA for stage-1/nested entries, IPA for stage-2-only). */
  page: number;
  /** Output page address. */
  pa: number;
  writable: boolean;
  /** IPA of the page for nested entries: TLBI_S2_IPA drops nested entries whose IPA is in range. */
  ipa: number;
  /** Address of the stage-1 leaf descriptor the entry was built from (ground-truth check on a hit). */
  leafDescAddr: number;
}

export interface IotlbStats {
  hits: number;
  misses: number;
  evictions: number;
  invalidated: number;
  inserts: number;
}

const PAGE_SHIFT = 12;
const PAGE_SIZE = 1 << PAGE_SHIFT;
const TWO32 = 0x1_0000_0000;

const MAGIC = 0x49544c42; // 'ITLB'
const VERSION = 1;

// Header words.
const H_MAGIC = 0;
const H_VERSION = 1;
const H_CAPACITY = 2;
const H_WAYS = 3;
const H_SETS = 4;
const H_NEXT_SLOT = 5;
const HEADER_WORDS = 16;

// Counter slots: one per attached instance (modulo SLOTS), 64 bytes apart to avoid false sharing.
const SLOTS = 32;
const SLOT_WORDS = 16;
const C_HITS = 0; // each counter is two words, lo then hi
const C_MISSES = 2;
const C_EVICTIONS = 4;
const C_INVALIDATED = 6;
const C_INSERTS = 8;
const C_SIZE = 10; // signed delta of valid entries made through this slot
const SLOTS_BASE = HEADER_WORDS;
const SETS_BASE = SLOTS_BASE + SLOTS * SLOT_WORDS;

// Set block: a 4-word header (lock, LRU clock) then `ways` entries.
const S_LOCK = 0;
const S_CLOCK = 1;
const SET_HEADER_WORDS = 4;

// Entry words. pa, ipa and leafDescAddr are float64 (exact integers up to 2^53) at words 6..11, so
// ENTRY_WORDS and every offset before them stay even (8-byte aligned in the buffer).
const E_META = 0;
const E_TAG = 1;
const E_PAGE_LO = 2;
const E_PAGE_HI = 3;
const E_STAMP = 4;
const E_F64 = 6;
const ENTRY_WORDS = 12;

const M_VALID = 1;
const M_S2 = 2;
const M_WRITABLE = 4;

const LOCK_FREE = 0;
const LOCK_HELD = 1;
const LOCK_CONTENDED = 2;
const SPINS = 64;

/** Above this many pages (or the number of sets, if lower) a range is done by scanning the table. */
const MAX_PAGE_LOOP = 256;

// Scan scopes.
const SCOPE_VA = 0;
const SCOPE_VAA = 1;
const SCOPE_ASID = 2;
const SCOPE_STAGE1 = 3;
const SCOPE_VMID = 4;
const SCOPE_IPA = 5;
const SCOPE_ALL = 6;

function tagOf(vmid: number, asid: number): number {
  return ((vmid & 0xffff) << 16) | (asid & 0xffff);
}

function pageOf(addr: number): number {
  return Math.floor(addr / PAGE_SIZE);
}

export class Iotlb {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  readonly ways: number;
  readonly sets: number;
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  private readonly setWords: number;
  private readonly slot: number;
  private readonly pageLoopLimit: number;

  /** Bytes of SharedArrayBuffer a table of this shape needs. */
  static bytes(capacity: number, ways = 8): number {
    const sets = capacity / ways;
    return (SETS_BASE + sets * (SET_HEADER_WORDS + ways * ENTRY_WORDS)) * 4;
  }

  /** A new, empty table in a fresh SharedArrayBuffer. */
  static create(capacity: number, ways = 8): Iotlb {
    return new Iotlb(capacity, ways);
  }

  /** Another view of a table created elsewhere (another thread passes `buffer`). */
  static attach(buffer: SharedArrayBuffer): Iotlb {
    return new Iotlb(buffer);
  }

  /**
   * `new Iotlb(capacity, ways?)` creates a table (same as Iotlb.create); `new Iotlb(buffer)`
   * attaches (same as Iotlb.attach). Throws RangeError on a shape that cannot be built: this is
   * configuration, not guest input.
   */
  constructor(capacityOrBuffer: number | SharedArrayBuffer, ways = 8) {
    if (typeof capacityOrBuffer === 'number') {
      const capacity = capacityOrBuffer;
      if (!Number.isInteger(ways) || ways < 1 || ways > 64) throw new RangeError(`IOTLB ways ${ways} out of range 1..64`);
      if (!Number.isInteger(capacity) || capacity < ways || capacity % ways !== 0 || capacity > 1 << 22) {
        throw new RangeError(`IOTLB capacity ${capacity} must be a multiple of ways (${ways}), at most ${1 << 22}`);
      }
      this.buffer = new SharedArrayBuffer(Iotlb.bytes(capacity, ways));
      this.i32 = new Int32Array(this.buffer);
      this.i32[H_MAGIC] = MAGIC;
      this.i32[H_VERSION] = VERSION;
      this.i32[H_CAPACITY] = capacity;
      this.i32[H_WAYS] = ways;
      this.i32[H_SETS] = capacity / ways;
    } else {
      this.buffer = capacityOrBuffer;
      this.i32 = new Int32Array(this.buffer);
      if (this.buffer.byteLength < HEADER_WORDS * 4 || this.i32[H_MAGIC] !== MAGIC || this.i32[H_VERSION] !== VERSION) {
        throw new TypeError('buffer is not an IOTLB of this version (was it made by Iotlb.create from the same build?)');
      }
    }
    this.f64 = new Float64Array(this.buffer);
    this.capacity = this.i32[H_CAPACITY] ?? 0;
    this.ways = this.i32[H_WAYS] ?? 0;
    this.sets = this.i32[H_SETS] ?? 0;
    this.setWords = SET_HEADER_WORDS + this.ways * ENTRY_WORDS;
    this.pageLoopLimit = Math.min(MAX_PAGE_LOOP, this.sets);
    this.slot = SLOTS_BASE + (Atomics.add(this.i32, H_NEXT_SLOT, 1) % SLOTS) * SLOT_WORDS;
  }

  // ---- locking ----

  private lock(at: number): void {
    if (Atomics.compareExchange(this.i32, at, LOCK_FREE, LOCK_HELD) !== LOCK_FREE) this.lockSlow(at);
  }

  private lockSlow(at: number): void {
    const a = this.i32;
    for (let i = 0; i < SPINS; i++) {
      if (Atomics.load(a, at) === LOCK_FREE && Atomics.compareExchange(a, at, LOCK_FREE, LOCK_HELD) === LOCK_FREE) return;
    }
    // The holder may have been descheduled (2 cores, more threads): sleep instead of burning its core.
    // The 1 ms timeout only bounds a lost wake-up; the unlock notifies.
    while (Atomics.exchange(a, at, LOCK_CONTENDED) !== LOCK_FREE) Atomics.wait(a, at, LOCK_CONTENDED, 1);
  }

  private unlock(at: number): void {
    if (Atomics.exchange(this.i32, at, LOCK_FREE) === LOCK_CONTENDED) Atomics.notify(this.i32, at, 1);
  }

  // ---- counters ----

  private count(counter: number, n: number): void {
    const at = this.slot + counter;
    const old = Atomics.add(this.i32, at, n) >>> 0;
    if (old + n > 0xffffffff) Atomics.add(this.i32, at + 1, 1);
  }

  private total(counter: number): number {
    let sum = 0;
    for (let s = 0; s < SLOTS; s++) {
      const at = SLOTS_BASE + s * SLOT_WORDS + counter;
      let hi: number;
      let lo: number;
      do {
        hi = Atomics.load(this.i32, at + 1);
        lo = Atomics.load(this.i32, at) >>> 0;
      } while (hi !== Atomics.load(this.i32, at + 1));
      sum += (hi >>> 0) * TWO32 + lo;
    }
    return sum;
  }

  // ---- geometry ----

  private setBase(pageLo: number, pageHi: number): number {
    // Low page bits pick the set (consecutive pages use consecutive sets); the high word is mixed in
    // so regions 2^32 pages apart do not all alias.
    const set = ((pageLo ^ Math.imul(pageHi, 0x9e3779b1)) >>> 0) % this.sets;
    return SETS_BASE + set * this.setWords;
  }

  private readEntry(e: number): IotlbEntry {
    const a = this.i32;
    const meta = a[e + E_META] ?? 0;
    const tag = a[e + E_TAG] ?? 0;
    const stage2Only = (meta & M_S2) !== 0;
    const f = (e + E_F64) >> 1;
    return {
      vmid: (tag >>> 16) & 0xffff,
      asid: stage2Only ? -1 : tag & 0xffff,
      stage2Only,
      page: (((a[e + E_PAGE_HI] ?? 0) >>> 0) * TWO32 + ((a[e + E_PAGE_LO] ?? 0) >>> 0)) * PAGE_SIZE,
      pa: this.f64[f] ?? 0,
      writable: (meta & M_WRITABLE) !== 0,
      ipa: this.f64[f + 1] ?? 0,
      leafDescAddr: this.f64[f + 2] ?? 0,
    };
  }

  // ---- lookups and fills ----

  /** The entry for `va` (a stage-2-only entry when asid is -1), refreshing its LRU position. */
  lookup(vmid: number, asid: number, va: number): IotlbEntry | undefined {
    const page = pageOf(va);
    const lo = page | 0;
    const hi = (page / TWO32) | 0;
    const s2 = asid < 0;
    const want = M_VALID | (s2 ? M_S2 : 0);
    const tag = tagOf(vmid, s2 ? 0 : asid);
    const base = this.setBase(lo, hi);
    const a = this.i32;
    let found: IotlbEntry | undefined;
    this.lock(base + S_LOCK);
    for (let w = 0, e = base + SET_HEADER_WORDS; w < this.ways; w++, e += ENTRY_WORDS) {
      if (((a[e + E_META] ?? 0) & (M_VALID | M_S2)) === want && a[e + E_TAG] === tag && a[e + E_PAGE_LO] === lo && a[e + E_PAGE_HI] === hi) {
        const clock = ((a[base + S_CLOCK] ?? 0) + 1) | 0;
        a[base + S_CLOCK] = clock;
        a[e + E_STAMP] = clock;
        found = this.readEntry(e);
        break;
      }
    }
    this.unlock(base + S_LOCK);
    this.count(found ? C_HITS : C_MISSES, 1);
    return found;
  }

  /** Caches a translation: replaces the entry with the same tag and page, else an invalid way, else the LRU way. */
  insert(entry: IotlbEntry): void {
    const s2 = entry.stage2Only || entry.asid < 0;
    if (!Number.isInteger(entry.vmid) || entry.vmid < 0 || entry.vmid > 0xffff) throw new RangeError(`IOTLB vmid ${entry.vmid} out of range 0..65535`);
    if (!s2 && (!Number.isInteger(entry.asid) || entry.asid > 0xffff)) throw new RangeError(`IOTLB asid ${entry.asid} out of range 0..65535`);
    const page = pageOf(entry.page);
    if (!(page >= 0 && page < 2 ** 52)) throw new RangeError(`IOTLB page address ${entry.page} out of range`);
    const lo = page | 0;
    const hi = (page / TWO32) | 0;
    const tag = tagOf(entry.vmid, s2 ? 0 : entry.asid);
    const want = M_VALID | (s2 ? M_S2 : 0);
    const base = this.setBase(lo, hi);
    const a = this.i32;
    this.lock(base + S_LOCK);
    const clock = ((a[base + S_CLOCK] ?? 0) + 1) | 0;
    a[base + S_CLOCK] = clock;
    let target = -1;
    let free = -1;
    let victim = -1;
    let victimAge = -1;
    for (let w = 0, e = base + SET_HEADER_WORDS; w < this.ways; w++, e += ENTRY_WORDS) {
      const meta = a[e + E_META] ?? 0;
      if ((meta & M_VALID) === 0) {
        if (free < 0) free = e;
        continue;
      }
      if ((meta & (M_VALID | M_S2)) === want && a[e + E_TAG] === tag && a[e + E_PAGE_LO] === lo && a[e + E_PAGE_HI] === hi) {
        target = e;
        break;
      }
      // Age by unsigned distance from the set clock, so the 32-bit clock may wrap.
      const age = (clock - (a[e + E_STAMP] ?? 0)) >>> 0;
      if (age > victimAge) {
        victimAge = age;
        victim = e;
      }
    }
    let evicted = false;
    let added = false;
    if (target < 0) {
      if (free >= 0) {
        target = free;
        added = true;
      } else {
        target = victim;
        evicted = true;
      }
    }
    a[target + E_META] = want | (entry.writable ? M_WRITABLE : 0);
    a[target + E_TAG] = tag;
    a[target + E_PAGE_LO] = lo;
    a[target + E_PAGE_HI] = hi;
    a[target + E_STAMP] = clock;
    const f = (target + E_F64) >> 1;
    this.f64[f] = entry.pa;
    this.f64[f + 1] = entry.ipa;
    this.f64[f + 2] = entry.leafDescAddr;
    this.unlock(base + S_LOCK);
    this.count(C_INSERTS, 1);
    if (evicted) this.count(C_EVICTIONS, 1);
    if (added) Atomics.add(this.i32, this.slot + C_SIZE, 1);
  }

  // ---- invalidation ----

  private dropped(n: number): number {
    if (n > 0) {
      this.count(C_INVALIDATED, n);
      Atomics.sub(this.i32, this.slot + C_SIZE, n);
    }
    return n;
  }

  /** Drops the non-stage-2 entries of one page (one ASID, or every ASID when asid < 0) in one set. */
  private dropPage(vmid: number, asid: number, lo: number, hi: number): number {
    const base = this.setBase(lo, hi);
    const a = this.i32;
    const anyAsid = asid < 0;
    const tag = tagOf(vmid, anyAsid ? 0 : asid);
    const vmidTag = tag >> 16;
    let n = 0;
    this.lock(base + S_LOCK);
    for (let w = 0, e = base + SET_HEADER_WORDS; w < this.ways; w++, e += ENTRY_WORDS) {
      if (((a[e + E_META] ?? 0) & (M_VALID | M_S2)) !== M_VALID || a[e + E_PAGE_LO] !== lo || a[e + E_PAGE_HI] !== hi) continue;
      const t = a[e + E_TAG] ?? 0;
      if (anyAsid ? t >> 16 === vmidTag : t === tag) {
        a[e + E_META] = 0;
        n++;
      }
    }
    this.unlock(base + S_LOCK);
    return n;
  }

  /**
   * Drops every entry in `scope`: visits each set once under its lock. first/last are inclusive
   * page numbers (VA pages, or IPA pages for SCOPE_IPA).
   */
  private scan(scope: number, vmid: number, asid: number, first: number, last: number): number {
    const a = this.i32;
    const vm = vmid & 0xffff;
    const tag = tagOf(vmid, asid);
    let n = 0;
    for (let s = 0, base = SETS_BASE; s < this.sets; s++, base += this.setWords) {
      this.lock(base + S_LOCK);
      for (let w = 0, e = base + SET_HEADER_WORDS; w < this.ways; w++, e += ENTRY_WORDS) {
        const meta = a[e + E_META] ?? 0;
        if ((meta & M_VALID) === 0) continue;
        const t = a[e + E_TAG] ?? 0;
        const s2 = (meta & M_S2) !== 0;
        let hit: boolean;
        if (scope === SCOPE_ALL) hit = true;
        else if (((t >>> 16) & 0xffff) !== vm) hit = false;
        else if (scope === SCOPE_VMID) hit = true;
        else if (scope === SCOPE_IPA) {
          // Stage-2-only entries by their input page (an IPA). Combined stage-1+2 entries are not
          // in scope: the architecture does not require it, and Linux follows a stage-2 change of
          // a nest parent with TLBI_NH_ALL, so a model that dropped them would hide a missing one.
          const p = ((a[e + E_PAGE_HI] ?? 0) >>> 0) * TWO32 + ((a[e + E_PAGE_LO] ?? 0) >>> 0);
          hit = s2 && p >= first && p <= last;
        } else if (s2) hit = false;
        else if (scope === SCOPE_STAGE1) hit = true;
        else if (scope === SCOPE_ASID) hit = t === tag;
        else {
          const p = ((a[e + E_PAGE_HI] ?? 0) >>> 0) * TWO32 + ((a[e + E_PAGE_LO] ?? 0) >>> 0);
          hit = p >= first && p <= last && (scope === SCOPE_VAA || t === tag);
        }
        if (hit) {
          a[e + E_META] = 0;
          n++;
        }
      }
      this.unlock(base + S_LOCK);
    }
    return this.dropped(n);
  }

  /**
   * Stage-1/nested entries of pages [firstPage, firstPage + pages) (page numbers, address >> 12),
   * for one ASID or, with asid < 0, every ASID (TLBI_NH_VAA). The VCMDQ workers call this directly
   * with the page number decoded from the command, skipping the address round trip.
   */
  invalidateVaPages(vmid: number, asid: number, firstPage: number, pages: number): number {
    if (pages <= this.pageLoopLimit) {
      let n = 0;
      for (let p = firstPage, end = firstPage + pages; p < end; p++) n += this.dropPage(vmid, asid, p | 0, (p / TWO32) | 0);
      return this.dropped(n);
    }
    return this.scan(asid < 0 ? SCOPE_VAA : SCOPE_VA, vmid, asid < 0 ? 0 : asid, firstPage, firstPage + pages - 1);
  }

  /** TLBI_NH_VA: pages overlapping [va, va + span) of one ASID in one VMID (span < 1 means the page of va). */
  invalidateVa(vmid: number, asid: number, va: number, span: number): number {
    const first = pageOf(va);
    return this.invalidateVaPages(vmid, asid, first, pageOf(va + Math.max(span, 1) - 1) - first + 1);
  }

  /** TLBI_NH_VAA: the range in every ASID of one VMID. */
  invalidateVaAllAsid(vmid: number, va: number, span: number): number {
    const first = pageOf(va);
    return this.invalidateVaPages(vmid, -1, first, pageOf(va + Math.max(span, 1) - 1) - first + 1);
  }

  /** TLBI_NH_ASID: every stage-1/nested entry of one ASID in one VMID. */
  invalidateAsid(vmid: number, asid: number): number {
    return this.scan(SCOPE_ASID, vmid, asid, 0, 0);
  }

  /** TLBI_NH_ALL: every stage-1/nested entry of the VMID (stage-2-only entries stay). */
  invalidateStage1(vmid: number): number {
    return this.scan(SCOPE_STAGE1, vmid, 0, 0, 0);
  }

  /** TLBI_S12_VMALL: every entry of the VMID. */
  invalidateVmid(vmid: number): number {
    return this.scan(SCOPE_VMID, vmid, 0, 0, 0);
  }

  /**
   * TLBI_S2_IPA: stage-2-only entries whose page overlaps [ipa, ipa + span); combined stage-1+2
   * entries stay (software invalidates them by VMID). A scan, as large spans are common here.
   */
  invalidateIpa(vmid: number, ipa: number, span: number): number {
    return this.scan(SCOPE_IPA, vmid, 0, pageOf(ipa), pageOf(ipa + Math.max(span, 1) - 1));
  }

  /** TLBI_S2_IPA by IPA page numbers [firstPage, firstPage + pages), as the command executor decodes them. */
  invalidateIpaPages(vmid: number, firstPage: number, pages: number): number {
    return this.scan(SCOPE_IPA, vmid, 0, firstPage, firstPage + Math.max(pages, 1) - 1);
  }

  /** TLBI_NSNH_ALL: everything. */
  invalidateAll(): number {
    return this.scan(SCOPE_ALL, 0, 0, 0, 0);
  }

  // ---- inspection ----

  /** Valid entries right now (the sum over every thread's inserts and drops). */
  get size(): number {
    let n = 0;
    for (let s = 0; s < SLOTS; s++) n += Atomics.load(this.i32, SLOTS_BASE + s * SLOT_WORDS + C_SIZE);
    return n;
  }

  /** Counters summed over every thread that attached the table. */
  stats(): IotlbStats {
    return {
      hits: this.total(C_HITS),
      misses: this.total(C_MISSES),
      evictions: this.total(C_EVICTIONS),
      invalidated: this.total(C_INVALIDATED),
      inserts: this.total(C_INSERTS),
    };
  }

  get hits(): number {
    return this.total(C_HITS);
  }

  get misses(): number {
    return this.total(C_MISSES);
  }

  get evictions(): number {
    return this.total(C_EVICTIONS);
  }

  get invalidated(): number {
    return this.total(C_INVALIDATED);
  }

  get inserts(): number {
    return this.total(C_INSERTS);
  }

  /** A snapshot of every valid entry, each read under its set's lock (tests, debugging). */
  entries(): IotlbEntry[] {
    const out: IotlbEntry[] = [];
    for (let s = 0, base = SETS_BASE; s < this.sets; s++, base += this.setWords) {
      this.lock(base + S_LOCK);
      for (let w = 0, e = base + SET_HEADER_WORDS; w < this.ways; w++, e += ENTRY_WORDS) {
        if (((this.i32[e + E_META] ?? 0) & M_VALID) !== 0) out.push(this.readEntry(e));
      }
      this.unlock(base + S_LOCK);
    }
    return out;
  }
}
