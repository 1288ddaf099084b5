import { steAddr } from '../machine/board.js';
import type { CostTable } from '../cost/steps.js';
import { PAGE_SIZE, type Memory } from '../machine/memory.js';
import { PageTable } from '../machine/pagetable.js';
import type { ConfigInvalidator } from '../machine/smmu-executor.js';
import { EVENT, STE_CONFIG, decodeCd, decodeSte } from '../formats/smmu/structures.js';
import type { ConfigInvalidations } from '../../worker-pool/config-invalidations.js';
import type { Iotlb } from '../../worker-pool/iotlb.js';
import { ExternalAbort } from './address-space.js';
import type { EventQueue } from './events.js';

/** A StreamID's configuration as the SMMU caches it (STE, and CD for stage 1). */
interface StreamConfig {
  config: number;
  vmid: number;
  s2ttb: number;
  asid: number;
  /** Stage-1 table root (an IPA when nested). */
  ttb0: number;
  /** The CD table (an IPA when nested) and log2 of its entries (STE S1CDMax). */
  cdTable: number;
  cdMax: number;
}

export interface Translation {
  /** Output address, or -1 when the access faulted (an event was recorded). */
  pa: number;
  hit: boolean;
  /** Memory accesses the lookup made (config, table walks, the ground-truth check not included). */
  reads: number;
  /** The hit came from an IOTLB entry whose leaf descriptor is no longer valid (or points elsewhere). */
  stale: boolean;
  /**
   * For a stage-1 or nested translation: the stage-1 leaf descriptor it came from and the page
   * (IPA) it gave, which a device's ATC keeps to be checked later (stillMaps).
   */
  leafDescAddr?: number;
  outPage?: number;
}

export interface TranslatorCounters {
  translations: number;
  hits: number;
  misses: number;
  walkAccesses: number;
  faults: number;
  staleHits: number;
  modeledNs: number;
}

/**
 * The SMMU's translation path: stream table and context descriptor (cached per StreamID until a
 * CFGI command drops them), IOTLB, and stage-1, stage-2 or nested walks where every stage-1 table
 * address is itself an IPA walked through stage 2. Every memory access is counted and costed.
 *
 * Because the tables are the real bytes their owners wrote, the SMMU also knows the truth: on an
 * IOTLB hit it reads the leaf descriptor the entry came from, and an entry whose descriptor no
 * longer maps the page is a stale translation (served only because no invalidation reached it yet).
 */
export class Translator implements ConfigInvalidator {
  private readonly configs = new Map<number, StreamConfig>();
  /** Configurations read only to account invalidations (contextOf), apart from the DMA path's cache. */
  private readonly accounting = new Map<number, StreamConfig & { asids: readonly number[] }>();
  readonly counters: TranslatorCounters = { translations: 0, hits: 0, misses: 0, walkAccesses: 0, faults: 0, staleHits: 0, modeledNs: 0 };

  constructor(
    private readonly psmmu: number,
    private readonly mem: Memory,
    private readonly iotlb: Iotlb,
    private readonly events: EventQueue,
    private readonly costs: CostTable,
    /** CFGIs the VCMDQ workers executed, applied before each use of the cache (none without VCMDQs). */
    private readonly configLog?: ConfigInvalidations,
  ) {}

  /**
   * A CFGI (through the command executor): drops the cached configuration of StreamIDs
   * [firstSid, firstSid + count), from the DMA path's cache and the accounting one alike.
   */
  invalidateConfig(firstSid: number, count: number): void {
    if (count === 1) {
      this.configs.delete(firstSid);
      this.accounting.delete(firstSid);
      return;
    }
    for (const cache of [this.configs, this.accounting]) {
      for (const sid of [...cache.keys()]) if (sid >= firstSid && sid - firstSid < count) cache.delete(sid);
    }
  }

  /** Applies the CFGIs the VCMDQ workers executed since the last look (one atomic load when none). */
  private syncConfig(): void {
    if (this.configLog?.pending) this.configLog.applyTo(this);
  }

  /** StreamIDs whose configuration is cached now: the DMA path's and the accounting one (tests, debugging). */
  cachedConfigs(): { dma: number[]; accounting: number[] } {
    this.syncConfig();
    return { dma: [...this.configs.keys()].sort((a, b) => a - b), accounting: [...this.accounting.keys()].sort((a, b) => a - b) };
  }

  private fault(type: number, sid: number, addr: number, stage2: boolean, reads: number): Translation {
    this.counters.faults += 1;
    this.events.record(type, sid, addr, stage2);
    this.account(reads);
    return { pa: -1, hit: false, reads, stale: false };
  }

  private account(reads: number): void {
    this.counters.walkAccesses += reads;
    this.counters.modeledNs += this.costs.of('smmu.iotlb_lookup') + reads * this.costs.of('smmu.walk_access');
  }

  private stage2(s2ttb: number, ipa: number): { pa: number; reads: number } {
    const w = PageTable.walk(this.mem, s2ttb, ipa);
    return { pa: w.pa, reads: w.reads };
  }

  /**
   * The VMID and ASID (-1: none) a StreamID's configuration carries, and the ASIDs of every valid
   * CD of its CD table (SubstreamID 0's and, with S1CDMax, its PASIDs': an SVA process's), or
   * undefined if it has none.
   */
  contextOf(sid: number): { vmid: number; asid: number; asids: readonly number[] } | undefined {
    this.syncConfig();
    const known = this.accounting.get(sid);
    if (known) return known;
    // Read for the accounting only: it must not warm the configuration cache the DMA path uses,
    // so it is kept apart (and dropped by the same CFGI commands).
    const cfg = this.configs.get(sid) ?? this.streamConfig(sid, { reads: 0 }, false);
    if (typeof cfg === 'number') return undefined;
    const ctx = { ...cfg, asids: this.cdAsids(cfg) };
    this.accounting.set(sid, ctx);
    return ctx;
  }

  /** The ASIDs of every valid CD in a stream's CD table (accounting only: no access is counted). */
  private cdAsids(cfg: StreamConfig): number[] {
    if (cfg.asid < 0) return [];
    const asids = [cfg.asid];
    for (let ssid = 1; ssid < 2 ** cfg.cdMax; ssid++) {
      let at = cfg.cdTable + ssid * 64;
      if (cfg.config === STE_CONFIG.NESTED) {
        const t = this.stage2(cfg.s2ttb, at);
        if (t.pa < 0) continue;
        at = t.pa;
      }
      try {
        const cd = decodeCd(this.mem.view(at, 64));
        if (cd.valid) asids.push(cd.asid);
      } catch (err) {
        if (!(err instanceof ExternalAbort)) throw err;
      }
    }
    return asids;
  }

  /** Reads the STE (and CD) of a StreamID; undefined with an event recorded when they are bad. */
  private streamConfig(sid: number, counter: { reads: number }, cache = true): StreamConfig | number {
    const cached = this.configs.get(sid);
    if (cached) return cached;
    counter.reads += 1;
    const ste = decodeSte(this.mem.view(steAddr(this.psmmu, sid), 64));
    if (!ste.valid) return EVENT.C_BAD_STE;
    const cfg: StreamConfig = { config: ste.config, vmid: ste.vmid, s2ttb: ste.s2ttb, asid: -1, ttb0: 0, cdTable: ste.s1ContextPtr, cdMax: Math.min(ste.s1CdMax ?? 0, 4) };
    if (ste.config === STE_CONFIG.S1 || ste.config === STE_CONFIG.NESTED) {
      let cdAddr = ste.s1ContextPtr;
      if (ste.config === STE_CONFIG.NESTED) {
        const t = this.stage2(ste.s2ttb, cdAddr);
        counter.reads += t.reads;
        if (t.pa < 0) return EVENT.C_BAD_CD;
        cdAddr = t.pa;
      }
      counter.reads += 1;
      const cd = decodeCd(this.mem.view(cdAddr, 64));
      if (!cd.valid) return EVENT.C_BAD_CD;
      cfg.asid = cd.asid;
      cfg.ttb0 = cd.ttb0;
    }
    if (cache) this.configs.set(sid, cfg);
    return cfg;
  }

  /**
   * Translates one access. With `verify` (the default) a hit is checked against ground truth, a
   * simulator's oracle read that real hardware does not make; benchmarks of the hardware path turn
   * it off.
   */
  translate(sid: number, va: number, write: boolean, verify = true): Translation {
    this.counters.translations += 1;
    this.syncConfig();
    const counter = { reads: 0 };
    let cfg: StreamConfig | number;
    try {
      cfg = this.streamConfig(sid, counter);
    } catch (err) {
      if (err instanceof ExternalAbort) return this.fault(EVENT.F_WALK_EABT, sid, va, false, counter.reads);
      throw err;
    }
    if (typeof cfg === 'number') return this.fault(cfg, sid, va, false, counter.reads);
    if (cfg.config === STE_CONFIG.ABORT) return this.fault(EVENT.F_STREAM_DISABLED, sid, va, false, counter.reads);
    if (cfg.config === STE_CONFIG.BYPASS) {
      this.account(counter.reads);
      return { pa: va, hit: false, reads: counter.reads, stale: false };
    }
    const stage2Only = cfg.config === STE_CONFIG.S2;
    const asid = stage2Only ? -1 : cfg.asid;
    const offset = va % PAGE_SIZE;
    const hit = this.iotlb.lookup(cfg.vmid, asid, va);
    if (hit) {
      if (write && !hit.writable) return this.fault(EVENT.F_PERMISSION, sid, va, false, counter.reads);
      this.counters.hits += 1;
      this.account(counter.reads);
      const stale = verify && !stage2Only && !this.stillMapped(hit.leafDescAddr, hit.ipa);
      if (stale) this.counters.staleHits += 1;
      return { pa: hit.pa + offset, hit: true, reads: counter.reads, stale, ...(stage2Only ? {} : { leafDescAddr: hit.leafDescAddr, outPage: hit.ipa }) };
    }
    this.counters.misses += 1;
    try {
      if (stage2Only) {
        const w = PageTable.walk(this.mem, cfg.s2ttb, va);
        counter.reads += w.reads;
        if (w.pa < 0) return this.fault(EVENT.F_TRANSLATION, sid, va, true, counter.reads);
        if (write && !w.writable) return this.fault(EVENT.F_PERMISSION, sid, va, true, counter.reads);
        const page = va - offset;
        this.iotlb.insert({ vmid: cfg.vmid, asid: 0, stage2Only: true, page, pa: w.pa - offset, writable: w.writable, ipa: page, leafDescAddr: w.leafDescAddr });
        this.account(counter.reads);
        return { pa: w.pa, hit: false, reads: counter.reads, stale: false };
      }
      let s2fault = false;
      const nested = cfg.config === STE_CONFIG.NESTED;
      const s1 = PageTable.walk(this.mem, cfg.ttb0, va, nested ? (ipa) => {
        const t = this.stage2(cfg.s2ttb, ipa);
        if (t.pa < 0) s2fault = true;
        return t;
      } : undefined);
      counter.reads += s1.reads;
      if (s1.pa < 0) return this.fault(EVENT.F_TRANSLATION, sid, va, s2fault, counter.reads);
      if (write && !s1.writable) return this.fault(EVENT.F_PERMISSION, sid, va, false, counter.reads);
      let pa = s1.pa;
      let writable = s1.writable;
      if (nested) {
        const out = PageTable.walk(this.mem, cfg.s2ttb, s1.pa);
        counter.reads += out.reads;
        if (out.pa < 0) return this.fault(EVENT.F_TRANSLATION, sid, va, true, counter.reads);
        if (write && !out.writable) return this.fault(EVENT.F_PERMISSION, sid, va, true, counter.reads);
        pa = out.pa;
        writable = writable && out.writable;
      }
      this.iotlb.insert({
        vmid: cfg.vmid, asid, stage2Only: false, page: va - offset, pa: pa - offset, writable,
        ipa: s1.pa - offset, leafDescAddr: s1.leafDescAddr,
      });
      this.account(counter.reads);
      return { pa, hit: false, reads: counter.reads, stale: false, leafDescAddr: s1.leafDescAddr, outPage: s1.pa - offset };
    } catch (err) {
      if (err instanceof ExternalAbort) return this.fault(EVENT.F_WALK_EABT, sid, va, false, counter.reads);
      throw err;
    }
  }

  /**
   * Ground truth for a translation a device cached (its ATC): the stage-1 leaf descriptor it came
   * from still maps to the same page. The simulator's oracle, as for the IOTLB's hits.
   */
  stillMaps(leafDescAddr: number, outPage: number): boolean {
    return this.stillMapped(leafDescAddr, outPage);
  }

  /**
   * Ground truth: the stage-1 leaf descriptor still maps the page to the same output (IPA). A page
   * descriptor must give the page itself; a block descriptor (bits[1:0] = 01) must cover it.
   */
  private stillMapped(leafDescAddr: number, outPage: number): boolean {
    try {
      const d = this.mem.view(leafDescAddr, 8);
      const lo = d.readUInt32LE(0);
      if ((lo & 1) === 0) return false;
      const oa = (d.readUInt32LE(4) & 0xffff) * 2 ** 32 + ((lo & ~(PAGE_SIZE - 1)) >>> 0);
      return (lo & 2) !== 0 ? oa === outPage : outPage >= oa && outPage < oa + 2 ** 30;
    } catch {
      return false;
    }
  }
}
