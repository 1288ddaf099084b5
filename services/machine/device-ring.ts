import type { Memory } from './memory.js';
import { deviceRingIpa } from './board.js';

/**
 * The buffers a guest driver has handed its device, as a ring of 32-byte slots in guest RAM that
 * the device reads (like a NIC's descriptor ring): IOVA, size, and where the buffer is in its life.
 * A well-behaved device touches only POSTED buffers; the driver retires a buffer before unmapping
 * it and marks it UNMAPPED once dma_unmap returned, which is when any further access is a
 * use-after-unmap.
 */
export const RING_SLOTS = 128;
export const SLOT_SIZE = 32;

export const SlotState = { FREE: 0, POSTED: 1, RETIRED: 2, UNMAPPED: 3 } as const;

export interface RingSlot {
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
    this.mem.write(this.base + slot * SLOT_SIZE, b);
  }

  setState(slot: number, state: number): void {
    this.mem.write32(this.base + slot * SLOT_SIZE + 12, state);
  }

  /** The device's read of the whole ring (one DMA read of its 4 KiB). */
  static read(mem: Memory, device: number): RingSlot[] {
    const b = mem.read(deviceRingIpa(device), RING_SLOTS * SLOT_SIZE);
    const out: RingSlot[] = [];
    for (let i = 0; i < RING_SLOTS; i++) {
      const o = i * SLOT_SIZE;
      out.push({ iova: b.readUInt32LE(o + 4) * 2 ** 32 + b.readUInt32LE(o), pages: b.readUInt32LE(o + 8), state: b.readUInt32LE(o + 12), seq: b.readUInt32LE(o + 16) });
    }
    return out;
  }
}
