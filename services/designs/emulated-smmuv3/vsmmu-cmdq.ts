import { encodeMmio, type MmioAccess } from '../../formats/kvm-run.js';
import { PhysMemory } from '../../machine/memory.js';
import { Mutex } from '../../machine/mutex.js';
import type { OpContext } from '../../runtime/op-context.js';
import { type HandlerResult, type RoleEnv, type Request } from '../../runtime/role-api.js';
import { CMD_SIZE, Opcode, SyncCs, decodeCommand, type DecodedCommand } from '../../formats/smmu/commands.js';
import * as Q from '../../formats/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG, VSMMU_CMDQ_LOG2_ENTRIES, qemuVsmmuIdr, vsmmuCmdqGpa, vsmmuRegister } from '../../formats/smmu/registers.js';
import type { MemoryRange } from '../../runtime/role-api.js';
import type { VmmDevice } from '../../qemu/device.js';
import type { CmdqRegisters } from '../../machine/vsmmu-registers.js';

/** Where a model's vSMMU instances sit among the VM's, and the lock it runs under. */
export interface VsmmuInstances {
  /** The guest's number of the model's first instance (its others follow): where its MMIO and queues are. */
  first?: number;
  /** The VMM's big lock, when other device models of the VMM share it (one per VMM, as QEMU's BQL). */
  bql?: Mutex;
  /**
   * Each instance's queue registers, when the VMM shares them with KVM (an in-kernel vSMMU queue:
   * machine/vsmmu-registers.ts); absent: the VMM's own.
   */
  registers?: CmdqRegisters[];
}

export type { CmdqRegisters };

/**
 * The guest-facing command queue of a VMM's vSMMUv3 (QEMU's smmuv3_cmdq_consume and the register
 * file around it), shared by every vSMMU model: the guest's CMDQ_PROD write exits to here; under
 * the VMM's big lock the queue is consumed synchronously from CONS to PROD, CONS advancing after
 * each command; an illegal or refused command stops it with CONS.ERR = CERROR_ILL and
 * GERROR.CMDQ_ERR until the guest acknowledges through GERRORN. A CMD_SYNC completes once the loop
 * passes it: the guest learns it from a CMDQ_CONS read (another exit to here, smmu_readl), as the
 * vSMMU advertises no MSI (idRegisters). A CMD_SYNC with CS=IRQ is answered with its MSI write
 * (QEMU pulses its wired CMD_SYNC interrupt instead; no Linux guest sends one to a vSMMU without
 * IDR0.MSI). The queue's slots are the guest RAM the exit carries.
 *
 * What differs between models is what a command does: `execute` runs one now; commands a model
 * calls `batchable` are held and handed to `executeBatch` together when the batch ends (at a
 * CMD_SYNC, a command that is not batchable, or the end of what the guest queued).
 */
export abstract class VsmmuCmdq implements VmmDevice {
  protected readonly ram = new PhysMemory();
  protected readonly bql: Mutex;
  private readonly queues: CmdqRegisters[];
  private readonly queueCounters = { syncs: 0, errors: 0 };
  /** The guest's number of this model's instance 0. */
  readonly first: number;

  constructor(env: RoleEnv, vsmmus: number, at: VsmmuInstances = {}) {
    this.bql = at.bql ?? new Mutex(`${env.self.name}.bql`);
    this.first = at.first ?? 0;
    this.queues = at.registers ?? Array.from({ length: vsmmus }, () => ({ prod: 0, cons: 0, gerror: 0, gerrorn: 0 }));
  }

  /** The model's instance (counted from its first) whose registers `physAddr` falls on, if any. */
  private instanceAt(physAddr: number): { vsmmu: number; offset: number } | undefined {
    const reg = vsmmuRegister(physAddr, this.first + this.queues.length);
    if (!reg || reg.vsmmu < this.first) return undefined;
    return { vsmmu: reg.vsmmu - this.first, offset: reg.offset };
  }

  /** Whether an MMIO address is one of this model's registers (a VMM routes exits by address). */
  claims(physAddr: number): boolean {
    return this.instanceAt(physAddr) !== undefined;
  }

  /**
   * Runs one command of vSMMU `vsmmu` (counted from the model's first; never CMD_SYNC); false when
   * it is refused (the queue halts there).
   */
  protected abstract execute(vsmmu: number, cmd: DecodedCommand, bytes: Buffer, ctx: OpContext): Promise<boolean>;

  /** Whether this command is held for a batch instead of run at once. */
  protected batchable(_vsmmu: number, _cmd: DecodedCommand): boolean {
    return false;
  }

  /**
   * The ID registers this model's instances show the guest (QEMU's emulated vSMMUv3 by default:
   * registers.ts qemuVsmmuIdr). Linux reads IDR0 and IDR3 at probe to pick how it completes a
   * CMD_SYNC, whether it has range invalidation and ATS.
   */
  protected idRegisters(): { idr0: number; idr3: number } {
    return qemuVsmmuIdr(undefined);
  }

  /**
   * Runs held commands in order; returns the index of the first one that failed, or -1. They sit
   * in the queue one after another from `cons` (the CONS value of the first).
   */
  protected async executeBatch(_vsmmu: number, _commands: readonly Buffer[], _ctx: OpContext, _cons: number): Promise<number> {
    return -1;
  }

  async mmioExit(access: MmioAccess, req: Request, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('exit.to_user');
    const reg = this.instanceAt(access.physAddr);
    const state = reg ? this.queues[reg.vsmmu] : undefined;
    if (!reg || !state) return { status: 0, payload: req.payload }; // unclaimed MMIO: writes ignored, as QEMU does
    // The guest RAM the exit carries is what this VMM reads through its mapping of guest memory.
    for (const r of req.guestMemory) this.ram.write(Number(r.gpa), r.data);
    return this.bql.with(async () => {
      if (!access.isWrite) return { status: 0, payload: encodeMmio({ ...access, data: readRegister(state, reg.offset, this.idRegisters()) }) };
      if (reg.offset === SMMU_REG.CMDQ_PROD) state.prod = access.data >>> 0;
      else if (reg.offset === SMMU_REG.GERRORN) acknowledge(state, access.data);
      else return { status: 0, payload: req.payload };
      const writes = await this.consume(reg.vsmmu, state, ctx);
      return { status: 0, payload: req.payload, guestMemory: writes };
    }, ctx);
  }

  /** Runs the guest's queue from CONS to PROD; stops at the first error with CONS.ERR set. */
  private async consume(vsmmu: number, s: CmdqRegisters, ctx: OpContext): Promise<MemoryRange[]> {
    const writes: MemoryRange[] = [];
    const log2 = VSMMU_CMDQ_LOG2_ENTRIES;
    const base = vsmmuCmdqGpa(this.first + vsmmu);
    if ((s.gerror ^ s.gerrorn) & GERROR_CMDQ_ERR) return writes; // halted until the guest acknowledges
    // Held commands and the CONS value of each, so a failure can point CONS back at its command.
    const held: Buffer[] = [];
    const heldCons: number[] = [];
    const settle = async (): Promise<boolean> => {
      if (held.length === 0) return true;
      const failed = await this.executeBatch(vsmmu, held, ctx, heldCons[0] ?? s.cons);
      const at = heldCons[Math.min(failed, heldCons.length - 1)];
      held.length = 0;
      heldCons.length = 0;
      if (failed < 0 || at === undefined) return true;
      s.cons = at;
      this.halt(s);
      return false;
    };
    while (Q.ptr(s.cons, log2) !== Q.ptr(s.prod, log2)) {
      const bytes = this.ram.read(base + Q.index(s.cons, log2) * CMD_SIZE, CMD_SIZE);
      const cmd = decodeCommand(bytes, 0);
      ctx.charge('vmm.vsmmu_cmd');
      if (!cmd.error && cmd.opcode !== Opcode.CMD_SYNC && this.batchable(vsmmu, cmd)) {
        held.push(bytes);
        heldCons.push(s.cons);
        s.cons = Q.inc(s.cons, log2);
        continue;
      }
      // Anything else runs after what is held, in queue order.
      if (!(await settle())) return writes;
      if (cmd.error) {
        this.halt(s);
        return writes;
      }
      if (cmd.opcode === Opcode.CMD_SYNC) {
        this.queueCounters.syncs += 1;
        if (cmd.fields.cs === SyncCs.IRQ && cmd.fields.msiaddr) {
          const data = Buffer.alloc(4);
          data.writeUInt32LE((cmd.fields.msidata ?? 0) >>> 0);
          writes.push({ gpa: Number(cmd.fields.msiaddr), data });
        }
      } else if (!(await this.execute(vsmmu, cmd, bytes, ctx))) {
        this.halt(s);
        return writes;
      }
      s.cons = Q.inc(s.cons, log2);
    }
    await settle();
    return writes;
  }

  /** CERROR_ILL at CONS and GERROR.CMDQ_ERR toggled, as QEMU's smmu_write_cmdq_err does. */
  private halt(s: CmdqRegisters): void {
    this.queueCounters.errors += 1;
    s.cons = Q.withConsErr(s.cons, Q.CERROR.ILL);
    s.gerror ^= GERROR_CMDQ_ERR;
  }

  stats(): Record<string, number> {
    return { ...this.queueCounters, bqlContended: this.bql.contended };
  }
}

/** smmu_readl: the register at `offset` (unknown ones read as 0). */
function readRegister(s: CmdqRegisters, offset: number, id: { idr0: number; idr3: number }): number {
  switch (offset) {
    case SMMU_REG.IDR0:
      return id.idr0;
    case SMMU_REG.IDR3:
      return id.idr3;
    case SMMU_REG.CMDQ_PROD:
      return s.prod;
    case SMMU_REG.CMDQ_CONS:
      return s.cons;
    case SMMU_REG.GERROR:
      return s.gerror;
    case SMMU_REG.GERRORN:
      return s.gerrorn;
    default:
      return 0;
  }
}

/** GERRORN write: once it matches GERROR the queue error is acknowledged and consumption resumes. */
function acknowledge(s: CmdqRegisters, value: number): void {
  s.gerrorn = value >>> 0;
  if (((s.gerror ^ s.gerrorn) & GERROR_CMDQ_ERR) === 0) s.cons = Q.withConsErr(s.cons, Q.CERROR.NONE);
}
