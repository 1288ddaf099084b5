import type { Memory } from '../../machine/memory.js';
import {
  DESC_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, avail, descAddr, encodeDescriptor, encodeIndirectTable, idxAdd, read16, used, vringNeedEvent, write16,
  type VirtqueueLayout,
} from '../../machine/virtqueue.js';

/** A buffer in guest RAM for one descriptor. */
export interface Buf {
  addr: number;
  len: number;
}

interface InFlight<T> {
  token: T;
  count: number;
  last: number;
}

/**
 * The driver's side of a split virtqueue (Linux drivers/virtio/virtio_ring.c, split ring): a free
 * list of descriptors, the available index it publishes with each buffer, and the used index it
 * has consumed. Chains come back by their head; the driver trusts only its own record of what it
 * put there (desc_extra), never the device's copy. A used element naming no chain in flight makes
 * the queue broken, as Linux's BAD_RING does.
 */
export class VirtqueueDriver<T> {
  /** Shadow of each free descriptor's successor (Linux's desc_extra[].next). */
  private readonly nextFree: number[];
  private freeHead = 0;
  private numFree: number;
  private availIdx = 0;
  private lastUsed = 0;
  /** Buffers added since the last kick decision. */
  private numAdded = 0;
  private readonly inflight = new Map<number, InFlight<T>>();
  broken = false;

  constructor(
    private readonly mem: Memory,
    readonly layout: VirtqueueLayout,
    /**
     * With VIRTIO_RING_F_INDIRECT_DESC: where the indirect table of the chain headed by a
     * descriptor goes and how many buffers that slot holds (Linux kmallocs one per request in
     * alloc_indirect_split; here each head has its slot, as the request buffers do). A longer
     * chain takes ring descriptors. Absent: every buffer takes a ring descriptor.
     */
    private readonly indirect?: { tableGpa: (head: number) => number; maxBuffers: number },
  ) {
    this.nextFree = Array.from({ length: layout.size }, (_, i) => i + 1);
    this.numFree = layout.size;
  }

  get free(): number {
    return this.numFree;
  }

  get inFlight(): number {
    return this.inflight.size;
  }

  /** The descriptor the next chain will start at (where its request buffer goes), if any is free. */
  nextHead(): number | undefined {
    return this.numFree > 0 ? this.freeHead : undefined;
  }

  /** Ring descriptors a chain of `buffers` takes: one when it goes in an indirect table. */
  descriptorsFor(buffers: number): number {
    return this.indirect && buffers > 1 && buffers <= this.indirect.maxBuffers ? 1 : buffers;
  }

  /**
   * virtqueue_add_sgs: device-readable buffers then device-writable ones as one chain, published
   * in the available ring at once (the index moves at add time, not at the kick). With indirect
   * tables (virtqueue_use_indirect: the feature, more than one buffer, a free descriptor) the chain
   * is written into the head's table and the ring gets one VRING_DESC_F_INDIRECT descriptor.
   * Returns the head, or undefined when the queue has not enough free descriptors (-ENOSPC).
   */
  add(out: readonly Buf[], inBufs: readonly Buf[], token: T): number | undefined {
    const bufs = [...out.map((b) => ({ ...b, write: false })), ...inBufs.map((b) => ({ ...b, write: true }))];
    const count = this.descriptorsFor(bufs.length);
    if (bufs.length === 0 || count > this.numFree || this.broken) return undefined;
    const l = this.layout;
    const head = this.freeHead;
    let i = head;
    let last = head;
    const flagsOf = (b: { write: boolean }, more: boolean): number => (b.write ? VRING_DESC_F_WRITE : 0) | (more ? VRING_DESC_F_NEXT : 0);
    if (count < bufs.length && this.indirect) {
      // The table's entries chain by their index in the table (0, 1, ...), not the ring's free list.
      const table = this.indirect.tableGpa(head);
      this.mem.write(table, encodeIndirectTable(bufs.map((b, n) => ({ addr: b.addr, len: b.len, flags: flagsOf(b, n < bufs.length - 1), next: n < bufs.length - 1 ? n + 1 : 0 }))));
      this.mem.write(descAddr(l, head), encodeDescriptor({ addr: table, len: bufs.length * DESC_SIZE, flags: VRING_DESC_F_INDIRECT, next: 0 }));
      i = this.nextFree[head] as number;
    } else {
      bufs.forEach((b, n) => {
        const more = n < bufs.length - 1;
        const next = this.nextFree[i] as number;
        this.mem.write(descAddr(l, i), encodeDescriptor({ addr: b.addr, len: b.len, flags: flagsOf(b, more), next: more ? next : 0 }));
        last = i;
        i = next;
      });
    }
    this.freeHead = i;
    this.numFree -= count;
    write16(this.mem, avail.ring(l, this.availIdx), head);
    this.availIdx = idxAdd(this.availIdx, 1);
    // The device must see the ring entry before the index that covers it (virtio_wmb).
    write16(this.mem, avail.idx(l), this.availIdx);
    this.numAdded += 1;
    this.inflight.set(head, { token, count, last });
    return head;
  }

  /**
   * virtqueue_kick_prepare with VIRTIO_RING_F_EVENT_IDX: true when the device asked to be told
   * about what was added since the last decision (its avail_event lies in that span).
   */
  kickPrepare(): boolean {
    const newIdx = this.availIdx;
    const oldIdx = idxAdd(newIdx, -this.numAdded);
    this.numAdded = 0;
    if (newIdx === oldIdx) return false;
    return vringNeedEvent(read16(this.mem, used.availEvent(this.layout)), newIdx, oldIdx);
  }

  /** virtqueue_get_buf: the next completed chain's token and the bytes the device wrote, if any. */
  getBuf(): { token: T; len: number } | undefined {
    if (this.broken) return undefined;
    const l = this.layout;
    if (read16(this.mem, used.idx(l)) === this.lastUsed) return undefined;
    const e = this.mem.view(used.elem(l, this.lastUsed), 8);
    const id = e.readUInt32LE(0);
    const len = e.readUInt32LE(4);
    this.lastUsed = idxAdd(this.lastUsed, 1);
    const f = this.inflight.get(id);
    if (!f) {
      this.broken = true;
      return undefined;
    }
    this.inflight.delete(id);
    this.nextFree[f.last] = this.freeHead;
    this.freeHead = id;
    this.numFree += f.count;
    return { token: f.token, len };
  }
}
