import { Errno } from '../common/errors.js';
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
  private readonly counters = { hwptInvalidate: 0, commands: 0, chunks: 0, einval: 0, eio: 0, eopnotsupp: 0 };

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
    if (status === -Errno.EINVAL) this.counters.einval += 1;
    else if (status === -Errno.EIO) this.counters.eio += 1;
    else if (status === -Errno.EOPNOTSUPP) this.counters.eopnotsupp += 1;
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
      this.count(check);
      return { status: check, payload: withEntryNum(head, 0) };
    }
    const viommu = this.viommus.get(head.hwptId);
    if (!viommu) {
      this.count(-Errno.EINVAL);
      return { status: -Errno.EINVAL, payload: withEntryNum(head, 0) };
    }
    const vdevs = this.vdevs.get(viommu.id) as Map<number, VdeviceObject>;
    const peer = `psmmu-${viommu.psmmu}`;
    const r = await invalidateEntries(head, entries, viommu, vdevs, {
      converted: () => ctx.charge('kernel.hwpt_cmd'),
      submit: async (chunk, commands) => {
        ctx.charge('kernel.cmdq_insert', commands + 1);
        this.counters.chunks += 1;
        this.counters.commands += commands;
        return (await ctx.call(peer, 'CMDQ_SUBMIT', chunk)).status;
      },
    });
    this.count(r.status);
    return { status: r.status, payload: withEntryNum(head, r.entryNum) };
  }

  stats(): Record<string, number> {
    return { ...this.counters };
  }

  close(): void {
    this.tables.close();
  }
}

export function createRole(env: RoleEnv): RoleInstance {
  return new VfioRole(env);
}
