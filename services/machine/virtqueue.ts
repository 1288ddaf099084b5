/**
 * The split virtqueue of virtio 1.x (include/uapi/linux/virtio_ring.h), as it lies in guest RAM:
 *  - descriptor table: `size` entries of 16 bytes: le64 addr, le32 len, le16 flags, le16 next;
 *  - available ring (driver -> device): le16 flags, le16 idx, le16 ring[size], le16 used_event;
 *  - used ring (device -> driver): le16 flags, le16 idx, {le32 id, le32 len} ring[size],
 *    le16 avail_event.
 * Ring indexes are free-running 16-bit counters; a slot is idx % size. used_event / avail_event
 * are the VIRTIO_RING_F_EVENT_IDX fields, which QEMU offers and Linux accepts, so both sides
 * suppress notifications with vring_need_event(). QEMU offers VIRTIO_RING_F_INDIRECT_DESC too
 * (DEFINE_VIRTIO_COMMON_FEATURES, indirect_desc on), and Linux's virtqueue_add_split puts any
 * request of more than one buffer in an indirect table (virtqueue_use_indirect).
 *
 * This file holds the layout, the index arithmetic and the device's side of the ring (walking a
 * chain, publishing a used element); the driver's side is in services/guest/virtqueue.ts.
 */
import type { Memory } from './memory.js';
import type { VirtqueueLayout } from '../formats/virtio-ring.js';

export type { VirtqueueLayout };

export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const VRING_USED_F_NO_NOTIFY = 1;

export const DESC_SIZE = 16;
export const USED_ELEM_SIZE = 8;


export interface Descriptor {
  /** Guest-physical address (a value above 2^53 is not exact, and is refused as out of RAM anyway). */
  addr: number;
  len: number;
  flags: number;
  next: number;
}

export function encodeDescriptor(d: Descriptor): Buffer {
  const b = Buffer.alloc(DESC_SIZE);
  b.writeBigUInt64LE(BigInt(d.addr), 0);
  b.writeUInt32LE(d.len >>> 0, 8);
  b.writeUInt16LE(d.flags & 0xffff, 12);
  b.writeUInt16LE(d.next & 0xffff, 14);
  return b;
}

export function decodeDescriptor(b: Buffer, offset = 0): Descriptor {
  return { addr: Number(b.readBigUInt64LE(offset)), len: b.readUInt32LE(offset + 8), flags: b.readUInt16LE(offset + 12), next: b.readUInt16LE(offset + 14) };
}

/**
 * An indirect descriptor table (VIRTIO_RING_F_INDIRECT_DESC, virtio 1.x 2.7.5.3): the descriptors
 * back to back, 16 bytes each, in guest RAM; each `next` indexes the table itself. The ring holds
 * one descriptor with VRING_DESC_F_INDIRECT whose addr and len are the table's.
 */
export function encodeIndirectTable(descs: readonly Descriptor[]): Buffer {
  return Buffer.concat(descs.map((d) => encodeDescriptor(d)));
}

/** Bytes of each part for a queue of `size` descriptors (event-index fields included). */
export function descTableBytes(size: number): number {
  return DESC_SIZE * size;
}

export function availRingBytes(size: number): number {
  return 6 + 2 * size;
}

export function usedRingBytes(size: number): number {
  return 6 + USED_ELEM_SIZE * size;
}

/** idx + n on the 16-bit ring counter. */
export function idxAdd(idx: number, n: number): number {
  return (idx + n) & 0xffff;
}

/** How far `newer` is ahead of `older` on the 16-bit ring counter. */
export function idxDiff(newer: number, older: number): number {
  return (newer - older) & 0xffff;
}

export function ringSlot(idx: number, size: number): number {
  return idx % size;
}

/**
 * vring_need_event: with the counter moved from `oldIdx` to `newIdx`, has it passed `eventIdx`
 * (the index the other side asked to be told about)?
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

export const avail = {
  flags: (l: VirtqueueLayout): number => l.avail,
  idx: (l: VirtqueueLayout): number => l.avail + 2,
  ring: (l: VirtqueueLayout, idx: number): number => l.avail + 4 + 2 * ringSlot(idx, l.size),
  usedEvent: (l: VirtqueueLayout): number => l.avail + 4 + 2 * l.size,
};

export const used = {
  flags: (l: VirtqueueLayout): number => l.used,
  idx: (l: VirtqueueLayout): number => l.used + 2,
  elem: (l: VirtqueueLayout, idx: number): number => l.used + 4 + USED_ELEM_SIZE * ringSlot(idx, l.size),
  availEvent: (l: VirtqueueLayout): number => l.used + 4 + USED_ELEM_SIZE * l.size,
};

export function descAddr(l: VirtqueueLayout, i: number): number {
  return l.desc + DESC_SIZE * i;
}

export function read16(mem: Memory, addr: number): number {
  return mem.view(addr, 2).readUInt16LE(0);
}

export function write16(mem: Memory, addr: number, value: number): void {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value & 0xffff, 0);
  mem.write(addr, b);
}

/** One available chain as the device sees it: what it may read, and where it may write. */
export interface Chain {
  head: number;
  /** The start of the device-readable buffers, concatenated: at most the device's read limit. */
  readable: Buffer;
  /** Bytes of all the device-readable buffers (what the driver offered, read or not). */
  readableBytes: number;
  /** The device-writable buffers in chain order. */
  writable: { addr: number; len: number }[];
  writableBytes: number;
}

/** Why a ring cannot be used any more (QEMU's virtio_error: the device needs a reset). */
export type RingError = 'avail-idx-jump' | 'bad-head' | 'bad-next' | 'loop' | 'indirect' | 'read-after-write' | 'bad-address' | 'bad-request';

/**
 * Descriptors an indirect table may hold: QEMU maps at most VIRTQUEUE_MAX_SIZE (1024) buffers of a
 * chain (virtqueue_map_desc: "too many write descriptors in indirect table"). The table is read in
 * one piece, so this also bounds what a guest's table length makes the device read: 16 KiB.
 */
export const MAX_INDIRECT_DESCS = 1024;

/**
 * The device's side of a split ring (QEMU's virtqueue_pop / virtqueue_push, vhost's
 * vhost_get_vq_desc / vhost_add_used): it walks each new chain from the descriptors in guest RAM,
 * trusting nothing, and publishes used elements. A malformed ring marks the queue broken; a broken
 * queue is never touched again, as a device in NEEDS_RESET.
 */
export class VirtqueueDevice {
  private lastAvail = 0;
  private usedIdx = 0;
  broken: RingError | undefined;

  constructor(
    private readonly mem: Memory,
    readonly layout: VirtqueueLayout,
    /** Guest RAM ends here: a buffer beyond it cannot be mapped. */
    private readonly ramBytes: number,
    /**
     * The most device-readable bytes copied out of a chain: what the device parses (QEMU's
     * iov_to_buf of the request struct). A descriptor's length is the guest's to choose, up to
     * 4 GiB, so copying whole buffers would let a guest make the host allocate without bound.
     */
    private readonly readLimit = 4096,
  ) {}

  /** The next available chain, undefined when there is none (or the ring is broken). */
  pop(): Chain | undefined {
    if (this.broken) return undefined;
    const l = this.layout;
    const availIdx = read16(this.mem, avail.idx(l));
    const pending = idxDiff(availIdx, this.lastAvail);
    if (pending === 0) return undefined;
    if (pending > l.size) return this.fail('avail-idx-jump');
    const head = read16(this.mem, avail.ring(l, this.lastAvail));
    if (head >= l.size) return this.fail('bad-head');
    this.lastAvail = idxAdd(this.lastAvail, 1);
    const readable: Buffer[] = [];
    let readableBytes = 0;
    const writable: { addr: number; len: number }[] = [];
    let writableBytes = 0;
    // Where the chain's descriptors come from: the ring's table, or (virtqueue_split_pop) the
    // indirect table the head points at, read whole, whose `next` fields index it.
    let table: Buffer | undefined;
    let max = l.size;
    let d = decodeDescriptor(this.mem.view(descAddr(l, head), DESC_SIZE));
    if (d.flags & VRING_DESC_F_INDIRECT) {
      // QEMU: "Invalid size for indirect buffer table", and at most 1024 buffers a chain.
      if (d.len === 0 || d.len % DESC_SIZE !== 0 || d.len / DESC_SIZE > MAX_INDIRECT_DESCS) return this.fail('indirect');
      if (d.addr + d.len > this.ramBytes) return this.fail('bad-address');
      table = this.mem.read(d.addr, d.len);
      max = d.len / DESC_SIZE;
      d = decodeDescriptor(table, 0);
    }
    for (let seen = 0; ; seen++) {
      if (seen >= max) return this.fail('loop');
      // Only the head may point at a table: vhost refuses a table inside a table ("Nested indirect
      // descriptor"), and no driver chains one after a buffer.
      if (d.flags & VRING_DESC_F_INDIRECT) return this.fail('indirect');
      if (d.addr + d.len > this.ramBytes) return this.fail('bad-address');
      if (d.flags & VRING_DESC_F_WRITE) {
        writable.push({ addr: d.addr, len: d.len });
        writableBytes += d.len;
      } else {
        if (writable.length > 0) return this.fail('read-after-write');
        const n = Math.min(d.len, Math.max(0, this.readLimit - readableBytes));
        if (n > 0) readable.push(this.mem.read(d.addr, n));
        readableBytes += d.len;
      }
      if (!(d.flags & VRING_DESC_F_NEXT)) break;
      if (d.next >= max) return this.fail('bad-next');
      d = table ? decodeDescriptor(table, d.next * DESC_SIZE) : decodeDescriptor(this.mem.view(descAddr(l, d.next), DESC_SIZE));
    }
    return { head, readable: Buffer.concat(readable), readableBytes, writable, writableBytes };
  }

  /** Writes `data` at the start of the chain's writable buffers; returns the bytes written. */
  writeBack(chain: Chain, data: Buffer): number {
    let done = 0;
    for (const w of chain.writable) {
      if (done >= data.length) break;
      const n = Math.min(w.len, data.length - done);
      this.mem.write(w.addr, data.subarray(done, done + n));
      done += n;
    }
    return done;
  }

  /** Publishes a used element: the element first, then the index (the driver polls the index). */
  push(head: number, len: number): void {
    const l = this.layout;
    const e = Buffer.alloc(USED_ELEM_SIZE);
    e.writeUInt32LE(head >>> 0, 0);
    e.writeUInt32LE(len >>> 0, 4);
    this.mem.write(used.elem(l, this.usedIdx), e);
    this.usedIdx = idxAdd(this.usedIdx, 1);
    write16(this.mem, used.idx(l), this.usedIdx);
  }

  get usedIndex(): number {
    return this.usedIdx;
  }

  /**
   * After a pass over the ring: ask to be kicked again as soon as the driver adds anything
   * (avail_event = the next index the device will read), as vhost and QEMU do with EVENT_IDX.
   */
  armKick(): void {
    write16(this.mem, used.availEvent(this.layout), this.lastAvail);
  }

  /** With the used index moved from `oldUsed`, does the driver want an interrupt (used_event)? */
  wantsInterrupt(oldUsed: number): boolean {
    return vringNeedEvent(read16(this.mem, avail.usedEvent(this.layout)), this.usedIdx, oldUsed);
  }

  /** The device gave up on the ring (a chain it cannot serve): nothing more is read or written. */
  fail(why: RingError): undefined {
    this.broken = why;
    return undefined;
  }
}
