import { nowNs } from '../runtime/clock.js';
import { DeviceRing, SlotState, type RingSlot } from './device-ring.js';
import { PAGE_SIZE, type Memory } from './memory.js';
import type { Random } from './random.js';

/** What a device's DMA goes through: its IOMMU's translation of one access (a pSMMU, or a VMM's emulated vIOMMU). */
export interface DmaTranslator {
  translate(sid: number, iova: number, write: boolean): { stale: boolean };
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
}

interface Lingering {
  iova: number;
  pages: number;
  until: number;
}

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
export const TRANSLATION_COUNTERS = ['translations', 'iotlbHits', 'faults', 'staleTranslations', 'useAfterUnmap', 'staleDuringUnmap', 'walkAccesses', 'dmaModeledNs'] as const;
export type TranslationCounter = (typeof TRANSLATION_COUNTERS)[number];

export class DeviceDma {
  readonly counters: DmaCounters = { useAfterUnmap: 0, staleTranslations: 0, staleDuringUnmap: 0, idle: 0 };
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
  ) {}

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

  private run(dev: DmaDevice, accesses: number, now: number): void {
    const ram = dev.ram();
    if (!ram) return;
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
        const stale = this.access(dev, l.iova, l.pages);
        if (life === SlotState.POSTED) continue;
        if (life === SlotState.RETIRED) {
          if (stale) this.counters.staleDuringUnmap += 1;
          continue;
        }
        this.counters.useAfterUnmap += 1;
        if (stale) this.counters.staleTranslations += 1;
        continue;
      }
      if (posted.length === 0) {
        this.counters.idle += 1;
        continue;
      }
      const b = posted[this.random.int(posted.length)] as RingSlot;
      if (this.access(dev, b.iova, b.pages)) this.counters.staleDuringUnmap += 1;
    }
  }

  /** One access somewhere in the buffer, a read or a write; true if it was served from a stale entry. */
  private access(dev: DmaDevice, iova: number, pages: number): boolean {
    const va = iova + this.random.int(Math.max(1, pages)) * PAGE_SIZE + this.random.int(PAGE_SIZE / 64) * 64;
    return dev.iommu.translate(dev.sid, va, this.random.next() < 0.5).stale;
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
