import { Errno } from '../runtime/errors.js';
import type { Topology__Output } from '../runtime/generated/vmmsim/v1/Topology.js';
import { CMDQV_VCMDQS, FIRST_GUEST_VINTF, MAX_SID_PAIRS, cmdqvPlan, globalVcmdq, viommuVmid, vintfOf, type CmdqvPlan } from '../machine/iommufd-objects.js';
import { decodeMmio, encodeMmio } from '../formats/kvm-run.js';
import type { Logger } from '../runtime/logger.js';
import type { OpContext } from '../runtime/op-context.js';
import { type HandlerResult, type Request } from '../runtime/role-api.js';
import { CMD_SIZE, Opcode } from '../formats/smmu/commands.js';
import * as Q from '../formats/smmu/queue.js';
import { decodeCmdqAlloc, decodeCmdqAllocRegister } from '../formats/smmu/cmdqv-registers.js';
import { VCMDQ_GUEST_LOG2_ENTRIES, VCMDQ_REG, decodeVcmdqRegister } from '../formats/smmu/registers.js';
import type { MemoryRange } from '../runtime/transport/link.js';
import type { AtcInvalidations, ConfigInvalidations, Iotlb, Vcmdq, VcmdqPool } from '../../worker-pool/index.js';
import { iommufdLayoutOf } from '../designs/registry.js';

/**
 * The CMDQV beside one physical SMMU, as the host sets it up at VM start: per VM whose vSMMU fronts
 * this SMMU, a VINTF with the VM's VMID and SID_MATCH/SID_REPLACE pairs for its devices here, and
 * the HW_QUEUEs the VMM allocated (logical VCMDQs in ascending order, each on the global VCMDQ the
 * kernel maps it to). Guest writes to the VINTF page reach it with no trap: PROD hands the new
 * slots to the queue's worker; GERRORN recovers a halted queue. Queues the CMDQV cannot provide are
 * left out, and the guest keeps using the trapped vSMMU queue for them. Later the host kernel maps
 * and unmaps logical VCMDQs through CMDQ_ALLOC (a VM re-creating its HW queues on migration).
 */
export class VintfPage {
  private pool: VcmdqPool | undefined;
  /** Queues by (vsmmu, logical index), per VM. */
  private readonly queues = new Map<string, Vcmdq>();
  private plan: CmdqvPlan = { vms: [], lvcmdqsPerVintf: 0 };
  /** The vSMMU instance each VM with a VINTF here fronts this SMMU with. */
  private readonly vsmmuOfVm = new Map<number, number>();
  readonly counters = { vcmdqSubmissions: 0, vcmdqCommands: 0, vcmdqRegisterReads: 0, vevents: 0, vcmdqsMissing: 0, vcmdqWorkers: 0, vcmdqsMapped: 0, vcmdqsUnmapped: 0 };
  /** Commands the VCMDQs executed, by opcode (CMD_SYNC included): what the SMMU's metrics report. */
  readonly byOpcode = new Float64Array(256);

  constructor(
    private readonly psmmu: number,
    private readonly topology: Topology__Output,
    /**
     * The caches the VCMDQ workers share with the main thread: the IOTLB, the log CFGIs reach the
     * translator by and, with ATS, the log ATC_INVs reach the devices by.
     */
    private readonly caches: { iotlb: Iotlb; configLog: ConfigInvalidations; atcLog?: AtcInvalidations },
    private readonly log: Logger,
  ) {}

  private static key(vm: number, vsmmu: number, lidx: number): string {
    return `${vm}/${vsmmu}/${lidx}`;
  }

  async init(): Promise<void> {
    const t = this.topology;
    const layout = iommufdLayoutOf(t);
    const all = layout.hwQueues;
    const hw = all.filter((q) => q.psmmu === this.psmmu);
    if (hw.length === 0) return;
    const plan = cmdqvPlan(t, this.psmmu, layout);
    this.plan = plan;
    const vms = plan.vms;
    // The worker pool (piscina) is loaded by a pSMMU that has VCMDQs only.
    const { VcmdqPool: Pool, proportionateWorkers } = await import('../../worker-pool/pool.js');
    const pool = await Pool.start({
      iotlb: this.caches.iotlb,
      configLog: this.caches.configLog,
      ...(this.caches.atcLog ? { atcLog: this.caches.atcLog } : {}),
      // Every pSMMU with queues runs its own pool on the same cores.
      workers: proportionateWorkers(hw.length, new Set(all.map((q) => q.psmmu)).size),
      vintfs: FIRST_GUEST_VINTF + vms.length,
      vcmdqs: CMDQV_VCMDQS,
      // One SID_MATCH/SID_REPLACE pair per device of a VM behind this SMMU (at least QEMU's 16).
      sidPairs: Math.min(MAX_SID_PAIRS, Math.max(16, ...vms.map((vm) => t.devices.filter((d) => d.vm === vm && d.psmmu === this.psmmu).length))),
    });
    this.pool = pool;
    this.counters.vcmdqWorkers = pool.workers;
    pool.onVevent((e) => {
      this.counters.vevents += 1;
      this.log.debug({ vevent: e }, 'VCMDQ halted');
    });
    for (const vm of vms) {
      const vintf = vintfOf(plan, vm) as number;
      const ok = pool.assignVintf(vintf, viommuVmid(t, vm, this.psmmu));
      if (!ok.ok) throw ok.error;
      let slot = 0;
      for (const d of t.devices) {
        if (d.vm !== vm || d.psmmu !== this.psmmu) continue;
        const r = pool.setSidPair(vintf, slot++, d.vsid, d.psid);
        if (!r.ok) throw r.error;
      }
      for (const q of hw.filter((x) => x.vm === vm).sort((a, b) => a.index - b.index)) {
        this.vsmmuOfVm.set(vm, q.vsmmu);
        const r = await pool.allocate(vintf, q.index, VCMDQ_GUEST_LOG2_ENTRIES, globalVcmdq(plan, vintf, q.index));
        if (!r.ok) {
          // Fewer free VCMDQs than asked for: this queue stays with the trapped path.
          this.counters.vcmdqsMissing += 1;
          this.log.warn({ vm, queue: q.index, error: r.error.message }, 'VCMDQ not available');
          continue;
        }
        this.queues.set(VintfPage.key(vm, q.vsmmu, q.index), r.value);
      }
    }
  }

  /**
   * The host kernel's write to this CMDQV's config page, or undefined when the address is not one
   * of its registers. CMDQ_ALLOC(q) with ALLOCATED maps global VCMDQ q as the named VINTF's logical
   * VCMDQ (in ascending order); with ALLOCATED clear it unmaps it (in descending order). The
   * hardware would misbehave on a write against those rules; here it is refused with EINVAL (EBUSY
   * for a global VCMDQ already mapped), so a host bug shows.
   */
  async hostWrite(req: Request): Promise<HandlerResult | undefined> {
    const mmio = decodeMmio(req.payload);
    const queue = mmio ? decodeCmdqAllocRegister(mmio.physAddr) : undefined;
    if (!mmio || queue === undefined) return undefined;
    const pool = this.pool;
    if (!mmio.isWrite || !pool) return { status: -Errno.EINVAL, payload: req.payload };
    const a = decodeCmdqAlloc(mmio.data);
    const vm = this.plan.vms[a.vintf - FIRST_GUEST_VINTF];
    const vsmmu = vm === undefined ? undefined : this.vsmmuOfVm.get(vm);
    if (vm === undefined || vsmmu === undefined) return { status: -Errno.EINVAL, payload: req.payload };
    if (a.allocated) {
      const r = await pool.allocate(a.vintf, a.lidx, VCMDQ_GUEST_LOG2_ENTRIES, queue);
      if (!r.ok) return { status: r.error.code === 'E_VCMDQ_BUSY' ? -Errno.EBUSY : -Errno.EINVAL, payload: req.payload };
      this.queues.set(VintfPage.key(vm, vsmmu, a.lidx), r.value);
      this.counters.vcmdqsMapped += 1;
      return { status: 0, payload: req.payload };
    }
    const owner = pool.queueOwner(queue);
    if (!owner || owner.vintf !== a.vintf || owner.lidx !== a.lidx) return { status: -Errno.EINVAL, payload: req.payload };
    const r = await pool.free(a.vintf, a.lidx);
    if (!r.ok) return { status: -Errno.EINVAL, payload: req.payload };
    this.queues.delete(VintfPage.key(vm, vsmmu, a.lidx));
    this.counters.vcmdqsUnmapped += 1;
    return { status: 0, payload: req.payload };
  }

  /** A guest access to its VINTF page. */
  async access(req: Request, vm: number, ctx: OpContext): Promise<HandlerResult> {
    const mmio = decodeMmio(req.payload);
    const reg = mmio ? decodeVcmdqRegister(mmio.physAddr) : undefined;
    const queue = reg ? this.queues.get(VintfPage.key(vm, reg.vsmmu, reg.queue)) : undefined;
    if (!mmio || !reg || !queue) return { status: -Errno.EFAULT, payload: req.payload };
    if (!mmio.isWrite) {
      // A load from the VINTF page (the guest polling CONS for a CS_NONE CMD_SYNC): no trap.
      this.counters.vcmdqRegisterReads += 1;
      const r = queue.registers();
      const value = reg.reg === VCMDQ_REG.CONS ? r.cons : reg.reg === VCMDQ_REG.PROD ? r.prod : reg.reg === VCMDQ_REG.GERROR ? r.gerror : reg.reg === VCMDQ_REG.GERRORN ? r.gerrorn : 0;
      return { status: 0, payload: encodeMmio({ ...mmio, data: value }) };
    }
    // The slots the guest wrote since its last PROD write, in queue order.
    const slots = Buffer.concat(req.guestMemory.map((m) => m.data));
    if (reg.reg === VCMDQ_REG.GERRORN) {
      // Acknowledges only when the value written matches GERROR, as the register does.
      const r = queue.registers();
      if (!queue.halted || ((mmio.data ^ r.gerror) & 1) !== 0) return { status: 0, payload: req.payload };
      const ack = queue.acknowledge(slots.length === CMD_SIZE ? slots : undefined);
      if (!ack.ok) return { status: -Errno.EINVAL, payload: req.payload };
      const rest = await queue.flush();
      return { status: 0, payload: req.payload, guestMemory: msiWrites(rest.msi) };
    }
    if (reg.reg !== VCMDQ_REG.PROD || slots.length === 0 || slots.length % CMD_SIZE !== 0) return { status: 0, payload: req.payload };
    this.counters.vcmdqSubmissions += 1;
    let syncs = 0;
    // CMD_SYNCs behind ATC_INVs: each completes only when the devices answered.
    let atcSyncs = 0;
    let atcPending = false;
    for (let at = 0; at < slots.length; at += CMD_SIZE) {
      if (slots[at] === Opcode.ATC_INV) atcPending = true;
      else if (slots[at] === Opcode.CMD_SYNC) {
        syncs += 1;
        if (atcPending) atcSyncs += 1;
        atcPending = false;
      }
    }
    const r = await queue.submit(slots);
    // Invalidations delivered (syncs not counted), and the hardware's work in modeled time.
    const executed = r.status === 'completed' ? slots.length / CMD_SIZE - syncs : r.commands;
    const ran = r.status === 'completed' ? slots.length : r.commands * CMD_SIZE;
    for (let at = 0; at < ran; at += CMD_SIZE) {
      const op = slots[at] ?? 0;
      this.byOpcode[op] = (this.byOpcode[op] ?? 0) + 1;
    }
    this.counters.vcmdqCommands += r.status === 'completed' ? executed : 0;
    // The queue's execution is the contended part: operations on the same VCMDQ wait for each other.
    await ctx.hold(`psmmu-${this.psmmu}.vcmdq-${vm}.${reg.vsmmu}.${reg.queue}`, () => {
      ctx.charge('smmu.cmd_exec', r.status === 'completed' ? executed : r.commands);
      // CS=NONE only: the guest sees each sync by polling CONS, whose final read the step includes.
      ctx.charge('smmu.sync_polled', r.status === 'completed' ? syncs : 0);
      ctx.charge('smmu.atc_inv', r.status === 'completed' ? atcSyncs : 0);
    });
    if (r.status === 'halted') {
      // The guest learns of it from the vEVENT the VMM injects; here the reply says so at once.
      return { status: -Errno.EIO, payload: encodeMmio({ ...mmio, data: r.cons }), guestMemory: msiWrites(r.msi) };
    }
    return { status: 0, payload: req.payload, guestMemory: msiWrites(r.msi) };
  }

  get active(): boolean {
    return this.queues.size > 0;
  }

  /** Entries written and not consumed yet in each VCMDQ, with the worker serving it (for metrics). */
  queueDepths(): { queue: string; worker: number; entries: number }[] {
    const out: { queue: string; worker: number; entries: number }[] = [];
    for (const [key, q] of this.queues) {
      const r = q.registers();
      out.push({ queue: `vcmdq-${key.replaceAll('/', '.')}`, worker: q.worker, entries: Q.used(r.prod, r.cons, q.log2) });
    }
    return out;
  }

  /** Worker threads of the VCMDQ pool (0 without one). */
  get workerThreads(): number {
    return this.pool?.threadCount ?? 0;
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    this.queues.clear();
    await pool?.destroy();
  }
}

function msiWrites(msi: readonly { addr: number; data: number }[]): MemoryRange[] {
  return msi.map((w) => {
    const data = Buffer.alloc(4);
    data.writeUInt32LE(w.data >>> 0);
    return { gpa: w.addr, data };
  });
}
