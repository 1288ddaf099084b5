import {
  HWPT_QUEUE_DATA_SIZE, IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE, HWPT_INVALIDATE_SIZE, decodeHwptInvalidate,
  encodeHwptInvalidate, encodeHwptQueueData,
} from '../../formats/iommufd.js';
import { CD_TABLE_LOG2, cdIpa } from '../../machine/board.js';
import { mapGuestRam } from '../../machine/guest-ram.js';
import { type ViommuObject, iommufdLayout } from '../../machine/iommufd-objects.js';
import type { OpContext } from '../../runtime/op-context.js';
import type { RoleEnv } from '../../runtime/role-api.js';
import { HWPT_INVALIDATE_OPCODES } from '../../formats/smmu/allow-lists.js';
import { CMD_SIZE, type DecodedCommand } from '../../formats/smmu/commands.js';
import { CONFIG_DROP_BY_OPCODE, CommandScope, ConfigDrop, readScope } from '../../formats/smmu/semantics.js';
import { decodeCd } from '../../formats/smmu/structures.js';
import { VsmmuCmdq, type VsmmuInstances } from '../emulated-smmuv3/vsmmu-cmdq.js';
import { VSMMU_CMDQ_LOG2_ENTRIES, qemuVsmmuIdr, vsmmuCmdqGpa } from '../../formats/smmu/registers.js';
import * as Q from '../../formats/smmu/queue.js';
import { invalidatePlanned, planRoutes, routeCommand } from './vsmmu-route.js';
import { kvmTakesCmdq } from './kvm-cmdq.js';
import { createSharedCmdqRegisters } from '../../machine/vsmmu-registers.js';
import type { DesignTraits } from '../types.js';

/** A fake but stable user-space address for the HWPT_INVALIDATE entry array (never null). */
const USER_ARRAY_ADDR = 0x7f00_0000_0000;

/**
 * The accelerated (nested) vSMMUv3 of a VMM: the guest queue is consumed as every vSMMU does
 * (vsmmu-cmdq.ts), and each invalidation goes to the host kernel as IOMMU_HWPT_INVALIDATE on the
 * vIOMMU objects behind this vSMMU. vmm.hwptInvalidate picks how: per-command (entry_num 1 per
 * guest command, as QEMU's accelerated SMMUv3 does today), per-batch (the invalidations the guest
 * queued before its CMD_SYNC in one call, entry_num n) or queue (the proposal of [PATCH v2 17/17]
 * arm_smmu_cache_invalidate_user, never merged: the same batch handed over as the guest queue's
 * location, CONS and PROD; the kernel reads the entries from guest memory itself, so the VMM
 * copies nothing into an array). CMD_SYNC completes locally: every command before it already
 * completed in the kernel.
 */
export class AcceleratedVsmmu extends VsmmuCmdq {
  /** The vIOMMU objects behind each vSMMU: its own, or all of the VM's (a single vSMMU). */
  private readonly targets: ViommuObject[][];
  /** Whether invalidations are held for one call per batch (per-batch and queue). */
  private readonly perBatch: boolean;
  private readonly queue: boolean;
  /** A single vSMMU routes ASID-scoped invalidations by its ASID table instead of broadcasting. */
  private readonly lookup: boolean;
  /** The vIOMMU holding each of the VM's vSIDs (SID-scoped commands go there in any case). */
  private readonly viommuOfVsid = new Map<number, ViommuObject>();
  /** The VM's devices: vSID and index (where its CD lives in guest RAM). */
  private readonly devices: { vsid: number; index: number }[];
  /** ASID -> the vIOMMUs whose devices use it, learned from the guest's CDs; dropped on CFGI. */
  private asids: Map<number, Set<ViommuObject>> | undefined;
  private readonly counters = { commands: 0, ioctls: 0, cfgiSte: 0, lookups: 0, lookupMisses: 0 };
  /** The scope of the command being routed (reused). */
  private readonly scope = new CommandScope();

  constructor(
    private readonly env: RoleEnv,
    traits: DesignTraits,
    at: VsmmuInstances = {},
  ) {
    const vm = env.self.index;
    const layout = iommufdLayout(env.topology, traits.vcmdq);
    const mine = layout.viommus.filter((v) => v.vm === vm);
    // One vSMMU per vIOMMU; a single vSMMU for the VM fronts all of them.
    const targets = env.topology.vsmmu === 'single' ? [mine] : mine.map((v) => [v]);
    // Under an in-kernel vSMMU queue KVM consumes the queue too: the registers live in a page both map.
    const registers = kvmTakesCmdq(traits, env.topology) ? createSharedCmdqRegisters(env.topology.ramDir, vm, targets.length) : undefined;
    super(env, targets.length, { ...at, ...(registers ? { registers } : {}) });
    this.targets = targets;
    const mode = env.topology.vmm?.hwptInvalidate;
    this.queue = mode === 'queue';
    this.perBatch = mode === 'per-batch' || this.queue;
    this.lookup = env.topology.dispatch === 'lookup';
    for (const d of layout.vdevices) {
      const v = mine.find((x) => x.id === d.viommuId);
      if (v) this.viommuOfVsid.set(d.vsid, v);
    }
    this.devices = env.topology.devices.flatMap((d, index) => (d.vm === vm ? [{ vsid: d.vsid, index }] : []));
  }

  /**
   * The VMM's ASID table: for each device of the VM, the ASIDs its guest CD table holds, every
   * SubstreamID's (its DMA domain's and its SVA process's: an SVA munmap's TLBI carries the
   * process's ASID). QEMU reads the guest STE and CDs when the guest issues CFGI_STE/CFGI_CD; here
   * on first use after each CFGI.
   */
  private asidTable(): Map<number, Set<ViommuObject>> {
    if (this.asids) return this.asids;
    const table = new Map<number, Set<ViommuObject>>();
    const ram = mapGuestRam(this.env.topology.ramDir, this.env.self.index);
    for (const d of this.devices) {
      const v = this.viommuOfVsid.get(d.vsid);
      if (!ram || !v) continue;
      for (let ssid = 0; ssid < 1 << CD_TABLE_LOG2; ssid++) {
        const cd = decodeCd(Buffer.from(ram.view(cdIpa(d.index, ssid), 64)));
        if (!cd.valid) continue;
        const set = table.get(cd.asid) ?? new Set<ViommuObject>();
        set.add(v);
        table.set(cd.asid, set);
      }
    }
    this.asids = table;
    return table;
  }

  /**
   * Where one guest command goes among the vSMMU's vIOMMUs (routeCommand, by the command's scope);
   * an ASID looked up in the table under dispatch lookup is charged and counted.
   */
  private route(vsmmu: number, bytes: Buffer, ctx: OpContext): readonly ViommuObject[] {
    readScope(bytes, 0, this.scope);
    return routeCommand(this.scope, this.targets[vsmmu] ?? [], {
      bySid: (vsid) => this.viommuOfVsid.get(vsid),
      byAsid: this.lookup
        ? (asid) => {
            ctx.charge('vmm.dispatch_lookup');
            this.counters.lookups += 1;
            const hit = this.asidTable().get(asid);
            if (!hit) this.counters.lookupMisses += 1;
            return hit;
          }
        : undefined,
    });
  }

  /** smmuv3_accel_idr_override: QEMU's vSMMU registers with RIL and ATS as the accel properties set them. */
  protected override idRegisters(): { idr0: number; idr3: number } {
    // The ats property on when the devices have ATS (QEMU needs it set to offer ATS to the guest).
    return qemuVsmmuIdr({ ril: this.env.topology.smmu?.ril ?? true, ats: this.env.topology.device?.ats ?? false });
  }

  protected override batchable(_vsmmu: number, cmd: DecodedCommand): boolean {
    return this.perBatch && HWPT_INVALIDATE_OPCODES.has(cmd.opcode);
  }

  protected async execute(vsmmu: number, cmd: DecodedCommand, bytes: Buffer, ctx: OpContext): Promise<boolean> {
    // A configuration change may move an ASID: the table is re-read on its next use.
    const config = CONFIG_DROP_BY_OPCODE[cmd.opcode];
    if (config !== ConfigDrop.NONE) this.asids = undefined;
    if (HWPT_INVALIDATE_OPCODES.has(cmd.opcode)) return (await this.forward(vsmmu, [bytes], ctx)) < 0;
    if (config === ConfigDrop.STE || config === ConfigDrop.STE_RANGE) {
      // The VMM re-reads the guest STE and (re)attaches a nested HWPT; no command is forwarded.
      this.counters.cfgiSte += 1;
    }
    return true;
  }

  protected override executeBatch(vsmmu: number, commands: readonly Buffer[], ctx: OpContext, cons: number): Promise<number> {
    return this.queue ? this.forwardQueue(vsmmu, commands, ctx, cons) : this.forward(vsmmu, commands, ctx);
  }

  /**
   * vmm.hwptInvalidate=queue: one IOMMU_HWPT_INVALIDATE whose data is the guest queue's location
   * with CONS at the batch's first command and PROD past its last (the v2 proposal's
   * iommu_hwpt_invalidate_arm_smmuv3); the kernel reads them from guest memory. The proposal has
   * one vIOMMU per queue, so the vSMMU's one vIOMMU gets them all (the scenario check refuses a
   * single vSMMU over several pSMMUs). Returns the index of the command the kernel refused, or -1.
   */
  private async forwardQueue(vsmmu: number, commands: readonly Buffer[], ctx: OpContext, cons: number): Promise<number> {
    this.counters.commands += commands.length;
    const v = this.targets[vsmmu]?.[0];
    if (!v) return -1;
    this.counters.ioctls += 1;
    const log2 = VSMMU_CMDQ_LOG2_ENTRIES;
    const head = Q.ptr(cons, log2);
    const data = encodeHwptQueueData({ cmdqGpa: vsmmuCmdqGpa(this.first + vsmmu), cons: head, prod: Q.inc(head, log2, commands.length), entrySize: CMD_SIZE, log2size: log2 });
    const payload = encodeHwptInvalidate(
      { size: HWPT_INVALIDATE_SIZE, hwptId: v.id, dataUptr: USER_ARRAY_ADDR, dataType: IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE, entryLen: HWPT_QUEUE_DATA_SIZE, entryNum: 1, reserved: 0 },
      data,
    );
    // The slots are guest RAM the kernel reads through the VMM's mapping (vmmsim carries their bytes
    // with the call, as a trap carries the RAM it touches): no entry array is built or copied.
    const base = vsmmuCmdqGpa(this.first + vsmmu);
    const slots = commands.map((data, i) => ({ gpa: base + Q.index(Q.inc(head, log2, i), log2) * CMD_SIZE, data }));
    const reply = await ctx.call('vfio', 'HWPT_INVALIDATE', payload, slots);
    if (reply.status === 0) return -1;
    return Math.min(decodeHwptInvalidate(reply.payload)?.head.entryNum ?? commands.length - 1, commands.length - 1);
  }

  /**
   * One IOMMU_HWPT_INVALIDATE per target vIOMMU carrying the commands routed to it (route()), one
   * call after another from the vCPU thread as QEMU issues them (a single vSMMU broadcasting to N
   * pSMMUs pays N ioctls in a row). Returns the index of the first command a call failed on, or -1:
   * on failure the kernel hands entry_num back as the index of the failing entry.
   */
  private async forward(vsmmu: number, commands: readonly Buffer[], ctx: OpContext): Promise<number> {
    this.counters.commands += commands.length;
    // Per target, the commands it gets, in guest order, with their index in the batch.
    const plan = planRoutes(commands, this.targets[vsmmu] ?? [], (bytes) => {
      // A CFGI_CD in a batch (per-batch never passes it through execute) moves an ASID too: the
      // commands after it route by the CDs as they are now.
      if (CONFIG_DROP_BY_OPCODE[bytes[0] ?? 0] !== ConfigDrop.NONE) this.asids = undefined;
      return this.route(vsmmu, bytes, ctx);
    });
    return invalidatePlanned(plan, commands, USER_ARRAY_ADDR, (payload) => {
      this.counters.ioctls += 1;
      return ctx.call('vfio', 'HWPT_INVALIDATE', payload);
    });
  }

  override stats(): Record<string, number> {
    return { ...this.counters, ...super.stats() };
  }
}

