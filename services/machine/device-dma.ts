import { nowNs } from '../runtime/clock.js';
import { DeviceRing, SlotState, type RingSlot } from './device-ring.js';
import { PAGE_SIZE, type Memory } from './memory.js';
import type { Random } from './random.js';

/** What a device's DMA goes through: its IOMMU's translation of one access (a pSMMU, or a VMM's emulated vIOMMU). */
export interface DmaTranslator {
  /**
   * One access (or, for a device with ATS, a Translation Request). `leafDescAddr` and `outPage`,
   * when given, name the stage-1 leaf the translation came from, for a device's ATC to keep.
   */
  translate(sid: number, iova: number, write: boolean): { stale: boolean; pa?: number; leafDescAddr?: number; outPage?: number };
  /** Ground truth for a cached translation: its leaf still maps `outPage` (the simulator's oracle). */
  stillMaps?(leafDescAddr: number, outPage: number): boolean;
}

/** Where ATC_INVs reach the devices (worker-pool/atc-invalidations.ts): read before each burst of accesses. */
export interface AtcLog {
  readonly pending: boolean;
  applyTo(drop: (sid: number, firstPage: number, pages: number) => void): number;
}

/**
 * Entries of a device's ATC. A PCIe device's ATC is small next to the SMMU's IOTLB; no device's
 * figure is modelled here (an assumption, like a NIC's few dozen to few hundred).
 */
export const ATC_ENTRIES = 64;

interface AtcEntry {
  leafDescAddr: number;
  outPage: number;
}

/**
 * A device's Address Translation Cache (PCIe ATS): translations the device asked the SMMU for
 * (Translation Requests) and keeps, by 4 KiB page, least recently used out first. Its accesses
 * hit here without the SMMU; only an ATC_INV the SMMU forwards (an Invalidate Request) drops them.
 */
export class Atc {
  private readonly entries = new Map<number, AtcEntry>();

  constructor(private readonly capacity = ATC_ENTRIES) {}

  lookup(page: number): AtcEntry | undefined {
    const e = this.entries.get(page);
    if (e) {
      this.entries.delete(page);
      this.entries.set(page, e);
    }
    return e;
  }

  insert(page: number, e: AtcEntry): void {
    this.entries.delete(page);
    this.entries.set(page, e);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value as number);
  }

  /** Drops the entries of pages [firstPage, firstPage + pages); returns how many. */
  invalidate(firstPage: number, pages: number): number {
    let n = 0;
    for (const page of [...this.entries.keys()]) {
      if (page >= firstPage && page - firstPage < pages) {
        this.entries.delete(page);
        n += 1;
      }
    }
    return n;
  }

  get size(): number {
    return this.entries.size;
  }
}

export interface DmaDevice {
  /** The guest's device number (which ring it reads). */
  index: number;
  /** The StreamID its IOMMU knows it by (the pSID behind a pSMMU, the vSID behind an emulated vSMMU). */
  sid: number;
  /** The guest RAM holding its ring, or undefined while it is not mapped yet. */
  ram(): Memory | undefined;
  iommu: DmaTranslator;
}

export interface DmaSettings {
  /** Accesses per second per device. */
  rate: number;
  /** How long a buggy or hostile device keeps touching a buffer after its unmap returned. */
  lingerMs: number;
  /** Share of accesses that go to such a buffer while one lingers. */
  lingerShare: number;
  /** ATS: each device keeps an ATC, and ATC_INVs reach it through this log (absent: no ATS). */
  atcLog?: AtcLog;
}

export interface DmaCounters {
  /** Accesses to a buffer whose dma_unmap had returned (a use-after-unmap attempt). */
  useAfterUnmap: number;
  /** Of those, the ones the IOMMU translated from a stale IOTLB entry: the security window. */
  staleTranslations: number;
  /** Stale hits on buffers still being unmapped (the device raced the driver's retire). */
  staleDuringUnmap: number;
  /** Ticks where a device had nothing posted. */
  idle: number;
  /** ATS: accesses served from the device's ATC (no SMMU translation). */
  atcHits: number;
  /** Of staleTranslations, those served from a stale ATC entry. */
  atcStaleTranslations: number;
  /** ATS: ATC_INV requests the devices received, and the ATC entries they dropped. */
  atcInvalidations: number;
  atcEntriesInvalidated: number;
}

interface Lingering {
  iova: number;
  pages: number;
  until: number;
}

/** Where an access's translation came from: up to date, or a stale entry of the SMMU's IOTLB or the device's ATC. */
const Served = { FRESH: 0, STALE_IOTLB: 1, STALE_ATC: 2 } as const;
type Served = (typeof Served)[keyof typeof Served];

const TICK_MS = 1;
/** At most this many accesses per device per tick, so a stalled timer does not catch up in one burst. */
const MAX_PER_TICK = 1000;

/**
 * Devices doing DMA at a set rate through their IOMMU: the assigned devices behind a physical SMMU,
 * or the device models of a VMM behind its emulated vIOMMU. Each tick a device reads its ring in
 * guest RAM (the buffers its driver posted) and translates accesses into them; a device set to
 * linger remembers buffers whose unmap returned and keeps touching them for a while. The ring is
 * read before the accesses, so a buffer seen UNMAPPED had its unmap (and, in strict mode, its
 * invalidation) completed before any access to it; the POSTED buffers a tick accesses are claimed
 * for the tick, so the driver cannot take one back (and unmap it) while the device still uses it.
 */
/**
 * The counters every translator of device DMA reports under these names (a pSMMU, a VMM's emulated
 * vSMMU): a run's DMA is their sum over every process that translates (results.json `dma`).
 */
export const TRANSLATION_COUNTERS = ['translations', 'iotlbHits', 'faults', 'staleTranslations', 'useAfterUnmap', 'staleDuringUnmap', 'walkAccesses', 'dmaModeledNs', 'atcHits', 'atcStaleTranslations'] as const;
export type TranslationCounter = (typeof TRANSLATION_COUNTERS)[number];

export class DeviceDma {
  readonly counters: DmaCounters = { useAfterUnmap: 0, staleTranslations: 0, staleDuringUnmap: 0, idle: 0, atcHits: 0, atcStaleTranslations: 0, atcInvalidations: 0, atcEntriesInvalidated: 0 };
  /** ATS: each device's ATC, by device number. */
  private readonly atcs = new Map<number, Atc>();
  private timer: NodeJS.Timeout | undefined;
  private startedNs = 0;
  private issued = 0;
  /** Per device: buffers whose unmap it saw, by slot and sequence number. */
  private readonly lingering = new Map<number, Map<number, Lingering>>();
  /** Per device and slot: the (seq, state) last seen, to notice each unmap once. */
  private readonly seen = new Map<number, Map<number, { seq: number; state: number }>>();

  constructor(
    private readonly devices: readonly DmaDevice[],
    private readonly settings: DmaSettings,
    private readonly random: Random,
  ) {
    if (settings.atcLog) for (const d of devices) this.atcs.set(d.index, new Atc());
  }

  start(): void {
    if (this.timer || this.settings.rate <= 0 || this.devices.length === 0) return;
    this.startedNs = nowNs();
    this.issued = 0;
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Issues the accesses due since the start (a late timer catches up instead of losing rate). */
  tick(now = nowNs()): void {
    const due = Math.floor(((now - this.startedNs) / 1e9) * this.settings.rate) - this.issued;
    if (due <= 0) return;
    this.issued += due;
    for (const dev of this.devices) this.run(dev, Math.min(due, MAX_PER_TICK), now);
  }

  /** The ATC_INVs executed since the last look reach the devices' ATCs (sid -1: every device). */
  private applyAtcInvalidations(): void {
    const log = this.settings.atcLog;
    if (!log?.pending) return;
    this.counters.atcInvalidations += log.applyTo((sid, firstPage, pages) => {
      for (const d of this.devices) {
        if (sid >= 0 && d.sid !== sid) continue;
        this.counters.atcEntriesInvalidated += this.atcs.get(d.index)?.invalidate(firstPage, pages) ?? 0;
      }
    });
  }

  private run(dev: DmaDevice, accesses: number, now: number): void {
    const ram = dev.ram();
    if (!ram) return;
    this.applyAtcInvalidations();
    // The buffers the driver posted, claimed for this tick's accesses (see DeviceRing.claim).
    const posted = DeviceRing.claim(ram, dev.index, this.observe(dev, DeviceRing.read(ram, dev.index), now));
    try {
      this.accesses(dev, ram, posted, accesses, now);
    } finally {
      DeviceRing.release(ram, dev.index, posted);
    }
  }

  private accesses(dev: DmaDevice, ram: Memory, posted: readonly RingSlot[], accesses: number, now: number): void {
    const lingering = [...(this.lingering.get(dev.index)?.values() ?? [])].filter((l) => l.until > now);
    for (let i = 0; i < accesses; i++) {
      if (lingering.length > 0 && this.random.next() < this.settings.lingerShare) {
        const l = lingering[this.random.int(lingering.length)] as Lingering;
        // The IOVA may be live again by now: look at the ring right before the access. Nothing
        // else inserts IOTLB entries in between (this thread is the only walker), so a stale hit
        // on an IOVA whose every use is UNMAPPED here outlived an unmap that had returned.
        const life = lifeOf(DeviceRing.read(ram, dev.index), l.iova);
        const served = this.access(dev, l.iova, l.pages);
        const stale = served !== Served.FRESH;
        if (life === SlotState.POSTED) continue;
        if (life === SlotState.RETIRED) {
          if (stale) this.counters.staleDuringUnmap += 1;
          continue;
        }
        this.counters.useAfterUnmap += 1;
        if (stale) this.counters.staleTranslations += 1;
        if (served === Served.STALE_ATC) this.counters.atcStaleTranslations += 1;
        continue;
      }
      if (posted.length === 0) {
        this.counters.idle += 1;
        continue;
      }
      const b = posted[this.random.int(posted.length)] as RingSlot;
      if (this.access(dev, b.iova, b.pages) !== Served.FRESH) this.counters.staleDuringUnmap += 1;
    }
  }

  /**
   * One access somewhere in the buffer, a read or a write, and where its translation came from. With
   * ATS the device looks in its ATC first; on a miss it asks the SMMU (a Translation Request) and
   * keeps the answer.
   */
  private access(dev: DmaDevice, iova: number, pages: number): Served {
    const va = iova + this.random.int(Math.max(1, pages)) * PAGE_SIZE + this.random.int(PAGE_SIZE / 64) * 64;
    const write = this.random.next() < 0.5;
    const atc = this.atcs.get(dev.index);
    if (atc) {
      const page = Math.floor(va / PAGE_SIZE);
      const e = atc.lookup(page);
      if (e) {
        this.counters.atcHits += 1;
        return dev.iommu.stillMaps && !dev.iommu.stillMaps(e.leafDescAddr, e.outPage) ? Served.STALE_ATC : Served.FRESH;
      }
      const t = dev.iommu.translate(dev.sid, va, write);
      if ((t.pa ?? -1) >= 0 && t.leafDescAddr !== undefined && t.outPage !== undefined) atc.insert(page, { leafDescAddr: t.leafDescAddr, outPage: t.outPage });
      return t.stale ? Served.STALE_IOTLB : Served.FRESH;
    }
    return dev.iommu.translate(dev.sid, va, write).stale ? Served.STALE_IOTLB : Served.FRESH;
  }

  /** Notes buffers that became UNMAPPED since the last look; returns the POSTED ones. */
  private observe(dev: DmaDevice, ring: readonly RingSlot[], now: number): RingSlot[] {
    const seen = mapOf(this.seen, dev.index);
    const lingering = mapOf(this.lingering, dev.index);
    const posted: RingSlot[] = [];
    ring.forEach((s, slot) => {
      if (s.state === SlotState.POSTED) posted.push(s);
      const before = seen.get(slot);
      const newlyUnmapped = s.state === SlotState.UNMAPPED && (!before || before.seq !== s.seq || before.state !== SlotState.UNMAPPED);
      if (newlyUnmapped && this.settings.lingerMs > 0) {
        lingering.set(slot * 2 ** 32 + s.seq, { iova: s.iova, pages: s.pages, until: now + this.settings.lingerMs * 1e6 });
      }
      seen.set(slot, { seq: s.seq, state: s.state });
    });
    for (const [k, l] of lingering) if (l.until <= now) lingering.delete(k);
    return posted;
  }
}

function mapOf<V>(outer: Map<number, Map<number, V>>, key: number): Map<number, V> {
  let m = outer.get(key);
  if (!m) {
    m = new Map();
    outer.set(key, m);
  }
  return m;
}

/** The most alive state any slot gives an IOVA: POSTED over RETIRED over UNMAPPED. */
function lifeOf(ring: readonly RingSlot[], iova: number): number {
  let best: number = SlotState.UNMAPPED;
  for (const s of ring) {
    if (s.iova !== iova) continue;
    if (s.state === SlotState.POSTED) return SlotState.POSTED;
    if (s.state === SlotState.RETIRED) best = SlotState.RETIRED;
  }
  return best;
}
