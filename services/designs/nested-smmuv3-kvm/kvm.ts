import { encodeMmio, type MmioAccess } from '../../formats/kvm-run.js';
import { KVM_CMDQ_OPCODES } from '../../formats/smmu/allow-lists.js';
import { CMD_SIZE, Opcode, SyncCs, decodeCommand } from '../../formats/smmu/commands.js';
import * as Q from '../../formats/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG, VSMMU_CMDQ_LOG2_ENTRIES, vsmmuCmdqGpa, vsmmuRegister } from '../../formats/smmu/registers.js';
import { CommandScope, readScope } from '../../formats/smmu/semantics.js';
import { readGuestRam } from '../../machine/guest-ram.js';
import { iommufdLayout, type ViommuObject } from '../../machine/iommufd-objects.js';
import { Mutex } from '../../machine/mutex.js';
import { openSharedCmdqRegisters, type CmdqRegisters } from '../../machine/vsmmu-registers.js';
import type { OpContext } from '../../runtime/op-context.js';
import type { HandlerResult, MemoryRange, Request, RoleEnv } from '../../runtime/role-api.js';
import type { KvmDevice, KvmDeviceFactory } from '../../kvm/device.js';
import { acceleratedVsmmus, kvmTakesCmdq } from '../nested-smmuv3/kvm-cmdq.js';
import { invalidatePlanned, planRoutes, routeCommand } from '../nested-smmuv3/vsmmu-route.js';
import type { DesignTraits } from '../types.js';

/** Where KVM's array of taken commands sits (a kernel buffer; iommufd's checks want it non-null). */
const KERNEL_ARRAY_ADDR = 0xffff_8000_0000;

/** One accelerated vSMMU of a VM as KVM serves its queue. */
interface KvmQueue {
  regs: CmdqRegisters;
  /** The vIOMMUs behind it (all of the VM's under a single vSMMU). */
  targets: ViommuObject[];
  /** The vIOMMU holding each vSID among them (iommufd's vDEVICEs). */
  byVsid: Map<number, ViommuObject>;
  /** The queue is consumed by one party at a time: KVM, or the VMM it handed the rest to. */
  lock: Mutex;
}

/** How far KVM went through the queue on one PROD write. */
type Consumed = 'done' | 'to-vmm';

/**
 * nested-smmuv3-kvm's part in KVM: an in-kernel short path for the guest's vSMMU command queue
 * (a proposal nobody posted code for; docs/architecture.md, Modelling decisions). KVM takes the guest's CMDQ_PROD write
 * itself instead of returning to the VMM: under the queue's lock it reads the new commands from
 * guest memory, CONS to PROD (kvm.vsmmu_cmd each), and hands every run of invalidations the
 * HWPT_INVALIDATE allow-list takes and that changes no configuration (TLBI_NH_*, ATC_INV:
 * KVM_CMDQ_OPCODES, from the opcode table) to iommufd's vIOMMU cache_invalidate in the kernel
 * (VIOMMU_INVALIDATE: the same conversion as arm_vsmmu_convert_user_cmd, VMID and vSID -> pSID,
 * one list + CMD_SYNC on the pSMMU), one call per vIOMMU the commands route to; a CMD_SYNC it
 * completes in place. At the first command it does not take (a CFGI, anything else, an illegal
 * one) it stops with CONS there and hands the PROD write on to the VMM (KVM_EXIT_MMIO), which
 * consumes the rest as it does today; the queue stays locked until the VMM is back, so the two
 * never consume at once. A command iommufd refuses (a vSID with no vDEVICE: EIO) stops the queue
 * as QEMU would: CONS.ERR = CERROR_ILL and GERROR.CMDQ_ERR; KVM then hands the PROD write on to the
 * VMM too (which finds the queue halted and runs nothing), since the guest's recovery (GERRORN, a
 * register KVM does not take) resumes the queue in the VMM, which must have seen the commands
 * behind the refused one.
 *
 * The CMDQ_CONS read the guest polls after each CMD_SYNC (QEMU's vSMMU has no MSI) is served in
 * the kernel too, from the same registers: the unmap's two traps stay in KVM. What a real
 * implementation would need, none of which exists upstream: a kvm_io_device on KVM_MMIO_BUS over
 * the vSMMU's register page (an ioeventfd takes writes only, and the value written matters),
 * registered by the VMM through a KVM device (as the vGIC's), whose fd the VMM mmaps to share
 * PROD, CONS and GERROR with KVM (machine/vsmmu-registers.ts); a kernel-internal handle from KVM
 * to the VM's iommufd vIOMMU objects and their vDEVICEs (a KVM-iommufd binding) to convert and
 * issue with; and a way to hand the VMM a partly consumed queue.
 *
 * The routing is the accelerated vSMMU's (routeCommand): a SID-scoped command to its vSID's
 * vIOMMU, everything else to all of the vSMMU's vIOMMUs; KVM keeps no ASID table, so dispatch
 * lookup does not reach this path.
 */
class KvmVsmmuCmdq implements KvmDevice {
  private readonly queues = new Map<string, KvmQueue>();
  private readonly counters = { prodWrites: 0, consReads: 0, commandsTaken: 0, syncs: 0, invalidateCalls: 0, handedToVmm: 0, errors: 0 };
  private readonly scope = new CommandScope();
  private readonly active: boolean;

  constructor(
    private readonly env: RoleEnv,
    private readonly traits: DesignTraits,
  ) {
    this.active = kvmTakesCmdq(traits, env.topology);
  }

  /** VM `vm`'s accelerated vSMMU `vsmmu`, once its VMM made the shared registers; undefined: not KVM's. */
  private queue(vm: number, vsmmu: number): KvmQueue | undefined {
    const key = `${vm}/${vsmmu}`;
    const have = this.queues.get(key);
    if (have) return have;
    const t = this.env.topology;
    const layout = iommufdLayout(t, this.traits.vcmdq);
    const mine = layout.viommus.filter((v) => v.vm === vm);
    if (vsmmu >= acceleratedVsmmus(t, mine.length)) return undefined;
    const regs = openSharedCmdqRegisters(t.ramDir, vm, vsmmu);
    if (!regs) return undefined;
    const targets = t.vsmmu === 'single' ? mine : mine.filter((_, i) => i === vsmmu);
    const byVsid = new Map<number, ViommuObject>();
    for (const d of layout.vdevices) {
      const v = targets.find((x) => x.id === d.viommuId);
      if (v) byVsid.set(d.vsid, v);
    }
    const q = { regs, targets, byVsid, lock: new Mutex(`kvm.vsmmu-${vm}.${vsmmu}.cmdq`) };
    this.queues.set(key, q);
    return q;
  }

  /** The accelerated vSMMU register an access hits (the emulated instance numbered after them is the VMM's). */
  private at(access: MmioAccess, vm: number, offset: number): { q: KvmQueue; vsmmu: number } | undefined {
    if (!this.active) return undefined;
    const reg = vsmmuRegister(access.physAddr, 64);
    if (!reg || reg.offset !== offset) return undefined;
    const q = this.queue(vm, reg.vsmmu);
    return q ? { q, vsmmu: reg.vsmmu } : undefined;
  }

  async mmio(access: MmioAccess, req: Request, ctx: OpContext, vm: number): Promise<HandlerResult | undefined> {
    if (!access.isWrite) return undefined;
    const hit = this.at(access, vm, SMMU_REG.CMDQ_PROD);
    if (!hit) return undefined;
    const { q, vsmmu } = hit;
    this.counters.prodWrites += 1;
    return q.lock.with(async () => {
      q.regs.prod = access.data >>> 0;
      const writes: MemoryRange[] = [];
      const r = await this.consume(vm, vsmmu, q, req, writes, ctx);
      if (r === 'done') return { status: 0, payload: req.payload, guestMemory: writes };
      // KVM_EXIT_MMIO with the PROD write: the VMM consumes from CONS, where KVM stopped.
      this.counters.handedToVmm += 1;
      const u = await ctx.call(`qemu-${vm}`, 'MMIO_EXIT', req.payload, req.guestMemory);
      return { status: u.status, payload: u.payload, guestMemory: [...writes, ...u.guestMemory] };
    }, ctx);
  }

  /** A CMDQ_CONS read: served from the shared registers, in the kernel. Other registers go to the VMM. */
  async mmioRead(access: MmioAccess, _req: Request, _ctx: OpContext, vm: number): Promise<HandlerResult | undefined> {
    const hit = this.at(access, vm, SMMU_REG.CMDQ_CONS);
    if (!hit) return undefined;
    this.counters.consReads += 1;
    return { status: 0, payload: encodeMmio({ ...access, data: hit.q.regs.cons }) };
  }

  /**
   * Runs the queue from CONS to PROD as far as KVM takes it: runs of taken commands go to iommufd
   * at each CMD_SYNC (which then completes) and at the end; a command it does not take ends the
   * walk with CONS on it ('to-vmm').
   */
  private async consume(vm: number, vsmmu: number, q: KvmQueue, req: Request, writes: MemoryRange[], ctx: OpContext): Promise<Consumed> {
    const s = q.regs;
    const log2 = VSMMU_CMDQ_LOG2_ENTRIES;
    const base = vsmmuCmdqGpa(vsmmu);
    // Halted until the guest acknowledges (GERRORN, to the VMM): the VMM gets the write and its slots.
    if ((s.gerror ^ s.gerrorn) & GERROR_CMDQ_ERR) return 'to-vmm';
    const held: Buffer[] = [];
    const heldCons: number[] = [];
    const settle = async (): Promise<boolean> => {
      if (held.length === 0) return true;
      const failed = await this.forward(q, held, ctx);
      const at = heldCons[Math.min(Math.max(failed, 0), heldCons.length - 1)];
      held.length = 0;
      heldCons.length = 0;
      if (failed < 0 || at === undefined) return true;
      s.cons = Q.withConsErr(at, Q.CERROR.ILL);
      s.gerror = s.gerror ^ GERROR_CMDQ_ERR;
      this.counters.errors += 1;
      return false;
    };
    let cons = s.cons;
    const prod = s.prod;
    while (Q.ptr(cons, log2) !== Q.ptr(prod, log2)) {
      const bytes = readGuestRam(req.guestMemory, this.env.topology.ramDir, vm, base + Q.index(cons, log2) * CMD_SIZE, CMD_SIZE);
      ctx.charge('kvm.vsmmu_cmd');
      const cmd = decodeCommand(bytes, 0);
      if (!cmd.error && KVM_CMDQ_OPCODES.has(cmd.opcode)) {
        held.push(bytes);
        heldCons.push(cons);
        cons = Q.inc(cons, log2);
        continue;
      }
      s.cons = cons;
      if (!(await settle())) return 'to-vmm';
      if (cmd.error || cmd.opcode !== Opcode.CMD_SYNC) return 'to-vmm';
      this.counters.syncs += 1;
      if (cmd.fields.cs === SyncCs.IRQ && cmd.fields.msiaddr) {
        const data = Buffer.alloc(4);
        data.writeUInt32LE((cmd.fields.msidata ?? 0) >>> 0);
        writes.push({ gpa: Number(cmd.fields.msiaddr), data });
      }
      cons = Q.inc(cons, log2);
    }
    s.cons = cons;
    return (await settle()) ? 'done' : 'to-vmm';
  }

  /**
   * One VIOMMU_INVALIDATE per vIOMMU the commands route to, in the kernel, one after another.
   * Returns the index of the first command a call failed on, or -1.
   */
  private async forward(q: KvmQueue, commands: readonly Buffer[], ctx: OpContext): Promise<number> {
    this.counters.commandsTaken += commands.length;
    const plan = planRoutes(commands, q.targets, (bytes) => {
      readScope(bytes, 0, this.scope);
      return routeCommand(this.scope, q.targets, { bySid: (vsid) => q.byVsid.get(vsid) });
    });
    return invalidatePlanned(plan, commands, KERNEL_ARRAY_ADDR, (payload) => {
      this.counters.invalidateCalls += 1;
      return ctx.call('vfio', 'VIOMMU_INVALIDATE', payload);
    });
  }

  stats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.counters)) out[`kvmCmdq.${k}`] = v;
    return out;
  }
}

/** The in-kernel vSMMU queue, for a design whose traits say when KVM takes it (DesignTraits.kvmCmdq). */
export function kvmCmdqDevice(traits: DesignTraits): KvmDeviceFactory {
  return (env) => new KvmVsmmuCmdq(env, traits);
}
