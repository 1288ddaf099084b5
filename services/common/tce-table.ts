import { existsSync, statSync, truncateSync } from 'node:fs';
import { FileMemory, PhysMemory, type Memory } from './memory.js';
import { DMA32_WINDOW_ENTRIES, TCE_ENTRY_SIZE } from './spapr-tce.js';

/**
 * The guest's view of one DMA window: one TCE per entry, as H_GET_TCE would read it back. QEMU
 * keeps it (spapr_tce_table.table); with in-kernel acceleration KVM owns it and QEMU maps the same
 * memory, so a hypercall KVM punted to QEMU sees what KVM wrote. The hardware table the device's
 * DMA walks is a different one, in the host IOMMU (vfio).
 */
export class TceTable {
  constructor(
    private readonly mem: Memory,
    readonly entries: number = DMA32_WINDOW_ENTRIES,
  ) {}

  /** A table private to its process (QEMU's own, without in-kernel acceleration). */
  static private(entries = DMA32_WINDOW_ENTRIES): TceTable {
    return new TceTable(new PhysMemory(), entries);
  }

  /**
   * The table in a file both KVM and the VMM map. `create` empties it (a new table, as
   * KVM_CREATE_SPAPR_TCE_64 allocates one zeroed); otherwise it must exist.
   */
  static shared(path: string, create: boolean): TceTable {
    return new TceTable(sharedMemory(path, create));
  }

  get(index: number): bigint {
    if (index < 0 || index >= this.entries) return 0n;
    return this.mem.view(index * TCE_ENTRY_SIZE, TCE_ENTRY_SIZE).readBigUInt64LE(0);
  }

  set(index: number, tce: bigint): void {
    if (index < 0 || index >= this.entries) return;
    const b = Buffer.alloc(TCE_ENTRY_SIZE);
    b.writeBigUInt64LE(BigInt.asUintN(64, tce));
    this.mem.write(index * TCE_ENTRY_SIZE, b);
  }
}

/**
 * One open file per path for the life of the process: a role's devices are rebuilt on every
 * configure and have no close hook, so a table reopened per run would leak its descriptor. A file
 * replaced on disk (another run's folder at the same path) is reopened.
 */
const openFiles = new Map<string, { mem: FileMemory; ino: number }>();

function sharedMemory(path: string, create: boolean): FileMemory {
  const cur = openFiles.get(path);
  const ino = existsSync(path) ? statSync(path).ino : undefined;
  if (cur && cur.ino === ino) {
    if (create) truncateSync(path, 0);
    return cur.mem;
  }
  cur?.mem.close();
  const mem = new FileMemory(path, create ? 'create' : 'open');
  openFiles.set(path, { mem, ino: statSync(path).ino });
  return mem;
}
