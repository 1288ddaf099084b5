import { Errno } from '../runtime/errors.js';
import { HW_QUEUE_ALLOC_SIZE, IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, decodeHwQueueAlloc, encodeDestroy, encodeHwQueueAlloc } from '../formats/iommufd-hw-queue.js';

import { decodeMigrateRequest, encodeMigrateReply } from '../formats/migration.js';
import type { OpContext } from '../runtime/op-context.js';
import { EMPTY, type HandlerResult, type RoleEnv, type Request } from '../runtime/role-api.js';
import { VCMDQ_GUEST_LOG2_ENTRIES, vcmdqGuestGpa } from '../formats/smmu/registers.js';
import { iommufdLayoutOf } from '../designs/registry.js';

/** The HW queues one vSMMU of the VM has: HW_QUEUE object ids by logical index. */
interface VsmmuQueues {
  vsmmu: number;
  viommuId: number;
  /** Logical VCMDQs the guest's vSMMU exposes (what the VMM asks for on any host). */
  exposed: number;
  ids: number[];
}

/**
 * The VMM's side of a live migration (VM_MIGRATE): the VM is paused; its HW queues are destroyed
 * on the source, last logical VCMDQ first (IOMMU_DESTROY), and allocated again on the destination,
 * first one first (IOMMU_HW_QUEUE_ALLOC over the same guest queue memory), as many as the
 * destination has free for each vSMMU. The destination is this same host, as the simulation
 * models it in place. The guest's vSMMU keeps exposing all its VCMDQs: those left without a HW
 * queue are served on the trapped path. The reply tells the guest how many each vSMMU kept.
 */
export class VmMigration {
  private readonly vsmmus: VsmmuQueues[];
  /** vSMMU instances of the VM, as the guest numbers them. */
  private readonly count: number;
  readonly counters = { migrations: 0, hwQueuesDestroyed: 0, hwQueuesAllocated: 0 };

  constructor(env: RoleEnv) {
    const vm = env.self.index;
    const layout = iommufdLayoutOf(env.topology);
    const mine = layout.viommus.filter((v) => v.vm === vm);
    this.count = env.topology.vsmmu === 'per-psmmu' ? mine.length : Math.min(1, mine.length);
    const byVsmmu = new Map<number, VsmmuQueues>();
    for (const q of layout.hwQueues.filter((h) => h.vm === vm).sort((a, b) => a.index - b.index)) {
      const s = byVsmmu.get(q.vsmmu) ?? { vsmmu: q.vsmmu, viommuId: q.viommuId, exposed: 0, ids: [] };
      s.ids.push(q.id);
      s.exposed = s.ids.length;
      byVsmmu.set(q.vsmmu, s);
    }
    this.vsmmus = [...byVsmmu.values()].sort((a, b) => a.vsmmu - b.vsmmu);
  }

  async migrate(req: Request, ctx: OpContext): Promise<HandlerResult> {
    const m = decodeMigrateRequest(req.payload);
    if (!m) return { status: -Errno.EINVAL, payload: EMPTY };
    this.counters.migrations += 1;
    // Leave the source: every vSMMU's queues, in descending logical order (each depends on the one below).
    for (const s of this.vsmmus) {
      while (s.ids.length > 0) {
        const id = s.ids[s.ids.length - 1] as number;
        const r = await ctx.call('vfio', 'IOMMU_DESTROY', encodeDestroy(id));
        if (r.status !== 0) return { status: r.status, payload: EMPTY };
        s.ids.pop();
        this.counters.hwQueuesDestroyed += 1;
      }
    }
    // Arrive on the destination: ascending, up to what it has free; a refusal ends that vSMMU's list.
    // The modeled time from here is the re-creation's own cost, reported apart (hwQueueRecreateNs).
    const arriveNs = ctx.modeledNs;
    for (const s of this.vsmmus) {
      const want = Math.min(s.exposed, m.destVcmdqs);
      for (let q = 0; q < want; q++) {
        const length = 16 << VCMDQ_GUEST_LOG2_ENTRIES;
        const r = await ctx.call('vfio', 'IOMMU_HW_QUEUE_ALLOC', encodeHwQueueAlloc({
          size: HW_QUEUE_ALLOC_SIZE, flags: 0, viommuId: s.viommuId, type: IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, index: q, outHwQueueId: 0,
          nestingParentIova: vcmdqGuestGpa(s.vsmmu, q), length,
        }));
        const id = r.status === 0 ? decodeHwQueueAlloc(r.payload)?.outHwQueueId : undefined;
        if (id === undefined) break;
        s.ids.push(id);
        this.counters.hwQueuesAllocated += 1;
      }
    }
    const kept = Array.from({ length: this.count }, (_, v) => this.vsmmus.find((s) => s.vsmmu === v)?.ids.length ?? 0);
    return { status: 0, payload: encodeMigrateReply(kept, ctx.modeledNs - arriveNs) };
  }
}
