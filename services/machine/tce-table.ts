import { mapSharedFile } from './guest-ram.js';
import { PhysMemory, type Memory } from './memory.js';
import { join } from 'node:path';
import { DMA32_WINDOW, DMA32_WINDOW_ENTRIES, TCE_ENTRY_SIZE, tcePageSize, type TceWindow } from '../formats/spapr-tce.js';
import { GUEST_RAM_SIZE } from './board.js';

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

  /** A new, zeroed table of `entries` TCEs in a file both KVM and the VMM map (KVM_CREATE_SPAPR_TCE_64). */
  static create(path: string, entries = DMA32_WINDOW_ENTRIES): TceTable {
    return new TceTable(mapSharedFile(path, 'create'), entries);
  }

  /** The table another process created in `path`; undefined while there is none. */
  static open(path: string, entries = DMA32_WINDOW_ENTRIES): TceTable | undefined {
    const mem = mapSharedFile(path, 'open');
    return mem ? new TceTable(mem, entries) : undefined;
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

/** True when the TCE's page (of window `w`) lies in the VM's RAM (its memslot, all preregistered for VFIO). */
export function tceInRam(tce: bigint, w: TceWindow = DMA32_WINDOW): boolean {
  return (tce & ~0xfffn) + BigInt(tcePageSize(w)) <= BigInt(GUEST_RAM_SIZE);
}

/**
 * The file backing VM `vm`'s in-kernel TCE table of window `window` (KVM_CREATE_SPAPR_TCE_64
 * returns an fd the VMM mmaps, so KVM and QEMU share one table): 8 bytes per entry, host byte
 * order (little-endian).
 */
export function tceTableFile(ramDir: string, vm: number, window = 0): string {
  return join(ramDir, window === 0 ? `spapr-tce-${vm}.table` : `spapr-tce-${vm}.w${window}.table`);
}
