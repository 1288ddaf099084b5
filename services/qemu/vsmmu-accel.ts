import { IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, HWPT_INVALIDATE_SIZE, decodeHwptInvalidate, encodeHwptInvalidate } from '../common/iommufd.js';
import { iommufdLayout, type ViommuObject } from '../common/iommufd-objects.js';
import type { OpContext } from '../common/op-context.js';
import type { RoleEnv } from '../common/role-api.js';
import { HWPT_INVALIDATE_OPCODES } from '../common/smmu/allow-lists.js';
import { CMD_SIZE, Opcode, type DecodedCommand } from '../common/smmu/commands.js';
import { registerVmmDevice } from './device.js';
import { VsmmuCmdq } from './vsmmu-cmdq.js';

/** A fake but stable user-space address for the HWPT_INVALIDATE entry array (never null). */
const USER_ARRAY_ADDR = 0x7f00_0000_0000;

/**
 * The accelerated (nested) vSMMUv3 of a VMM: the guest queue is consumed as every vSMMU does
 * (vsmmu-cmdq.ts), and each invalidation goes to the host kernel as IOMMU_HWPT_INVALIDATE on the
 * vIOMMU objects behind this vSMMU. vmm.hwptInvalidate picks how: per-command (entry_num 1 per
 * guest command, as QEMU's accelerated SMMUv3 does today) or per-batch (the invalidations the guest
 * queued before its CMD_SYNC in one call, entry_num n). CMD_SYNC completes locally: every command
 * before it already completed in the kernel.
 */
class AcceleratedVsmmu extends VsmmuCmdq {
  /** The vIOMMU objects each vSMMU's invalidations go to: its own, or all of the VM's (broadcast). */
  private readonly targets: ViommuObject[][];
  private readonly perBatch: boolean;
  private readonly counters = { commands: 0, ioctls: 0, cfgiSte: 0 };

  constructor(env: RoleEnv) {
    const vm = env.self.index;
    const mine = iommufdLayout(env.topology).viommus.filter((v) => v.vm === vm);
    // One vSMMU per vIOMMU; a single vSMMU for the VM broadcasts to all of them.
    const targets = env.topology.vsmmu === 'single' ? [mine] : mine.map((v) => [v]);
    super(env, targets.length);
    this.targets = targets;
    this.perBatch = env.topology.vmm?.hwptInvalidate === 'per-batch';
  }

  protected override batchable(_vsmmu: number, cmd: DecodedCommand): boolean {
    return this.perBatch && HWPT_INVALIDATE_OPCODES.has(cmd.opcode);
  }

  protected async execute(vsmmu: number, cmd: DecodedCommand, bytes: Buffer, ctx: OpContext): Promise<boolean> {
    if (HWPT_INVALIDATE_OPCODES.has(cmd.opcode)) return (await this.forward(vsmmu, [bytes], ctx)) < 0;
    if (cmd.opcode === Opcode.CFGI_STE || cmd.opcode === Opcode.CFGI_ALL) {
      // The VMM re-reads the guest STE and (re)attaches a nested HWPT; no command is forwarded.
      this.counters.cfgiSte += 1;
    }
    return true;
  }

  protected override executeBatch(vsmmu: number, commands: readonly Buffer[], ctx: OpContext): Promise<number> {
    return this.forward(vsmmu, commands, ctx);
  }

  /**
   * One IOMMU_HWPT_INVALIDATE per target vIOMMU carrying these commands, one call after another
   * from the vCPU thread as QEMU issues them (a single vSMMU broadcasting to N pSMMUs pays N
   * ioctls in a row). Returns the index of the first command a call failed on, or -1: on failure
   * the kernel hands entry_num back as the index of the failing entry.
   */
  private async forward(vsmmu: number, commands: readonly Buffer[], ctx: OpContext): Promise<number> {
    const entries = Buffer.concat(commands);
    this.counters.commands += commands.length;
    let failed = -1;
    for (const v of this.targets[vsmmu] ?? []) {
      this.counters.ioctls += 1;
      const payload = encodeHwptInvalidate(
        { size: HWPT_INVALIDATE_SIZE, hwptId: v.id, dataUptr: USER_ARRAY_ADDR, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: CMD_SIZE, entryNum: commands.length, reserved: 0 },
        entries,
      );
      const reply = await ctx.call('vfio', 'HWPT_INVALIDATE', payload);
      if (reply.status === 0) continue;
      // An entry_num past the array (or none at all) blames nothing in particular: the last entry.
      const at = Math.min(decodeHwptInvalidate(reply.payload)?.head.entryNum ?? commands.length - 1, commands.length - 1);
      failed = failed < 0 ? at : Math.min(failed, at);
    }
    return failed;
  }

  override stats(): Record<string, number> {
    return { ...this.counters, ...super.stats() };
  }
}

registerVmmDevice('nested-smmuv3', (env) => new AcceleratedVsmmu(env));
// With VCMDQs the same vSMMU still takes every command the guest cannot put in a VCMDQ.
registerVmmDevice('nested-smmuv3-vcmdq', (env) => new AcceleratedVsmmu(env));
