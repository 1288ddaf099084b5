/**
 * Sparse physical memory of 4 KiB frames, read and written 32 bits at a time (a 64-bit descriptor
 * is two little-endian halves, so no BigInt on the walk path). Used for guest RAM (stage-1 tables,
 * queues) and host memory (stage-2 tables). Addresses are integers below 2^52, exact in a double.
 */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;

export class PhysMemory {
  private readonly frames = new Map<number, Buffer>();
  /** Frames handed out by allocFrame, from `allocBase` upwards. */
  private nextFrame: number;

  constructor(allocBase: number) {
    this.nextFrame = Math.floor(allocBase / PAGE_SIZE);
  }

  private frame(addr: number, create: boolean): Buffer | undefined {
    const pfn = Math.floor(addr / PAGE_SIZE);
    let f = this.frames.get(pfn);
    if (!f && create) {
      f = Buffer.alloc(PAGE_SIZE);
      this.frames.set(pfn, f);
    }
    return f;
  }

  /** A zeroed frame for a new table; returns its physical address. */
  allocFrame(): number {
    const addr = this.nextFrame * PAGE_SIZE;
    this.nextFrame += 1;
    this.frame(addr, true);
    return addr;
  }

  read32(addr: number): number {
    const f = this.frame(addr, false);
    return f ? f.readUInt32LE(addr % PAGE_SIZE) : 0;
  }

  write32(addr: number, value: number): void {
    (this.frame(addr, true) as Buffer).writeUInt32LE(value >>> 0, addr % PAGE_SIZE);
  }

  /** Reads `len` bytes (may span frames); unbacked memory reads as zeroes. */
  read(addr: number, len: number): Buffer {
    const out = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const off = a % PAGE_SIZE;
      const n = Math.min(len - done, PAGE_SIZE - off);
      const f = this.frame(a, false);
      if (f) f.copy(out, done, off, off + n);
      done += n;
    }
    return out;
  }

  write(addr: number, data: Buffer): void {
    let done = 0;
    while (done < data.length) {
      const a = addr + done;
      const off = a % PAGE_SIZE;
      const n = Math.min(data.length - done, PAGE_SIZE - off);
      data.copy(this.frame(a, true) as Buffer, off, done, done + n);
      done += n;
    }
  }
}
