import { join } from 'node:path';
import { mapSharedFile } from './guest-ram.js';
import type { Memory } from './memory.js';

/** The registers of one vSMMU's command queue as whoever consumes the queue keeps them. */
export interface CmdqRegisters {
  prod: number;
  cons: number;
  gerror: number;
  gerrorn: number;
}

/** Bytes per vSMMU in the shared page: PROD, CONS, GERROR, GERRORN as u32. */
const STRIDE = 16;

/** One vSMMU's queue registers kept in a memory both KVM and the VMM map. */
class SharedCmdqRegisters implements CmdqRegisters {
  constructor(
    private readonly mem: Memory,
    private readonly at: number,
  ) {}

  get prod(): number {
    return this.mem.read32(this.at);
  }

  set prod(v: number) {
    this.mem.write32(this.at, v >>> 0);
  }

  get cons(): number {
    return this.mem.read32(this.at + 4);
  }

  set cons(v: number) {
    this.mem.write32(this.at + 4, v >>> 0);
  }

  get gerror(): number {
    return this.mem.read32(this.at + 8);
  }

  set gerror(v: number) {
    this.mem.write32(this.at + 8, v >>> 0);
  }

  get gerrorn(): number {
    return this.mem.read32(this.at + 12);
  }

  set gerrorn(v: number) {
    this.mem.write32(this.at + 12, v >>> 0);
  }
}

/**
 * The file backing VM `vm`'s shared vSMMU queue registers. Under an in-kernel vSMMU queue
 * (DesignTraits.kvmCmdq) KVM consumes the guest's queue on a PROD write and the VMM consumes what
 * KVM leaves to it, so both see one PROD, CONS and GERROR/GERRORN: what a real implementation
 * would keep in a page of a KVM device fd that the VMM mmaps (as the in-kernel TCE table is
 * shared), nothing upstream has.
 */
export function vsmmuRegistersFile(ramDir: string, vm: number): string {
  return join(ramDir, `vsmmu-regs-${vm}.page`);
}

/** The VMM creates the page (zeroed: every queue empty) for `count` vSMMUs. */
export function createSharedCmdqRegisters(ramDir: string, vm: number, count: number): CmdqRegisters[] {
  const mem = mapSharedFile(vsmmuRegistersFile(ramDir, vm), 'create');
  return Array.from({ length: count }, (_, v) => new SharedCmdqRegisters(mem, v * STRIDE));
}

/** KVM opens the VMM's page; undefined while the VMM has not created it. */
export function openSharedCmdqRegisters(ramDir: string, vm: number, vsmmu: number): CmdqRegisters | undefined {
  const mem = mapSharedFile(vsmmuRegistersFile(ramDir, vm), 'open');
  return mem ? new SharedCmdqRegisters(mem, vsmmu * STRIDE) : undefined;
}
