import { encodeMmio } from '../common/kvm-run.js';
import type { Memory } from '../common/memory.js';
import type { OpContext } from '../common/op-context.js';
import { Errno } from '../common/errors.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, type SmmuCommand } from '../common/smmu/commands.js';
import * as Q from '../common/smmu/queue.js';
import { SMMU_REG, VCMDQ_LOG2_ENTRIES, vcmdqGpa, vsmmuMmioBase } from '../common/smmu/registers.js';
import type { MemoryRange } from '../common/transport/link.js';

/**
 * The guest driver's side of one vSMMU command queue: a ring in guest RAM, a PROD it writes and a
 * CONS it learns. Linux's arm_smmu_cmdq_issue_cmdlist in short: reserve slots, write the commands
 * and a CMD_SYNC whose MSI targets its own slot, write PROD (which traps), and wait until the
 * SMMU overwrote the sync slot with MSIDATA 0.
 */
export class GuestCmdq {
  private prod = 0;
  private cons = 0;
  private readonly waiters: (() => void)[] = [];
  readonly gpa: number;

  constructor(
    readonly vsmmu: number,
    private readonly ram: Memory,
  ) {
    this.gpa = vcmdqGpa(vsmmu);
  }

  private slotGpa(ahead: number): number {
    return this.gpa + Q.index(Q.inc(this.prod, VCMDQ_LOG2_ENTRIES, ahead), VCMDQ_LOG2_ENTRIES) * CMD_SIZE;
  }

  /** Issues commands followed by a CMD_SYNC and waits for the sync; returns 0 or -errno. */
  async issue(ctx: OpContext, cmds: readonly SmmuCommand[]): Promise<number> {
    while (Q.free(this.prod, this.cons, VCMDQ_LOG2_ENTRIES) < cmds.length + 1) {
      // Linux spins on CONS; here the wait ends when another CPU's sync completes.
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    const syncGpa = this.slotGpa(cmds.length);
    const all = [...cmds, cmdSync({ cs: SyncCs.IRQ, msidata: 0, msiaddr: BigInt(syncGpa) })];
    const bytes = Buffer.alloc(all.length * CMD_SIZE);
    all.forEach((c, i) => encodeCommand(c, bytes, i * CMD_SIZE));
    const ranges: MemoryRange[] = [];
    for (let i = 0; i < all.length; i++) {
      const slot = this.slotGpa(0);
      const data = bytes.subarray(i * CMD_SIZE, (i + 1) * CMD_SIZE);
      this.ram.write(slot, data);
      // Adjacent slots travel as one range, as the VMM would read them in one go.
      const prev = ranges[ranges.length - 1];
      if (prev && Number(prev.gpa) + (prev.data as Buffer).length === slot) prev.data = Buffer.concat([prev.data as Buffer, data]);
      else ranges.push({ gpa: slot, data: Buffer.from(data) });
      this.prod = Q.inc(this.prod, VCMDQ_LOG2_ENTRIES);
    }
    ctx.charge('guest.cmdq_write', all.length);
    const prod = this.prod;
    const mmio = encodeMmio({ physAddr: vsmmuMmioBase(this.vsmmu) + SMMU_REG.CMDQ_PROD, data: prod, len: 4, isWrite: true });
    const reply = await ctx.call('kvm', 'MMIO_WRITE', mmio, ranges);
    if (reply.status !== 0) return reply.status;
    for (const w of reply.guestMemory) this.ram.write(Number(w.gpa), w.data);
    // The sync completed once the SMMU overwrote the slot's first word (the opcode) with MSIDATA 0.
    if (this.ram.read32(syncGpa) !== 0) return -Errno.ETIMEDOUT;
    // Everything up to the sync was consumed: move CONS forward (never back).
    if (Q.used(this.prod, prod, VCMDQ_LOG2_ENTRIES) < Q.used(this.prod, this.cons, VCMDQ_LOG2_ENTRIES)) this.cons = prod;
    for (const w of this.waiters.splice(0)) w();
    return 0;
  }
}
