import { FrameAllocator, PhysMemory } from '../common/memory.js';
import type { OpContext } from '../common/op-context.js';
import { PageTable } from '../common/pagetable.js';
import type { RoleEnv } from '../common/role-api.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, tlbiNhVa, type SmmuCommand } from '../common/smmu/commands.js';
import * as Q from '../common/smmu/queue.js';
import { SMMU_REG, VCMDQ_LOG2_ENTRIES, vcmdqGpa, vsmmuMmioBase } from '../common/smmu/registers.js';
import { encodeMmio } from '../common/kvm-run.js';
import type { MemoryRange } from '../common/transport/link.js';
import { Errno } from '../common/errors.js';
import { registerGuestDriver, type GuestDriver } from './driver.js';

/** The ASID the guest's DMA domain uses in its context descriptor. */
const DMA_ASID = 1;
/** Guest RAM above this is free for page tables. */
const TABLE_RAM_BASE = 0x8000_0000;
/** TLBI range NUM is 5 bits. */
const RANGE_NUM_MAX = 31;
/** TG=1: 4 KiB granule. */
const TG_4K = 1;

/**
 * TLBI_NH_VA commands for an unmapped range, as Linux builds them with range invalidation (RIL):
 * each command covers NUM+1 chunks of 2^SCALE pages.
 */
export function tlbiRange(asid: number, iova: number, pages: number): SmmuCommand[] {
  const cmds: SmmuCommand[] = [];
  let va = iova;
  let left = pages;
  while (left > 0) {
    const scale = 31 - Math.clz32(left & -left);
    const num = Math.min((left >>> scale) & RANGE_NUM_MAX || 1, RANGE_NUM_MAX);
    cmds.push(tlbiNhVa({ vmid: 0, asid, va: BigInt(va), num: num - 1, scale, tg: TG_4K, ttl: 0, leaf: 1 }));
    const covered = num * 2 ** scale;
    va += covered * 4096;
    left -= covered;
  }
  return cmds;
}

/** The guest's view of one vSMMU command queue: a ring in guest RAM, a PROD it writes, a CONS it learns. */
class GuestCmdq {
  private prod = 0;
  private cons = 0;
  private readonly waiters: (() => void)[] = [];
  readonly gpa: number;

  constructor(readonly vsmmu: number, private readonly ram: PhysMemory) {
    this.gpa = vcmdqGpa(vsmmu);
  }

  /** Waits for room for `n` commands (Linux spins on CONS; here the wait ends when a sync completes). */
  async reserve(n: number): Promise<void> {
    while (Q.free(this.prod, this.cons, VCMDQ_LOG2_ENTRIES) < n) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Guest-physical address of the slot `ahead` entries past PROD. */
  slotGpa(ahead: number): number {
    return this.gpa + Q.index(Q.inc(this.prod, VCMDQ_LOG2_ENTRIES, ahead), VCMDQ_LOG2_ENTRIES) * CMD_SIZE;
  }

  /** Writes commands at PROD and advances it; returns the slots' guest memory, the sync slot and the new PROD. */
  write(cmds: SmmuCommand[]): { ranges: MemoryRange[]; lastSlotGpa: number; prod: number } {
    const ranges: MemoryRange[] = [];
    let lastSlotGpa = 0;
    for (const cmd of cmds) {
      const slot = this.gpa + Q.index(this.prod, VCMDQ_LOG2_ENTRIES) * CMD_SIZE;
      const bytes = Buffer.alloc(CMD_SIZE);
      encodeCommand(cmd, bytes, 0);
      this.ram.write(slot, bytes);
      // Adjacent slots travel as one range, as the VMM would read them in one go.
      const prev = ranges[ranges.length - 1];
      if (prev && prev.gpa !== undefined && Number(prev.gpa) + (prev.data as Buffer).length === slot) {
        prev.data = Buffer.concat([prev.data as Buffer, bytes]);
      } else {
        ranges.push({ gpa: slot, data: bytes });
      }
      lastSlotGpa = slot;
      this.prod = Q.inc(this.prod, VCMDQ_LOG2_ENTRIES);
    }
    return { ranges, lastSlotGpa, prod: this.prod };
  }

  /** After a CMD_SYNC completes, everything up to it was consumed: move CONS forward (never back). */
  consumedUpTo(consAfterSync: number): void {
    if (Q.used(this.prod, consAfterSync, VCMDQ_LOG2_ENTRIES) < Q.used(this.prod, this.cons, VCMDQ_LOG2_ENTRIES)) {
      this.cons = consAfterSync;
    }
    for (const w of this.waiters.splice(0)) w();
  }
}

/**
 * The guest's arm-smmu-v3 driver with nested translation: the guest owns stage 1 and edits it
 * without trapping; only its command queue writes reach the host. A strict unmap clears the
 * PTEs, queues TLBI_NH_VA + CMD_SYNC, writes CMDQ_PROD (a trapped MMIO write) and returns when the
 * CMD_SYNC's completion write has landed in its slot.
 */
class NestedSmmuv3Driver implements GuestDriver {
  private commands = 0;
  readonly translates = true;
  private readonly ram = new PhysMemory();
  private readonly stage1 = new PageTable(this.ram, new FrameAllocator(TABLE_RAM_BASE));
  private readonly cmdqs: GuestCmdq[];

  constructor(_env: RoleEnv) {
    this.cmdqs = [new GuestCmdq(0, this.ram)];
  }

  get guestCommands(): number {
    return this.commands;
  }

  async map(ctx: OpContext, iova: number, pa: number, pages: number): Promise<number> {
    const writes = this.stage1.map(iova, pa, pages);
    ctx.charge('guest.pte_write', writes);
    return 0;
  }

  async unmap(ctx: OpContext, iova: number, pages: number): Promise<number> {
    const cleared = this.stage1.unmap(iova, pages);
    ctx.charge('guest.pte_write', cleared);
    const cmdq = this.cmdqs[0] as GuestCmdq;
    const tlbis = tlbiRange(DMA_ASID, iova, pages);
    await cmdq.reserve(tlbis.length + 1);
    // Linux asks for an MSI write of 0 into the CMD_SYNC's own slot and polls that slot.
    const syncSlot = cmdq.slotGpa(tlbis.length);
    const cmds = [...tlbis, cmdSync({ cs: SyncCs.IRQ, msidata: 0, msiaddr: BigInt(syncSlot) })];
    const { ranges, lastSlotGpa, prod } = cmdq.write(cmds);
    ctx.charge('guest.cmdq_write', cmds.length);
    this.commands += tlbis.length;
    const mmio = encodeMmio({ physAddr: vsmmuMmioBase(cmdq.vsmmu) + SMMU_REG.CMDQ_PROD, data: prod, len: 4, isWrite: true });
    const reply = await ctx.call('kvm', 'MMIO_WRITE', mmio, ranges);
    if (reply.status !== 0) return reply.status;
    for (const w of reply.guestMemory) this.ram.write(Number(w.gpa), w.data);
    // The sync completed once the SMMU overwrote the slot's first word (the opcode) with MSIDATA 0.
    if (this.ram.read32(lastSlotGpa) !== 0) return -Errno.ETIMEDOUT;
    cmdq.consumedUpTo(prod);
    return 0;
  }
}

registerGuestDriver('nested-smmuv3', (env) => new NestedSmmuv3Driver(env));
