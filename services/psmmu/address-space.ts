import { existsSync } from 'node:fs';
import { GUEST_RAM_SIZE, guestRamFile, hostRamFile, vmRamBase } from '../machine/board.js';
import { FileMemory, type Memory } from '../machine/memory.js';

/**
 * Host-physical memory as the SMMU's walker reaches it: each VM's RAM (the guest's file) at its
 * place in the host map, and host memory (stream tables, stage-2 tables) everywhere else. Files
 * are opened on first use, once their owners (guest, vfio) created them.
 */
export class AddressSpace {
  private host: FileMemory | undefined;
  private readonly guests = new Map<number, FileMemory>();

  constructor(private readonly ramDir: string) {}

  private open(path: string): FileMemory | undefined {
    return existsSync(path) ? new FileMemory(path, 'open') : undefined;
  }

  /** The memory holding `pa` and the address inside it; undefined if nothing backs it (an external abort). */
  resolve(pa: number): { mem: Memory; addr: number } | undefined {
    const vm = Math.floor(pa / vmRamBase(0)) - 1;
    if (vm >= 0) {
      const off = pa - vmRamBase(vm);
      if (off >= GUEST_RAM_SIZE) return undefined;
      let g = this.guests.get(vm);
      if (!g) {
        g = this.open(guestRamFile(this.ramDir, vm));
        if (!g) return undefined;
        this.guests.set(vm, g);
      }
      return { mem: g, addr: off };
    }
    if (!this.host) this.host = this.open(hostRamFile(this.ramDir));
    return this.host ? { mem: this.host, addr: pa } : undefined;
  }

  /** The guest RAM of a VM by guest-physical address (for the device's own ring reads). */
  guest(vm: number): Memory | undefined {
    return this.resolve(vmRamBase(vm))?.mem;
  }

  close(): void {
    this.host?.close();
    for (const g of this.guests.values()) g.close();
  }
}

/** A Memory over host-physical addresses, so page-table walks read across files. */
export class HostPhysical implements Memory {
  constructor(private readonly space: AddressSpace) {}

  private at(addr: number): { mem: Memory; addr: number } {
    const r = this.space.resolve(addr);
    if (!r) throw new ExternalAbort(addr);
    return r;
  }

  view(addr: number, len: number): Buffer {
    const r = this.at(addr);
    return r.mem.view(r.addr, len);
  }

  read32(addr: number): number {
    const r = this.at(addr);
    return r.mem.read32(r.addr);
  }

  write32(addr: number, value: number): void {
    const r = this.at(addr);
    r.mem.write32(r.addr, value);
  }

  write(addr: number, data: Buffer): void {
    const r = this.at(addr);
    r.mem.write(r.addr, data);
  }

  read(addr: number, len: number): Buffer {
    const r = this.at(addr);
    return r.mem.read(r.addr, len);
  }
}

/** A walk touched memory nothing backs: the SMMU reports F_WALK_EABT. */
export class ExternalAbort extends Error {
  constructor(readonly addr: number) {
    super(`external abort at 0x${addr.toString(16)}`);
  }
}
