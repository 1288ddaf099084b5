import { Errno } from '../common/errors.js';
import type { Envelope__Output } from '../common/generated/vmmsim/v1/Envelope.js';
import type { Topology__Output } from '../common/generated/vmmsim/v1/Topology.js';
import { CMDQV_VCMDQS, MAX_SID_PAIRS, iommufdLayout, viommuVmid } from '../common/iommufd-objects.js';
import { decodeMmio, encodeMmio } from '../common/kvm-run.js';
import type { Logger } from '../common/logger.js';
import type { OpContext } from '../common/op-context.js';
import type { HandlerResult } from '../common/role-api.js';
import { CMD_SIZE, Opcode } from '../common/smmu/commands.js';
import { VCMDQ_GUEST_LOG2_ENTRIES, VCMDQ_REG, decodeVcmdqRegister } from '../common/smmu/registers.js';
import type { MemoryRange } from '../common/transport/link.js';
import { VcmdqPool, type Vcmdq } from '../../worker-pool/index.js';
import type { Iotlb } from './iotlb.js';

/** VINTF0 belongs to the host kernel; guests get VINTF 1.. in VM order. */
const FIRST_GUEST_VINTF = 1;

/**
 * The CMDQV beside one physical SMMU, as the host sets it up at VM start: per VM whose vSMMU fronts
 * this SMMU, a VINTF with the VM's VMID and SID_MATCH/SID_REPLACE pairs for its devices here, and
 * the HW_QUEUEs the VMM allocated (logical VCMDQs in ascending order). Guest writes to the VINTF
 * page reach it with no trap: PROD hands the new slots to the queue's worker; GERRORN recovers a
 * halted queue. Queues the CMDQV cannot provide are left out, and the guest keeps using the trapped
 * vSMMU queue for them.
 */
export class VintfPage {
  private pool: VcmdqPool | undefined;
  /** Queues by (vsmmu, logical index), per VM. */
  private readonly queues = new Map<string, Vcmdq>();
  readonly counters = { vcmdqSubmissions: 0, vcmdqCommands: 0, vevents: 0, vcmdqsMissing: 0 };

  constructor(
    private readonly psmmu: number,
    private readonly topology: Topology__Output,
    private readonly iotlb: Iotlb,
    private readonly log: Logger,
  ) {}

  private static key(vm: number, vsmmu: number, lidx: number): string {
    return `${vm}/${vsmmu}/${lidx}`;
  }

  async init(): Promise<void> {
    const t = this.topology;
    const hw = iommufdLayout(t).hwQueues.filter((q) => q.psmmu === this.psmmu);
    if (hw.length === 0) return;
    const vms = [...new Set(hw.map((q) => q.vm))].sort((a, b) => a - b);
    const pool = await VcmdqPool.start({
      iotlb: this.iotlb,
      workers: Math.min(2, hw.length),
      vintfs: FIRST_GUEST_VINTF + vms.length,
      vcmdqs: CMDQV_VCMDQS,
      // One SID_MATCH/SID_REPLACE pair per device of a VM behind this SMMU (at least QEMU's 16).
      sidPairs: Math.min(MAX_SID_PAIRS, Math.max(16, ...vms.map((vm) => t.devices.filter((d) => d.vm === vm && d.psmmu === this.psmmu).length))),
    });
    this.pool = pool;
    pool.onVevent((e) => {
      this.counters.vevents += 1;
      this.log.debug({ vevent: e }, 'VCMDQ halted');
    });
    for (const [i, vm] of vms.entries()) {
      const vintf = FIRST_GUEST_VINTF + i;
      const ok = pool.assignVintf(vintf, viommuVmid(t, vm, this.psmmu));
      if (!ok.ok) throw ok.error;
      let slot = 0;
      for (const d of t.devices) {
        if (d.vm !== vm || d.psmmu !== this.psmmu) continue;
        const r = pool.setSidPair(vintf, slot++, d.vsid, d.psid);
        if (!r.ok) throw r.error;
      }
      for (const q of hw.filter((x) => x.vm === vm).sort((a, b) => a.index - b.index)) {
        const r = await pool.allocate(vintf, q.index, VCMDQ_GUEST_LOG2_ENTRIES);
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

  /** A guest access to its VINTF page. */
  async access(req: Envelope__Output, vm: number, ctx: OpContext): Promise<HandlerResult> {
    const mmio = decodeMmio(req.payload);
    const reg = mmio ? decodeVcmdqRegister(mmio.physAddr) : undefined;
    const queue = reg ? this.queues.get(VintfPage.key(vm, reg.vsmmu, reg.queue)) : undefined;
    if (!mmio || !reg || !queue) return { status: -Errno.EFAULT, payload: req.payload };
    if (!mmio.isWrite) {
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
    for (let at = 0; at < slots.length; at += CMD_SIZE) if (slots[at] === Opcode.CMD_SYNC) syncs += 1;
    const r = await queue.submit(slots);
    // Invalidations delivered (syncs not counted), and the hardware's work in modeled time.
    const executed = r.status === 'completed' ? slots.length / CMD_SIZE - syncs : r.commands;
    this.counters.vcmdqCommands += r.status === 'completed' ? executed : 0;
    // The queue's execution is the contended part: operations on the same VCMDQ wait for each other.
    await ctx.hold(`psmmu-${this.psmmu}.vcmdq-${vm}.${reg.vsmmu}.${reg.queue}`, () => {
      ctx.charge('smmu.cmd_exec', r.status === 'completed' ? executed : r.commands);
      ctx.charge('smmu.sync', r.status === 'completed' ? syncs : 0);
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
