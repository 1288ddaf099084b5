import { existsSync, lstatSync } from 'node:fs';
import { GUEST_RAM_SIZE, guestRamFile } from './board.js';
import { FileMemory, type Memory } from './memory.js';
import type { MemoryRange__Output } from '../runtime/transport/link.js';

/** One open shared-memory file of this process, and which file (inode) it is. */
interface Mapped {
  mem: FileMemory;
  ino: number;
}

const mapped = new Map<string, Mapped>();

/**
 * This process's one mapping of a memory file several processes share (guest RAM, which the VMM
 * and the kernel map; a TCE table KVM and the VMM both map). A role's devices are rebuilt on every
 * configure, so mappings are kept per file for the life of the process: a file replaced on disk
 * (a new run's) is reopened, and files of finished runs whose folder is gone are closed.
 * `create` empties the file (creating it); `open` maps it as it is, and gives undefined while it
 * does not exist.
 */
export function mapSharedFile(path: string, mode: 'create'): FileMemory;
export function mapSharedFile(path: string, mode: 'open'): FileMemory | undefined;
export function mapSharedFile(path: string, mode: 'create' | 'open'): FileMemory | undefined {
  for (const [p, m] of mapped) {
    if (p !== path && !existsSync(p)) {
      m.mem.close();
      mapped.delete(p);
    }
  }
  const cur = mapped.get(path);
  const ino = inodeOf(path);
  if (cur && cur.ino === ino) {
    // The same file: every holder keeps its mapping, and sees it emptied when it is created anew.
    if (mode === 'create') cur.mem.clear();
    return cur.mem;
  }
  if (mode === 'open' && ino === undefined) return undefined;
  cur?.mem.close();
  const mem = new FileMemory(path, mode);
  mapped.set(path, { mem, ino: lstatSync(path).ino });
  return mem;
}

function inodeOf(path: string): number | undefined {
  try {
    return lstatSync(path).ino;
  } catch {
    return undefined;
  }
}

/**
 * A host process's mapping of VM `vm`'s RAM (a VMM maps its guest's memory, and so does the
 * kernel), for devices that read queues and write completions in place. The guest creates the
 * file, so it is opened on first use; undefined while it does not exist.
 */
export function mapGuestRam(ramDir: string, vm: number): Memory | undefined {
  return mapSharedFile(guestRamFile(ramDir, vm), 'open');
}

/**
 * VM `vm`'s RAM as a Memory that maps the file on first access (the guest creates it when it is
 * configured, after its VMM and KVM). Until it exists, reads see zeroes (memory never written) and
 * a write fails.
 */
export class GuestRam implements Memory {
  private mem: Memory | undefined;

  constructor(
    private readonly ramDir: string,
    private readonly vm: number,
  ) {}

  private get mapping(): Memory | undefined {
    this.mem ??= mapGuestRam(this.ramDir, this.vm);
    return this.mem;
  }

  view(addr: number, len: number): Buffer {
    return this.mapping?.view(addr, len) ?? Buffer.alloc(len);
  }

  read32(addr: number): number {
    return this.mapping?.read32(addr) ?? 0;
  }

  read(addr: number, len: number): Buffer {
    return this.mapping?.read(addr, len) ?? Buffer.alloc(len);
  }

  write32(addr: number, value: number): void {
    this.writable().write32(addr, value);
  }

  write(addr: number, data: Buffer): void {
    this.writable().write(addr, data);
  }

  private writable(): Memory {
    const m = this.mapping;
    if (!m) throw new Error(`guest RAM of VM ${this.vm} is not there yet`);
    return m;
  }
}

/**
 * Reads `len` bytes of VM `vm`'s RAM at `gpa` as the host kernel or the VMM would: from the guest
 * memory the exit carried when it covers the range, else through this process's mapping of guest
 * RAM. RAM never written, and addresses outside RAM, read as zeroes (QEMU's unassigned memory does
 * too).
 */
export function readGuestRam(ranges: readonly MemoryRange__Output[], ramDir: string, vm: number, gpa: number, len: number): Buffer {
  for (const r of ranges) {
    const start = Number(r.gpa);
    if (gpa >= start && gpa + len <= start + r.data.length) return Buffer.from(r.data.subarray(gpa - start, gpa - start + len));
  }
  if (gpa < 0 || gpa + len > GUEST_RAM_SIZE) return Buffer.alloc(len);
  return mapGuestRam(ramDir, vm)?.read(gpa, len) ?? Buffer.alloc(len);
}
