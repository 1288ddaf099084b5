import { Errno, errnoName } from '../common/errors.js';
import { encodeMmio } from '../common/kvm-run.js';
import { CMD_SIZE, cmdSync, encodeCommand } from '../common/smmu/commands.js';
import * as Q from '../common/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG } from '../common/smmu/registers.js';
import type { Envelope__Output } from '../common/generated/vmmsim/v1/Envelope.js';
import { decodeHwptInvalidate, withEntryNum } from '../common/iommufd.js';
import { iommufdLayout, type VdeviceObject, type ViommuObject } from '../common/iommufd-objects.js';
import type { OpContext } from '../common/op-context.js';
import { EMPTY, type HandlerResult, type RoleEnv, type RoleInstance } from '../common/role-api.js';
import type { Endpoint } from '../common/topology.js';
import { HostTables } from './host-tables.js';
import { checkHwptInvalidate, invalidateEntries } from './hwpt-invalidate.js';

/**
 * vfio: the host kernel's VFIO and iommufd, holding the iommufd objects of every VM and turning a
 * VMM's HWPT_INVALIDATE into commands on the right physical SMMU's CMDQ.
 */
class VfioRole implements RoleInstance {
  private readonly viommus = new Map<number, ViommuObject>();
  /** vDEVICEs of each vIOMMU by vSID. */
  private readonly vdevs = new Map<number, Map<number, VdeviceObject>>();
  private readonly counters = { hwptInvalidate: 0, commands: 0, chunks: 0, cmdqRecoveries: 0 };
  /** The GERRORN value the host driver last wrote to each physical SMMU. */
  private readonly gerrorn = new Map<string, number>();
  /** Failed calls by errno name (EINVAL, EIO, ENOENT...). */
  private readonly errors: Record<string, number> = {};

  private readonly tables: HostTables;

  constructor(env: RoleEnv) {
    this.tables = new HostTables(env.topology);
    const layout = iommufdLayout(env.topology);
    for (const v of layout.viommus) {
      this.viommus.set(v.id, v);
      this.vdevs.set(v.id, new Map());
    }
    for (const d of layout.vdevices) this.vdevs.get(d.viommuId)?.set(d.vsid, d);
  }

  async handle(req: Envelope__Output, ctx: OpContext, from: Endpoint): Promise<HandlerResult> {
    if (req.kind === 'HWPT_INVALIDATE' && from.role === 'qemu') return this.hwptInvalidate(req.payload, ctx);
    return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
  }

  private count(status: number): void {
    if (status === 0) return;
    const name = errnoName(status);
    this.errors[name] = (this.errors[name] ?? 0) + 1;
  }

  /** IOMMU_HWPT_INVALIDATE on a vIOMMU: the core checks, then the conversion and chunking. */
  private async hwptInvalidate(payload: Buffer, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('ioctl.syscall');
    this.counters.hwptInvalidate += 1;
    const parsed = decodeHwptInvalidate(payload);
    if (!parsed) return { status: -Errno.EFAULT, payload: EMPTY };
    const { head, entries } = parsed;
    const check = checkHwptInvalidate(head, entries.length);
    if (check !== 0 || head.entryNum === 0) {
      // A failed check, or a successful probe of the data type (entry_num 0).
      this.count(check);
      return { status: check, payload: withEntryNum(head, 0) };
    }
    const viommu = this.viommus.get(head.hwptId);
    if (!viommu) {
      // iommufd_get_object() finds no object of that id.
      this.count(-Errno.ENOENT);
      return { status: -Errno.ENOENT, payload: withEntryNum(head, 0) };
    }
    const vdevs = this.vdevs.get(viommu.id) as Map<number, VdeviceObject>;
    const peer = `psmmu-${viommu.psmmu}`;
    const r = await invalidateEntries(head, entries, viommu, vdevs, {
      converted: () => ctx.charge('kernel.hwpt_cmd'),
      submit: async (chunk, commands) => {
        ctx.charge('kernel.cmdq_insert', commands + 1);
        this.counters.chunks += 1;
        this.counters.commands += commands;
        const r = await ctx.call(peer, 'CMDQ_SUBMIT', chunk);
        if (r.status !== 0 && r.payload.length >= 4) await this.recover(peer, r.payload.readUInt32LE(0), ctx);
        return r.status;
      },
    });
    this.count(r.status);
    return { status: r.status, payload: withEntryNum(head, r.entryNum) };
  }

  /**
   * arm_smmu_cmdq_skip_err for the physical queue: on CERROR_ILL, a CMD_SYNC over the refused
   * command and GERRORN = GERROR, so the queue runs again for everyone else.
   */
  private async recover(peer: string, cons: number, ctx: OpContext): Promise<void> {
    if (Q.consErr(cons) !== Q.CERROR.ILL) return;
    this.counters.cmdqRecoveries += 1;
    const sync = Buffer.alloc(CMD_SIZE);
    encodeCommand(cmdSync(), sync, 0);
    // The host driver tracks GERROR by toggling: after one error it is the previous GERRORN ^ CMDQ_ERR.
    this.gerrorn.set(peer, (this.gerrorn.get(peer) ?? 0) ^ GERROR_CMDQ_ERR);
    const mmio = encodeMmio({ physAddr: SMMU_REG.GERRORN, data: this.gerrorn.get(peer) ?? 0, len: 4, isWrite: true });
    await ctx.call(peer, 'HOST_MMIO', mmio, [{ gpa: 0, data: sync }]);
  }

  stats(): Record<string, number> {
    const errors = Object.fromEntries(Object.entries(this.errors).map(([k, v]) => [`errors.${k}`, v]));
    return { ...this.counters, ...errors };
  }

  close(): void {
    this.tables.close();
  }
}

export function createRole(env: RoleEnv): RoleInstance {
  return new VfioRole(env);
}
