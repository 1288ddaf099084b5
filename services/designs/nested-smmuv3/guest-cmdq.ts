import { decodeMmio, encodeMmio } from '../../formats/kvm-run.js';
import type { CostStep } from '../../cost/steps.js';
import type { Memory } from '../../machine/memory.js';
import type { OpContext } from '../../runtime/op-context.js';
import { Errno } from '../../runtime/errors.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, type SmmuCommand } from '../../formats/smmu/commands.js';
import * as Q from '../../formats/smmu/queue.js';
import type { MemoryRange, RequestKind as Kind } from '../../runtime/role-api.js';
import type { VcpuClocks } from '../../guest/vcpu-clocks.js';
import { CmdqGather, type Member, type Published } from './cmdq-gather.js';

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
  /** The peer the accesses reach and as what: kvm (a trap: MMIO_WRITE, MMIO_READ) or a psmmu (a VINTF page: VINTF_MMIO, no trap). */
  peer: string;
  kind: Kind;
  /** The kind a register read travels as (default: `kind`). */
  readKind?: Kind;
  /**
   * What one register read costs the CPU itself when it does not trap (a load from a device page
   * mapped into the guest); a trapped read is charged where it lands (KVM, the VMM).
   */
  readCost?: CostStep;
  /**
   * The read of CONS that sees a CMD_SYNC complete is priced with the sync, not as `readCost`: the
   * SMMU's step for a CONS-polled sync (smmu.sync_polled) is measured from the sync to the read
   * that observed it. A VCMDQ's reads; a trapped read is charged where it lands either way.
   */
  syncReadInSync?: boolean;
  /** How a CMD_SYNC on this queue completes (see SyncCompletion); default: CONS polling with CS=SEV. */
  completion?: SyncCompletion;
  /** The step one command written into the ring costs (default guest.cmdq_write; the host kernel's driver: kernel.cmdq_insert). */
  writeCost?: CostStep;
  /**
   * The Linux function that reads GERROR and acknowledges it in GERRORN when this queue stops
   * (vmmsim explain's labels): arm_smmu_gerror_handler for an SMMU's own queue (the default),
   * tegra241_vintf0_handle_error for a VCMDQ.
   */
  errorHandler?: string;
}

/**
 * How the driver learns a CMD_SYNC completed, as arm_smmu_cmdq_build_sync_cmd and
 * arm_smmu_cmdq_poll_until_sync decide it:
 *  - `msi`: ARM_SMMU_OPT_MSIPOLL (IDR0.MSI on a coherent SMMU): CS=IRQ with MSIADDR its own slot;
 *    the CPU spins on the slot in RAM until the SMMU's MSI write zeroes it (no register access);
 *  - `sev`: no MSI polling: CS=SEV, and the CPU polls CMDQ_CONS with readl
 *    (__arm_smmu_cmdq_poll_until_consumed) until CONS passed its sync;
 *  - `none`: a queue that needs busy polling (arm_smmu_cmdq_needs_busy_polling: a Tegra241 VCMDQ):
 *    CS=NONE, and the CPU polls the queue's CONS the same way.
 */
export type SyncCompletion = 'msi' | 'sev' | 'none';

/** What a batch left undone (GuestCmdq.issue). */
export interface IssueOutcome {
  failed: number;
}

/** What one command list came to: its status and, after a recovery, the CONS the queue had stopped at. */
interface ListResult {
  status: number;
  stoppedAt?: number;
}

/** Commands per arm_smmu_cmdq_batch (CMDQ_BATCH_ENTRIES = BITS_PER_LONG). */
export const CMDQ_BATCH_ENTRIES = 64;

/** What a queue needs to decide, in modeled time, which CPUs' lists one PROD write publishes (cmdq-gather.ts). */
export interface GatherEnv {
  /** The vCPUs' clocks' bounds (absent: no decision in modeled time, every list publishes itself). */
  readonly vcpus?: VcpuClocks;
  /** Each vCPU's clock (the start of the operation it runs). */
  readonly vcpuNs: readonly number[];
  /** What writing one command into the ring costs (the owner's gathering window per slot). */
  readonly writeNs: number;
}

/**
 * The guest driver's side of one SMMU command queue (a vSMMU's CMDQ, or a VCMDQ): a ring in guest
 * RAM, a PROD it writes and a CONS it learns. Linux's arm_smmu_cmdq_issue_cmdlist: reserve slots
 * (gathered by the current owner, or as the owner: cmdq-gather.ts), write the commands and a
 * CMD_SYNC, and, as the owner, write PROD once for every gathered list; then each CPU waits for
 * its own sync: on its own slot (MSI) or by reading CONS until it passed the sync (SyncCompletion).
 */
export class GuestCmdq {
  private prod = 0;
  private cons = 0;
  /** Times this queue stopped on an error and was recovered. */
  recoveries = 0;
  /**
   * PROD writes and CONS reads this queue made (each a trap on a vSMMU, a load or store on a
   * VCMDQ), and the lists another CPU's PROD write published (gathered).
   */
  readonly accesses = { prodWrites: 0, consReads: 0, gathered: 0 };
  /** How this queue's CMD_SYNCs complete; the driver sets it from the SMMU's ID registers at probe. */
  completion: SyncCompletion;
  /** Lists placed in modeled time among the vCPUs' (cmdq-gather.ts). */
  private readonly gather: CmdqGather;
  /** Lists with no vCPU clock to place them by: each its own owner, at once. */
  private readonly immediate: CmdqGather;
  /** What each list of a gather wrote, until its owner published it. */
  private readonly written = new Map<Member, { ranges: MemoryRange[]; bytes: Buffer }>();

  constructor(
    private readonly port: QueuePort,
    private readonly ram: Memory,
    private readonly env?: GatherEnv,
  ) {
    this.completion = port.completion ?? 'sev';
    const reserve = (slots: number): number | undefined => {
      if (Q.free(this.prod, this.cons, this.port.log2) < slots) return undefined;
      const start = this.prod;
      this.prod = Q.inc(this.prod, this.port.log2, slots);
      return start;
    };
    this.gather = new CmdqGather(env?.vcpus, reserve);
    this.immediate = new CmdqGather(undefined, reserve);
  }

  private slotGpa(ptr: number): number {
    return this.port.gpa + Q.index(ptr, this.port.log2) * CMD_SIZE;
  }

  /**
   * Issues commands the way a driver's arm_smmu_cmdq_batch does (arm_smmu_cmdq_batch_add,
   * arm_smmu_cmdq_batch_submit): each full batch of CMDQ_BATCH_ENTRIES goes out without a sync
   * when the next command is added, the rest with a CMD_SYNC the CPU waits for. `cpu`: the vCPU
   * issuing them, whose clock places its lists among the other CPUs' (absent: its lists publish
   * themselves). Returns 0 or -errno. `outcome`, when given, learns how many of the commands did
   * not run: none on success; after a stopped queue was recovered, the one refused command if it
   * was in the batch (those before it ran, those after it ran once the queue resumed); all of them
   * when the sync never completed.
   */
  async issue(ctx: OpContext, cmds: readonly SmmuCommand[], outcome?: IssueOutcome, cpu?: number): Promise<number> {
    // Where each list of this call sits in the ring, to tell whether a refused command was ours.
    const lists: { start: number; commands: number }[] = [];
    let at = 0;
    let r: ListResult = { status: 0 };
    while (cmds.length - at > CMDQ_BATCH_ENTRIES) {
      r = await this.cmdlist(ctx, cmds.slice(at, at + CMDQ_BATCH_ENTRIES), false, lists, cpu);
      if (r.status < 0) break;
      at += CMDQ_BATCH_ENTRIES;
    }
    if (r.status === 0) r = await this.cmdlist(ctx, cmds.slice(at), true, lists, cpu);
    if (outcome) {
      if (r.status === 0) outcome.failed = 0;
      else if (r.stoppedAt === undefined) outcome.failed = cmds.length;
      else {
        // The queue was recovered: only the refused command did not run, if it was one of ours.
        const stop = r.stoppedAt;
        outcome.failed = lists.some((l) => Q.used(stop, l.start, this.port.log2) < l.commands) ? 1 : 0;
      }
    }
    return r.status;
  }

  /**
   * arm_smmu_cmdq_issue_cmdlist for one list: `cmds` and, with `sync`, a CMD_SYNC built for this
   * queue's completion, in the slots the gather reserved; PROD written once by the owner for every
   * list it gathered; with `sync`, waits for its own. `lists` learns where the list went in the ring.
   */
  private async cmdlist(ctx: OpContext, cmds: readonly SmmuCommand[], sync: boolean, lists: { start: number; commands: number }[], cpu?: number): Promise<ListResult> {
    const log2 = this.port.log2;
    const n = cmds.length + (sync ? 1 : 0);
    // The vCPU clock the operation runs on (absent: the list is its own owner at once).
    const base = cpu === undefined ? 0 : (this.env?.vcpuNs[cpu] ?? 0);
    const modeled = cpu !== undefined && this.env?.vcpus !== undefined;
    const d = modeled ? await this.gather.arrive(cpu, base + ctx.modeledNs, n, n * (this.env?.writeNs ?? 0)) : await this.immediate.arrive(-1, 0, n, 0);
    const start = d.member.start;
    const syncPtr = Q.inc(start, log2, cmds.length);
    const syncGpa = this.slotGpa(syncPtr);
    const all = sync ? [...cmds, this.syncCommand(syncGpa)] : [...cmds];
    const bytes = Buffer.alloc(all.length * CMD_SIZE);
    all.forEach((c, i) => encodeCommand(c, bytes, i * CMD_SIZE));
    const ranges = this.writeSlots(start, bytes);
    this.written.set(d.member, { ranges, bytes });
    d.member.written.resolve();
    lists.push({ start, commands: cmds.length });
    ctx.charge(this.port.writeCost ?? 'guest.cmdq_write', all.length);
    const end = Q.inc(start, log2, all.length);
    let published: Published;
    if (d.owner) {
      // b. Stop gathering (once the previous owner's PROD write is back), c. wait for every gathered
      // slot to be written, d. write PROD once for all of them.
      await d.gather.closed.promise;
      await Promise.all(d.gather.members.map((m) => m.written.promise));
      if (modeled && d.gather.closesAt !== undefined) ctx.modeledNs = Math.max(ctx.modeledNs, d.gather.closesAt - base);
      const parts = d.gather.members.map((m) => this.written.get(m) as { ranges: MemoryRange[]; bytes: Buffer });
      const last = d.gather.members[d.gather.members.length - 1] as Member;
      this.accesses.prodWrites += 1;
      const status = await this.publish(ctx, Q.inc(last.start, log2, last.slots), parts.flatMap((p) => p.ranges), Buffer.concat(parts.map((p) => p.bytes)));
      published = { status, doneAt: base + ctx.modeledNs };
      for (const m of d.gather.members) this.written.delete(m);
      if (modeled) this.gather.published(d.gather, published);
      else d.gather.publish(published);
    } else {
      // Gathered: its slots go out with the owner's PROD write, which it waits for before polling.
      this.accesses.gathered += 1;
      published = await d.gather.published.promise;
      ctx.modeledNs = Math.max(ctx.modeledNs, published.doneAt - base);
    }
    try {
      // Without a sync nothing is waited for: an error shows at the next sync.
      if (published.status === 0 && !sync) return { status: 0 };
      if (published.status === 0 && (await this.synced(ctx, syncGpa, syncPtr, true))) {
        this.consumedUpTo(end);
        return { status: 0 };
      }
      // The queue stopped on an error, or the sync never completed: recover as Linux does, and
      // report this batch failed (its invalidation did not run as asked).
      const recovered = await this.recover(ctx);
      if (recovered.status !== 0) return { status: recovered.status };
      // Still not complete after the queue resumed: nothing of the call can be trusted to have run.
      if (!(await this.synced(ctx, syncGpa, syncPtr, recovered.status === 0))) return { status: -Errno.EIO };
      this.consumedUpTo(end);
      return { status: -Errno.EIO, stoppedAt: recovered.cons };
    } finally {
      // Whatever happened, lists waiting for room look again.
      this.gather.roomFreed();
      this.immediate.roomFreed();
    }
  }

  /**
   * Writes a list's slots into the ring from `start`; the slots are contiguous in the ring, split
   * in two where it wraps, and each run travels as one range, as the reader would fetch it.
   */
  private writeSlots(start: number, bytes: Buffer): MemoryRange[] {
    const log2 = this.port.log2;
    const count = bytes.length / CMD_SIZE;
    const ranges: MemoryRange[] = [];
    const first = Q.index(start, log2);
    const head = Math.min(count, Q.size(log2) - first);
    for (const [slotIndex, from, k] of [[first, 0, head], [0, head, count - head]] as const) {
      if (k === 0) continue;
      const data = bytes.subarray(from * CMD_SIZE, (from + k) * CMD_SIZE);
      const gpa = this.port.gpa + slotIndex * CMD_SIZE;
      this.ram.write(gpa, data);
      ranges.push({ gpa, data });
    }
    return ranges;
  }

  /**
   * Writes PROD: the slots written since the last PROD write (`ranges`, in ring order, and `bytes`,
   * the same commands back to back) reach the queue's consumer. Gives the access's status.
   */
  protected async publish(ctx: OpContext, prod: number, ranges: MemoryRange[], _bytes: Buffer): Promise<number> {
    return (await this.access(ctx, this.port.prodRegister, prod, true, ranges, true, 'writel_relaxed CMDQ_PROD (arm_smmu_cmdq_issue_cmdlist)')).status;
  }

  /**
   * MSI polling: the SMMU's MSI write zeroed the sync's slot in RAM. `delivered`: the access that
   * should have completed it (the PROD write, or the acknowledgement that resumed the queue) succeeded.
   */
  protected msiLanded(syncGpa: number, _delivered: boolean): boolean {
    return this.ram.read32(syncGpa) === 0;
  }

  /** arm_smmu_cmdq_build_sync_cmd for this queue. */
  private syncCommand(syncGpa: number): SmmuCommand {
    if (this.completion === 'msi') return cmdSync({ cs: SyncCs.IRQ, msidata: 0, msiaddr: BigInt(syncGpa) });
    return cmdSync({ cs: this.completion === 'none' ? SyncCs.NONE : SyncCs.SEV });
  }

  /**
   * arm_smmu_cmdq_poll_until_sync: with MSI polling the sync's own slot, zeroed by the SMMU's MSI
   * write; otherwise __arm_smmu_cmdq_poll_until_consumed: the cached CONS is stale, so after one
   * queue_poll it reads CONS (readl) until CONS passed the sync. A VMM that consumes the queue
   * inside the PROD-write trap, and a VCMDQ done by the time its PROD store returns, show it on
   * the first read; a queue that stopped shows CONS.ERR instead and is recovered by the caller.
   * Linux keeps reading until ARM_SMMU_POLL_TIMEOUT_US; nothing else moves CONS here, so one read
   * that shows neither stands for that timeout.
   */
  private async synced(ctx: OpContext, syncGpa: number, syncPtr: number, delivered: boolean): Promise<boolean> {
    if (this.completion === 'msi') return this.msiLanded(syncGpa, delivered);
    const cons = await this.readCons(ctx, !this.port.syncReadInSync);
    if (cons === undefined || Q.consErr(cons) !== Q.CERROR.NONE) return false;
    const d = Q.used(cons, syncPtr, this.port.log2);
    return d >= 1 && d <= Q.size(this.port.log2);
  }

  /**
   * One readl of CONS (a trapped read on a vSMMU, a load from the VINTF page on a VCMDQ); `priced`
   * false: its cost is the sync's (QueuePort.syncReadInSync).
   */
  private async readCons(ctx: OpContext, priced: boolean): Promise<number | undefined> {
    this.accesses.consReads += 1;
    const r = await this.access(ctx, this.port.consRegister, 0, false, [], priced, priced ? 'readl CMDQ_CONS (__arm_smmu_cmdq_poll_until_consumed)' : 'readl CMDQ_CONS (__arm_smmu_cmdq_poll_until_consumed), priced in smmu.sync_polled');
    return r.status === 0 ? r.value : undefined;
  }

  /**
   * A register access on this queue's page; memory the device wrote back lands in guest RAM.
   * `label`: the access as the driver makes it, for vmmsim explain.
   */
  protected async access(ctx: OpContext, register: number, value: number, isWrite: boolean, ranges: MemoryRange[] = [], priced = true, label?: string): Promise<{ status: number; value: number }> {
    const mmio = encodeMmio({ physAddr: register, data: value, len: 4, isWrite });
    if (!isWrite && priced && this.port.readCost) ctx.charge(this.port.readCost);
    const reply = await ctx.call(this.port.peer, isWrite ? this.port.kind : (this.port.readKind ?? this.port.kind), mmio, ranges, label);
    for (const w of reply.guestMemory) this.ram.write(Number(w.gpa), w.data);
    return { status: reply.status, value: decodeMmio(reply.payload)?.data ?? 0 };
  }

  /** A register read (the driver's probe of the ID registers); undefined when the access failed. */
  async readRegister(ctx: OpContext, register: number): Promise<number | undefined> {
    const r = await this.access(ctx, register, 0, false);
    return r.status === 0 ? r.value >>> 0 : undefined;
  }

  /**
   * arm_smmu_cmdq_skip_err: read CONS; if the queue stopped with CERROR_ILL, overwrite the refused
   * command with a CMD_SYNC and acknowledge by writing GERRORN = GERROR, so everything behind it
   * runs. Gives status 0 once the queue runs again, or -ETIMEDOUT when it had not stopped, and the
   * CONS it stopped at.
   */
  private async recover(ctx: OpContext): Promise<{ status: number; cons: number }> {
    const cons = (await this.access(ctx, this.port.consRegister, 0, false, [], true, 'readl_relaxed CMDQ_CONS (__arm_smmu_cmdq_skip_err)')).value;
    if (Q.consErr(cons) === Q.CERROR.NONE) return { status: -Errno.ETIMEDOUT, cons };
    this.recoveries += 1;
    const handler = this.port.errorHandler ?? 'arm_smmu_gerror_handler';
    const gerror = (await this.access(ctx, this.port.gerrorRegister, 0, false, [], true, `readl_relaxed GERROR (${handler})`)).value;
    const slot = this.port.gpa + Q.index(cons, this.port.log2) * CMD_SIZE;
    const sync = Buffer.alloc(CMD_SIZE);
    encodeCommand(this.syncCommand(slot), sync, 0);
    this.ram.write(slot, sync);
    const ack = await this.access(ctx, this.port.gerrornRegister, gerror, true, [{ gpa: slot, data: sync }], true, `writel GERRORN (${handler})`);
    return { status: ack.status === 0 ? 0 : ack.status, cons };
  }

  /**
   * The queue was programmed afresh, empty, with nothing in flight (a VCMDQ re-created on the
   * destination host of a live migration): PROD and CONS start again at 0.
   */
  restart(): void {
    this.prod = 0;
    this.cons = 0;
  }

  /** After a CMD_SYNC completed everything up to `prod` was consumed: move CONS forward, never back. */
  private consumedUpTo(prod: number): void {
    if (Q.used(this.prod, prod, this.port.log2) < Q.used(this.prod, this.cons, this.port.log2)) this.cons = prod;
  }
}
