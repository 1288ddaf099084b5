import type { Memory } from './memory.js';
import { deviceRingIpa } from './board.js';

/**
 * The buffers a guest driver has handed its device, as a ring of 32-byte slots in guest RAM that
 * the device reads (like a NIC's descriptor ring): IOVA, size, and where the buffer is in its life.
 * A well-behaved device touches only POSTED buffers; the driver retires a buffer before unmapping
 * it and marks it UNMAPPED once dma_unmap returned, which is when any further access is a
 * use-after-unmap.
 *
 * Retiring is a handshake, as a NIC driver reaps only the descriptors its device completed: the
 * device claims the slots it is about to access (a word of the slot only it writes, then a second
 * look at the slot's state), and the driver, having marked a slot RETIRED, waits until no claim is
 * left on it before it unmaps the buffer. Either the device sees RETIRED and keeps off, or the
 * driver sees the claim and waits for the access to end: a well-behaved device never touches a
 * buffer after its driver took it back, however the processes interleave. (Without it a device
 * could read its ring, be overtaken by the driver's retire and unmap, and then walk a table that
 * no longer maps the buffer: F_TRANSLATION faults in strict mode.)
 */
export const RING_SLOTS = 128;
export const SLOT_SIZE = 32;
/** Offset of the device's claim word in a slot: non-zero while it accesses the slot's buffer. */
const CLAIM_OFFSET = 20;
/** How long a driver waits for a claim to go before it takes the buffer back anyway (a device that died). */
const CLAIM_WAIT_MS = 5000;

export const SlotState = { FREE: 0, POSTED: 1, RETIRED: 2, UNMAPPED: 3 } as const;

export interface RingSlot {
  /** Its index in the ring. */
  slot: number;
  iova: number;
  pages: number;
  state: number;
  /** Bumped on every post, so a reader can tell a reused slot from the buffer it saw before. */
  seq: number;
}

export class DeviceRing {
  private readonly base: number;
  private readonly seqs = new Array<number>(RING_SLOTS).fill(0);

  constructor(
    private readonly mem: Memory,
    device: number,
  ) {
    this.base = deviceRingIpa(device);
  }

  post(slot: number, iova: number, pages: number): void {
    const b = Buffer.alloc(SLOT_SIZE);
    b.writeUInt32LE(iova % 2 ** 32 >>> 0, 0);
    b.writeUInt32LE(Math.floor(iova / 2 ** 32) >>> 0, 4);
    b.writeUInt32LE(pages, 8);
    b.writeUInt32LE(SlotState.POSTED, 12);
    const seq = ((this.seqs[slot] ?? 0) + 1) >>> 0;
    this.seqs[slot] = seq;
    b.writeUInt32LE(seq, 16);
    // Not the claim word: only the device writes it.
    this.mem.write(this.base + slot * SLOT_SIZE, b.subarray(0, CLAIM_OFFSET));
  }

  setState(slot: number, state: number): void {
    this.mem.write32(this.base + slot * SLOT_SIZE + 12, state);
  }

  /**
   * The driver takes buffers back from the device: each slot becomes RETIRED, then the driver
   * waits until the device holds no claim on any of them (real time only: the modeled clock does
   * not move). Only then may it unmap them.
   */
  async retire(...slots: number[]): Promise<void> {
    for (const slot of slots) this.setState(slot, SlotState.RETIRED);
    const deadline = Date.now() + CLAIM_WAIT_MS;
    for (const slot of slots) {
      while (this.mem.read32(this.base + slot * SLOT_SIZE + CLAIM_OFFSET) !== 0 && Date.now() < deadline) {
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }

  /**
   * The device claims the slots it is about to access, then looks at them again: the ones still
   * POSTED with the same buffer (sequence number) stay claimed and are returned; the claims on the
   * others are dropped at once. Release the returned ones with release() after the accesses.
   */
  static claim(mem: Memory, device: number, posted: readonly RingSlot[]): RingSlot[] {
    const base = deviceRingIpa(device);
    for (const s of posted) mem.write32(base + s.slot * SLOT_SIZE + CLAIM_OFFSET, 1);
    const now = DeviceRing.read(mem, device);
    const kept: RingSlot[] = [];
    for (const s of posted) {
      const again = now[s.slot];
      if (again && again.state === SlotState.POSTED && again.seq === s.seq && again.iova === s.iova) kept.push(s);
      else mem.write32(base + s.slot * SLOT_SIZE + CLAIM_OFFSET, 0);
    }
    return kept;
  }

  /** The device is done with the buffers it claimed. */
  static release(mem: Memory, device: number, claimed: readonly RingSlot[]): void {
    const base = deviceRingIpa(device);
    for (const s of claimed) mem.write32(base + s.slot * SLOT_SIZE + CLAIM_OFFSET, 0);
  }

  /** The device's read of the whole ring (one DMA read of its 4 KiB). */
  static read(mem: Memory, device: number): RingSlot[] {
    const b = mem.read(deviceRingIpa(device), RING_SLOTS * SLOT_SIZE);
    const out: RingSlot[] = [];
    for (let i = 0; i < RING_SLOTS; i++) {
      const o = i * SLOT_SIZE;
      out.push({ slot: i, iova: b.readUInt32LE(o + 4) * 2 ** 32 + b.readUInt32LE(o), pages: b.readUInt32LE(o + 8), state: b.readUInt32LE(o + 12), seq: b.readUInt32LE(o + 16) });
    }
    return out;
  }
}
