import type { Envelope__Output } from '../common/generated/vmmsim/v1/Envelope.js';
import { IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, HWPT_INVALIDATE_SIZE, encodeHwptInvalidate } from '../common/iommufd.js';
import { iommufdLayout, type ViommuObject } from '../common/iommufd-objects.js';
import { encodeMmio, type MmioAccess } from '../common/kvm-run.js';
import { PhysMemory } from '../common/memory.js';
import { Mutex } from '../common/mutex.js';
import type { OpContext } from '../common/op-context.js';
import type { HandlerResult, RoleEnv } from '../common/role-api.js';
import { HWPT_INVALIDATE_OPCODES } from '../common/smmu/allow-lists.js';
import { CMD_SIZE, Opcode, SyncCs, decodeCommand } from '../common/smmu/commands.js';
import * as Q from '../common/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG, VSMMU_CMDQ_LOG2_ENTRIES, vsmmuCmdqGpa, vsmmuRegister } from '../common/smmu/registers.js';
import type { MemoryRange } from '../common/transport/link.js';
import { registerVmmDevice, type VmmDevice } from './device.js';

/** A fake but stable user-space address for the HWPT_INVALIDATE entry array (never null). */
const USER_ARRAY_ADDR = 0x7f00_0000_0000;


interface VsmmuState {
  prod: number;
  cons: number;
  gerror: number;
  gerrorn: number;
  /** The vIOMMU objects this vSMMU's invalidations go to: its own, or all of the VM's (broadcast). */
  targets: ViommuObject[];
}

/**
 * The accelerated (nested) vSMMUv3 of a VMM: the guest's CMDQ_PROD write exits to here; under the
 * VMM's big lock the model consumes the guest queue synchronously, as QEMU does, and forwards each
 * invalidation as its own IOMMU_HWPT_INVALIDATE (entry_num = 1), as QEMU's accelerated SMMUv3 does
 * today. CMD_SYNC completes locally: every command before it already completed in the kernel.
 */
class AcceleratedVsmmu implements VmmDevice {
  private readonly ram = new PhysMemory();
  private readonly bql: Mutex;
  private readonly vsmmus: VsmmuState[];
  private readonly counters = { commands: 0, ioctls: 0, syncs: 0, errors: 0, cfgiSte: 0 };

  constructor(env: RoleEnv) {
    const vm = env.self.index;
    this.bql = new Mutex(`${env.self.name}.bql`);
    const layout = iommufdLayout(env.topology);
    const mine = layout.viommus.filter((v) => v.vm === vm);
    // One vSMMU per vIOMMU; a single vSMMU for the VM broadcasts to all of them.
    const single = env.topology.vsmmu === 'single';
    const state = (targets: ViommuObject[]): VsmmuState => ({ prod: 0, cons: 0, gerror: 0, gerrorn: 0, targets });
    this.vsmmus = single ? [state(mine)] : mine.map((v) => state([v]));
  }

  async mmioExit(access: MmioAccess, req: Envelope__Output, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('exit.to_user');
    const reg = vsmmuRegister(access.physAddr, this.vsmmus.length);
    const state = reg ? this.vsmmus[reg.vsmmu] : undefined;
    if (!reg || !state) return { status: 0, payload: req.payload }; // unclaimed MMIO: writes ignored, as QEMU does
    // The guest RAM the exit carries is what this VMM reads through its mapping of guest memory.
    for (const r of req.guestMemory) this.ram.write(Number(r.gpa), r.data);
    return this.bql.with(async () => {
      if (!access.isWrite) return { status: 0, payload: encodeMmio({ ...access, data: this.readRegister(state, reg.offset) }) };
      if (reg.offset === SMMU_REG.CMDQ_PROD) state.prod = access.data >>> 0;
      else if (reg.offset === SMMU_REG.GERRORN) this.acknowledge(state, access.data);
      else return { status: 0, payload: req.payload };
      const writes = await this.consume(reg.vsmmu, state, ctx);
      return { status: 0, payload: req.payload, guestMemory: writes };
    }, ctx);
  }

  private readRegister(s: VsmmuState, offset: number): number {
    switch (offset) {
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
  private acknowledge(s: VsmmuState, value: number): void {
    s.gerrorn = value >>> 0;
    if (((s.gerror ^ s.gerrorn) & GERROR_CMDQ_ERR) === 0) s.cons = Q.withConsErr(s.cons, Q.CERROR.NONE);
  }

  /** Runs the guest's queue from CONS to PROD; stops at the first error with CONS.ERR set. */
  private async consume(vsmmu: number, s: VsmmuState, ctx: OpContext): Promise<MemoryRange[]> {
    const writes: MemoryRange[] = [];
    const log2 = VSMMU_CMDQ_LOG2_ENTRIES;
    const base = vsmmuCmdqGpa(vsmmu);
    if ((s.gerror ^ s.gerrorn) & GERROR_CMDQ_ERR) return writes; // halted until the guest acknowledges
    while (Q.ptr(s.cons, log2) !== Q.ptr(s.prod, log2)) {
      const slot = base + Q.index(s.cons, log2) * CMD_SIZE;
      const bytes = this.ram.read(slot, CMD_SIZE);
      const cmd = decodeCommand(bytes, 0);
      ctx.charge('vmm.vsmmu_cmd');
      if (cmd.error) {
        this.halt(s);
        break;
      }
      if (cmd.opcode === Opcode.CMD_SYNC) {
        this.counters.syncs += 1;
        if (cmd.fields.cs === SyncCs.IRQ && cmd.fields.msiaddr) {
          const data = Buffer.alloc(4);
          data.writeUInt32LE((cmd.fields.msidata ?? 0) >>> 0);
          writes.push({ gpa: Number(cmd.fields.msiaddr), data });
        }
      } else if (HWPT_INVALIDATE_OPCODES.has(cmd.opcode)) {
        this.counters.commands += 1;
        const failed = await this.forward(s, bytes, ctx);
        if (failed) {
          this.halt(s);
          break;
        }
      } else if (cmd.opcode === Opcode.CFGI_STE || cmd.opcode === Opcode.CFGI_ALL) {
        // The VMM re-reads the guest STE and (re)attaches a nested HWPT; no command is forwarded.
        this.counters.cfgiSte += 1;
      }
      s.cons = Q.inc(s.cons, log2);
    }
    return writes;
  }

  /**
   * One IOMMU_HWPT_INVALIDATE per target vIOMMU carrying this single command, one after another
   * from the vCPU thread as QEMU issues them (a single vSMMU broadcasting to N pSMMUs pays N
   * ioctls in a row); true if any failed.
   */
  private async forward(s: VsmmuState, command: Buffer, ctx: OpContext): Promise<boolean> {
    let failed = false;
    for (const v of s.targets) {
      this.counters.ioctls += 1;
      const payload = encodeHwptInvalidate(
        { size: HWPT_INVALIDATE_SIZE, hwptId: v.id, dataUptr: USER_ARRAY_ADDR, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: CMD_SIZE, entryNum: 1, reserved: 0 },
        command,
      );
      if ((await ctx.call('vfio', 'HWPT_INVALIDATE', payload)).status !== 0) failed = true;
    }
    return failed;
  }

  /** CERROR_ILL at CONS and GERROR.CMDQ_ERR, as QEMU reports a command the kernel refused. */
  private halt(s: VsmmuState): void {
    this.counters.errors += 1;
    s.cons = Q.withConsErr(s.cons, Q.CERROR.ILL);
    s.gerror ^= GERROR_CMDQ_ERR;
  }

  stats(): Record<string, number> {
    return { ...this.counters, bqlContended: this.bql.contended };
  }
}

registerVmmDevice('nested-smmuv3', (env) => new AcceleratedVsmmu(env));
// With VCMDQs the same vSMMU still takes every command the guest cannot put in a VCMDQ.
registerVmmDevice('nested-smmuv3-vcmdq', (env) => new AcceleratedVsmmu(env));

