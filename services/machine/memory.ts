import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { VmmsimError } from '../runtime/errors.js';

/**
 * Physical memory as the simulated hardware sees it: guest RAM (stage-1 tables, context
 * descriptors, queues, device rings) and host memory (stream table, stage-2 tables). Addresses are
 * integers below 2^52, exact in a double. Reads of memory never written return zeroes.
 */
export { PAGE_SHIFT, PAGE_SIZE } from '../formats/page.js';
import { PAGE_SIZE } from '../formats/page.js';

export interface Memory {
  /** `len` bytes at `addr`; the buffer is only valid until the next call on this memory. */
  view(addr: number, len: number): Buffer;
  read32(addr: number): number;
  write32(addr: number, value: number): void;
  write(addr: number, data: Buffer): void;
  /** A copy of `len` bytes at `addr`. */
  read(addr: number, len: number): Buffer;
}

/** Hands out zeroed 4 KiB frames for tables, from `base` upwards: the owner's allocator. */
export class FrameAllocator {
  private next: number;

  constructor(base: number) {
    this.next = Math.ceil(base / PAGE_SIZE) * PAGE_SIZE;
  }

  alloc(): number {
    const addr = this.next;
    this.next += PAGE_SIZE;
    return addr;
  }
}

/** Memory private to one process: sparse 4 KiB frames in a Map. */
export class PhysMemory implements Memory {
  private readonly frames = new Map<number, Buffer>();

  private frame(addr: number, create: boolean): Buffer | undefined {
    const pfn = Math.floor(addr / PAGE_SIZE);
    let f = this.frames.get(pfn);
    if (!f && create) {
      f = Buffer.alloc(PAGE_SIZE);
      this.frames.set(pfn, f);
    }
    return f;
  }

  view(addr: number, len: number): Buffer {
    const off = addr % PAGE_SIZE;
    if (off + len <= PAGE_SIZE) {
      const f = this.frame(addr, false);
      return f ? f.subarray(off, off + len) : Buffer.alloc(len);
    }
    return this.read(addr, len);
  }

  read32(addr: number): number {
    const f = this.frame(addr, false);
    return f ? f.readUInt32LE(addr % PAGE_SIZE) : 0;
  }

  write32(addr: number, value: number): void {
    (this.frame(addr, true) as Buffer).writeUInt32LE(value >>> 0, addr % PAGE_SIZE);
  }

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

/**
 * Frames one process alone writes (a page-table owner's own tables) in memory other processes
 * read: this process reads them from a private copy and writes through to the shared memory, as a
 * CPU finds its own recent writes in its caches while the SMMU's walk reads memory. A walk of the
 * owner's tables then costs no pread per descriptor. Sound only while nothing else writes a frame
 * once it was read here; the SMMU sets no access or dirty flag in vmmsim (no HTTU is modelled).
 */
export class OwnedMemory implements Memory {
  private readonly copy = new PhysMemory();
  /** Frames the copy holds (read in, or written whole here). */
  private readonly held = new Set<number>();

  constructor(private readonly shared: Memory) {}

  /** Brings into the copy every frame of [addr, addr+len) it does not hold yet; `writing`: the range is about to be written. */
  private hold(addr: number, len: number, writing = false): void {
    const last = Math.floor((addr + Math.max(len, 1) - 1) / PAGE_SIZE);
    for (let pfn = Math.floor(addr / PAGE_SIZE); pfn <= last; pfn++) {
      if (this.held.has(pfn)) continue;
      const base = pfn * PAGE_SIZE;
      // A write covering the frame needs nothing read first.
      if (!(writing && addr <= base && addr + len >= base + PAGE_SIZE)) this.copy.write(base, this.shared.read(base, PAGE_SIZE));
      this.held.add(pfn);
    }
  }

  view(addr: number, len: number): Buffer {
    this.hold(addr, len);
    return this.copy.view(addr, len);
  }

  read32(addr: number): number {
    this.hold(addr, 4);
    return this.copy.read32(addr);
  }

  read(addr: number, len: number): Buffer {
    this.hold(addr, len);
    return this.copy.read(addr, len);
  }

  write32(addr: number, value: number): void {
    this.hold(addr, 4);
    this.copy.write32(addr, value);
    this.shared.write32(addr, value);
  }

  write(addr: number, data: Buffer): void {
    this.hold(addr, data.length, true);
    this.copy.write(addr, data);
    this.shared.write(addr, data);
  }
}

/**
 * Memory shared between processes: a sparse file (on tmpfs when the machine has one), as a VMM
 * backs guest RAM with a memfd that KVM, the VMM and DMA all reach. The owner creates (and
 * empties) it; readers open it as it is. Every access is a pread/pwrite on the shared page cache,
 * so a page-table entry the guest writes is what the SMMU's next walk reads.
 */
export class FileMemory implements Memory {
  private readonly fd: number;
  private readonly scratch = Buffer.alloc(64);

  constructor(
    readonly path: string,
    mode: 'create' | 'open',
  ) {
    this.fd = openMemoryFile(path, mode);
  }

  /** Empties the file through this mapping (a new run's state), as every holder sees. */
  clear(): void {
    ftruncateSync(this.fd, 0);
  }

  view(addr: number, len: number): Buffer {
    const buf = len <= this.scratch.length ? this.scratch.subarray(0, len) : Buffer.alloc(len);
    const n = readSync(this.fd, buf, 0, len, addr);
    if (n < len) buf.fill(0, n);
    return buf;
  }

  read32(addr: number): number {
    return this.view(addr, 4).readUInt32LE(0);
  }

  write32(addr: number, value: number): void {
    const b = this.scratch.subarray(0, 4);
    b.writeUInt32LE(value >>> 0, 0);
    writeSync(this.fd, b, 0, 4, addr);
  }

  read(addr: number, len: number): Buffer {
    return Buffer.from(this.view(addr, len));
  }

  write(addr: number, data: Buffer): void {
    writeSync(this.fd, data, 0, data.length, addr);
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * Opens a memory file without following a symbolic link at its name. `create` makes it exclusively
 * (mode 0600) and, when one is already there, empties it only if it is a regular file of this
 * user with no other name (a planted symlink fails with ELOOP, a hard link to another file is
 * removed and replaced). `open` takes an existing regular file as it is.
 */
function openMemoryFile(path: string, mode: 'create' | 'open'): number {
  try {
    return openMemoryFileAs(path, mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new VmmsimError('E_RAM_DIR', `${path} is a symbolic link: a memory file is never opened through one`);
    throw err;
  }
}

function openMemoryFileAs(path: string, mode: 'create' | 'open'): number {
  const rw = constants.O_RDWR | constants.O_NOFOLLOW;
  if (mode === 'create') {
    try {
      return openSync(path, rw | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  const fd = openSync(path, rw);
  const st = fstatSync(fd);
  const uid = process.getuid?.();
  const ours = st.isFile() && (uid === undefined || st.uid === uid);
  if (ours && (mode === 'open' || st.nlink === 1)) {
    if (mode === 'create') ftruncateSync(fd, 0);
    return fd;
  }
  closeSync(fd);
  if (!st.isFile() || !ours) throw new VmmsimError('E_RAM_DIR', `${path} is not a regular file of this user`);
  // Another name for some file: drop this name and make the file anew.
  unlinkSync(path);
  return openSync(path, rw | constants.O_CREAT | constants.O_EXCL, 0o600);
}
