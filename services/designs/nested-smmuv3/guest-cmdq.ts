import { decodeMmio, encodeMmio } from '../../formats/kvm-run.js';
import type { Memory } from '../../machine/memory.js';
import type { OpContext } from '../../runtime/op-context.js';
import { Errno } from '../../runtime/errors.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, type SmmuCommand } from '../../formats/smmu/commands.js';
import * as Q from '../../formats/smmu/queue.js';
import type { MemoryRange, RequestKind as Kind } from '../../runtime/role-api.js';

/** Where a queue lives and how its register accesses travel. */
export interface QueuePort {
  /** Guest-physical address of slot 0. */
  gpa: number;
  log2: number;
  /** Guest-physical addresses of the queue's registers. */
  prodRegister: number;
  consRegister: number;
  gerrorRegister: number;
  gerrornRegister: number;
  /** The peer the PROD write reaches and as what: kvm (a trap) or a psmmu (a VINTF page, no trap). */
  peer: string;
  kind: Kind;
}

/** What a batch left undone (GuestCmdq.issue). */
export interface IssueOutcome {
  failed: number;
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
  /** Times this queue stopped on an error and was recovered. */
  recoveries = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly port: QueuePort,
    private readonly ram: Memory,
  ) {}

  private slotGpa(ahead: number): number {
    return this.port.gpa + Q.index(Q.inc(this.prod, this.port.log2, ahead), this.port.log2) * CMD_SIZE;
  }

  /**
   * Issues commands followed by a CMD_SYNC and waits for the sync; returns 0 or -errno. `outcome`,
   * when given, learns how many of the commands did not run: none on success; after a stopped
   * queue was recovered, the one refused command if it was in this batch (those before it ran,
   * those after it ran once the queue resumed); all of them when the sync never completed.
   */
  async issue(ctx: OpContext, cmds: readonly SmmuCommand[], outcome?: IssueOutcome): Promise<number> {
    const log2 = this.port.log2;
    while (Q.free(this.prod, this.cons, log2) < cmds.length + 1) {
      // Linux spins on CONS; here the wait ends when another CPU's sync completes.
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    const syncGpa = this.slotGpa(cmds.length);
    const all = [...cmds, cmdSync({ cs: SyncCs.IRQ, msidata: 0, msiaddr: BigInt(syncGpa) })];
    const bytes = Buffer.alloc(all.length * CMD_SIZE);
    all.forEach((c, i) => encodeCommand(c, bytes, i * CMD_SIZE));
    // The slots are contiguous in the ring, split in two where it wraps; each run travels as one
    // range, as the reader would fetch it in one go.
    const ranges: MemoryRange[] = [];
    const size = Q.size(log2);
    const first = Q.index(this.prod, log2);
    const head = Math.min(all.length, size - first);
    for (const [slotIndex, from, n] of [[first, 0, head], [0, head, all.length - head]] as const) {
      if (n === 0) continue;
      const data = bytes.subarray(from * CMD_SIZE, (from + n) * CMD_SIZE);
      const gpa = this.port.gpa + slotIndex * CMD_SIZE;
      this.ram.write(gpa, data);
      ranges.push({ gpa, data });
    }
    const start = this.prod;
    this.prod = Q.inc(this.prod, log2, all.length);
    ctx.charge('guest.cmdq_write', all.length);
    const prod = this.prod;
    try {
      const reply = await this.access(ctx, this.port.prodRegister, prod, true, ranges);
      if (reply.status === 0 && this.ram.read32(syncGpa) === 0) {
        this.consumedUpTo(prod);
        if (outcome) outcome.failed = 0;
        return 0;
      }
      // The queue stopped on an error, or the sync never completed: recover as Linux does, and
      // report this batch failed (its invalidation did not run as asked).
      const recovered = await this.recover(ctx);
      const done = recovered.status === 0 && this.ram.read32(syncGpa) === 0;
      if (done) this.consumedUpTo(prod);
      if (outcome) {
        const at = recovered.status === 0 ? Q.used(recovered.cons, start, log2) : -1;
        outcome.failed = !done ? cmds.length : at < cmds.length ? 1 : 0;
      }
      return recovered.status === 0 ? -Errno.EIO : recovered.status;
    } finally {
      // Whatever happened, other CPUs waiting for room look again.
      for (const w of this.waiters.splice(0)) w();
    }
  }

  /** A register access on this queue's page; memory the device wrote back lands in guest RAM. */
  private async access(ctx: OpContext, register: number, value: number, isWrite: boolean, ranges: MemoryRange[] = []): Promise<{ status: number; value: number }> {
    const mmio = encodeMmio({ physAddr: register, data: value, len: 4, isWrite });
    const reply = await ctx.call(this.port.peer, this.port.kind, mmio, ranges);
    for (const w of reply.guestMemory) this.ram.write(Number(w.gpa), w.data);
    return { status: reply.status, value: decodeMmio(reply.payload)?.data ?? 0 };
  }

  /**
   * arm_smmu_cmdq_skip_err: read CONS; if the queue stopped with CERROR_ILL, overwrite the refused
   * command with a CMD_SYNC and acknowledge by writing GERRORN = GERROR, so everything behind it
   * runs. Gives status 0 once the queue runs again, or -ETIMEDOUT when it had not stopped, and the
   * CONS it stopped at.
   */
  private async recover(ctx: OpContext): Promise<{ status: number; cons: number }> {
    const cons = (await this.access(ctx, this.port.consRegister, 0, false)).value;
    if (Q.consErr(cons) === Q.CERROR.NONE) return { status: -Errno.ETIMEDOUT, cons };
    this.recoveries += 1;
    const gerror = (await this.access(ctx, this.port.gerrorRegister, 0, false)).value;
    const slot = this.port.gpa + Q.index(cons, this.port.log2) * CMD_SIZE;
    const sync = Buffer.alloc(CMD_SIZE);
    encodeCommand(cmdSync(), sync, 0);
    this.ram.write(slot, sync);
    const ack = await this.access(ctx, this.port.gerrornRegister, gerror, true, [{ gpa: slot, data: sync }]);
    return { status: ack.status === 0 ? 0 : ack.status, cons };
  }

  /** After a CMD_SYNC completed everything up to `prod` was consumed: move CONS forward, never back. */
  private consumedUpTo(prod: number): void {
    if (Q.used(this.prod, prod, this.port.log2) < Q.used(this.prod, this.cons, this.port.log2)) this.cons = prod;
  }
}
