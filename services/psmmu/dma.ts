import { nowNs } from '../common/clock.js';
import { DeviceRing, SlotState, type RingSlot } from '../common/device-ring.js';
import { PAGE_SIZE } from '../common/memory.js';
import type { Random } from '../common/random.js';
import type { AddressSpace } from './address-space.js';
import type { Translator } from './translate.js';

export interface DmaDevice {
  /** The guest's device number (which ring it reads). */
  index: number;
  vm: number;
  /** Physical StreamID. */
  sid: number;
}

export interface DmaSettings {
  /** Translations per second per device. */
  rate: number;
  /** How long a buggy or hostile device keeps touching a buffer after its unmap returned. */
  lingerMs: number;
  /** Share of accesses that go to such a buffer while one lingers. */
  lingerShare: number;
}

export interface DmaCounters {
  /** Accesses to a buffer whose dma_unmap had returned (a use-after-unmap attempt). */
  useAfterUnmap: number;
  /** Of those, the ones the SMMU translated from a stale IOTLB entry: the security window. */
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

/**
 * The devices behind one physical SMMU issuing DMA at a set rate. Each tick a device reads its
 * ring (the buffers its driver posted) and translates accesses into them; a device set to linger
 * remembers buffers whose unmap returned and keeps touching them for a while. The ring is read
 * before the accesses, so a buffer seen UNMAPPED had its unmap (and, in strict mode, its
 * invalidation) completed before any access to it.
 */
export class DmaEngine {
  readonly counters: DmaCounters = { useAfterUnmap: 0, staleTranslations: 0, staleDuringUnmap: 0, idle: 0 };
  private timer: NodeJS.Timeout | undefined;
  private startedNs = 0;
  private issued = 0;
  private readonly lingering = new Map<number, Map<number, Lingering>>();
  /** Last (seq, state) seen per device slot, to notice a buffer's unmap once. */
  private readonly seen = new Map<number, Map<number, { seq: number; state: number }>>();

  constructor(
    private readonly devices: readonly DmaDevice[],
    private readonly space: AddressSpace,
    private readonly translator: Translator,
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

  private tick(): void {
    const now = nowNs();
    // Accesses due per device since start, so a late timer catches up instead of losing rate.
    const due = Math.floor(((now - this.startedNs) / 1e9) * this.settings.rate) - this.issued;
    if (due <= 0) return;
    this.issued += due;
    for (const dev of this.devices) {
      const mem = this.space.guest(dev.vm);
      if (!mem) continue;
      const ring = DeviceRing.read(mem, dev.index);
      const posted = this.observe(dev, ring, now);
      const lingering = [...(this.lingering.get(dev.index)?.values() ?? [])].filter((l) => l.until > now);
      for (let i = 0; i < Math.min(due, 1000); i++) {
        if (lingering.length > 0 && this.random.next() < this.settings.lingerShare) {
          const l = lingering[this.random.int(lingering.length)] as Lingering;
          // The IOVA may live again by now: look at the ring right before the access. Nothing
          // else inserts IOTLB entries in between (this thread is the only walker), so a stale hit
          // on an IOVA whose every use is UNMAPPED here outlived an unmap that had returned.
          const life = lifeOf(DeviceRing.read(mem, dev.index), l.iova);
          const r = this.access(dev, l.iova, l.pages);
          if (life === SlotState.POSTED) continue;
          if (life === SlotState.RETIRED) {
            if (r.stale) this.counters.staleDuringUnmap += 1;
            continue;
          }
          this.counters.useAfterUnmap += 1;
          if (r.stale) this.counters.staleTranslations += 1;
          continue;
        }
        if (posted.length === 0) {
          this.counters.idle += 1;
          continue;
        }
        const b = posted[this.random.int(posted.length)] as RingSlot;
        const r = this.access(dev, b.iova, b.pages);
        if (r.stale) this.counters.staleDuringUnmap += 1;
      }
    }
  }

  private access(dev: DmaDevice, iova: number, pages: number): { stale: boolean } {
    const va = iova + this.random.int(Math.max(1, pages)) * PAGE_SIZE + this.random.int(PAGE_SIZE / 64) * 64;
    return this.translator.translate(dev.sid, va, this.random.next() < 0.5);
  }

  /** Notes buffers that became UNMAPPED since the last look; returns the POSTED ones. */
  private observe(dev: DmaDevice, ring: RingSlot[], now: number): RingSlot[] {
    let seen = this.seen.get(dev.index);
    if (!seen) {
      seen = new Map();
      this.seen.set(dev.index, seen);
    }
    let lingering = this.lingering.get(dev.index);
    if (!lingering) {
      lingering = new Map();
      this.lingering.set(dev.index, lingering);
    }
    const posted: RingSlot[] = [];
    ring.forEach((s, slot) => {
      if (s.state === SlotState.POSTED) posted.push(s);
      const before = seen.get(slot);
      if (s.state === SlotState.UNMAPPED && this.settings.lingerMs > 0 && (!before || before.seq !== s.seq || before.state !== SlotState.UNMAPPED)) {
        lingering.set(slot * 2 ** 32 + s.seq, { iova: s.iova, pages: s.pages, until: now + this.settings.lingerMs * 1e6 });
      }
      seen.set(slot, { seq: s.seq, state: s.state });
    });
    for (const [k, l] of lingering) if (l.until <= now) lingering.delete(k);
    return posted;
  }
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
