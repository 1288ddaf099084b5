import { encodeMmio } from '../common/kvm-run.js';
import type { Memory } from '../common/memory.js';
import type { OpContext } from '../common/op-context.js';
import { Errno } from '../common/errors.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, type SmmuCommand } from '../common/smmu/commands.js';
import * as Q from '../common/smmu/queue.js';
import type { Kind, MemoryRange } from '../common/transport/link.js';

/** Where a queue lives and how its PROD write travels. */
export interface QueuePort {
  /** Guest-physical address of slot 0. */
  gpa: number;
  log2: number;
  /** Guest-physical address of the PROD register. */
  prodRegister: number;
  /** The peer the PROD write reaches and as what: kvm (a trap) or a psmmu (a VINTF page, no trap). */
  peer: string;
  kind: Kind;
}

/**
 * The guest driver's side of one SMMU command queue (a vSMMU's CMDQ, or a VCMDQ): a ring in guest
 * RAM, a PROD it writes and a CONS it learns. Linux's arm_smmu_cmdq_issue_cmdlist in short:
 * reserve slots, write the commands and a CMD_SYNC whose MSI targets its own slot, write PROD, and
 * wait until the SMMU overwrote the sync slot with MSIDATA 0.
 */
export class GuestCmdq {
  private prod = 0;
  private cons = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly port: QueuePort,
    private readonly ram: Memory,
  ) {}

  private slotGpa(ahead: number): number {
    return this.port.gpa + Q.index(Q.inc(this.prod, this.port.log2, ahead), this.port.log2) * CMD_SIZE;
  }

  /** Issues commands followed by a CMD_SYNC and waits for the sync; returns 0 or -errno. */
  async issue(ctx: OpContext, cmds: readonly SmmuCommand[]): Promise<number> {
    const log2 = this.port.log2;
    while (Q.free(this.prod, this.cons, log2) < cmds.length + 1) {
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
      // Adjacent slots travel as one range, as the reader would fetch them in one go.
      const prev = ranges[ranges.length - 1];
      if (prev && Number(prev.gpa) + (prev.data as Buffer).length === slot) prev.data = Buffer.concat([prev.data as Buffer, data]);
      else ranges.push({ gpa: slot, data: Buffer.from(data) });
      this.prod = Q.inc(this.prod, log2);
    }
    ctx.charge('guest.cmdq_write', all.length);
    const prod = this.prod;
    const mmio = encodeMmio({ physAddr: this.port.prodRegister, data: prod, len: 4, isWrite: true });
    const reply = await ctx.call(this.port.peer, this.port.kind, mmio, ranges);
    if (reply.status !== 0) return reply.status;
    for (const w of reply.guestMemory) this.ram.write(Number(w.gpa), w.data);
    // The sync completed once the SMMU overwrote the slot's first word (the opcode) with MSIDATA 0.
    if (this.ram.read32(syncGpa) !== 0) return -Errno.ETIMEDOUT;
    // Everything up to the sync was consumed: move CONS forward (never back).
    if (Q.used(this.prod, prod, log2) < Q.used(this.prod, this.cons, log2)) this.cons = prod;
    for (const w of this.waiters.splice(0)) w();
    return 0;
  }
}
