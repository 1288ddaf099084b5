import type { OpContext } from '../runtime/op-context.js';
import type { GuestKernel } from './driver.js';

/**
 * Linux's flush queues (drivers/iommu/dma-iommu.c IOVA_DEFAULT_FQ_* and IOVA_SINGLE_FQ_*): a ring
 * of `size` slots per CPU or one for all, and the timeout of the domain's timer. A ring holds at
 * most size - 1 entries (fq_full).
 */
export const FQ_POLICIES = {
  'per-cpu': { size: 256, timeoutMs: 10, perCpu: true },
  single: { size: 32768, timeoutMs: 1000, perCpu: false },
} as const;

export type FlushQueueKind = keyof typeof FQ_POLICIES;

interface Entry<T> {
  /** fq_flush_start_cnt when it was queued: a flush that finished after that covers it. */
  counter: number;
  item: T;
}

/** What a domain does for its flush queue: its IOTLB flush, and freeing what a flush covered. */
export interface FlushQueueOps<T> {
  /** flush_iotlb_all of the domain, charged to `ctx`, run on vCPU `cpu` (or its timer); 0 or -errno. */
  flush(ctx: OpContext, cpu: number): Promise<number>;
  /** Frees entries a finished flush covers (IOVAs, page-table pages), charging `ctx`. */
  release(ctx: OpContext, items: readonly T[]): void;
}

/**
 * One IOMMU domain's lazy-mode flush queue, as dma-iommu runs it (queue_iova, fq_ring_free_locked,
 * fq_flush_iotlb, fq_flush_timeout), in modeled time:
 *  - queue (an unmap's queue_iova): first free this CPU's ring of the entries a finished flush
 *    covers, whichever CPU or timer flushed (fq_flush_finish_cnt: no new invalidation); if the ring
 *    is still full (size - 1 entries), flush the domain (charged to this unmap) and free again; then
 *    add the entry, which stays queued; arm the domain's timer if it is off (later unmaps do not
 *    re-arm it);
 *  - the timer: one per domain, `timeoutMs` after it was armed; it flushes the domain and frees
 *    every CPU's ring (fq_flush_timeout), in timer context: its own `flush` operation on the guest's
 *    timer thread (GuestKernel.timer), charged to no unmap and to no vCPU. A timer is seen when the
 *    next operation of the domain starts (enter) at or after its time, and run then at its own
 *    modeled time; one still armed at the end of the run fires in drain().
 * Decisions follow modeled time: enter() takes the vCPU's turn (ModeledOrder) so several vCPUs
 * sharing a queue act in the modeled order of their operations, never in the processes' real one.
 */
export class FlushQueue<T> {
  readonly policy: (typeof FQ_POLICIES)[FlushQueueKind];
  private readonly rings = new Map<number, Entry<T>[]>();
  private startCnt = 0;
  private finishCnt = 0;
  private timer: { atNs: number; cpu: number } | undefined;
  /** Flushes this queue ran, by cause. */
  readonly counters = { fullFlushes: 0, timerFlushes: 0 };

  constructor(
    kind: FlushQueueKind,
    private readonly kernel: GuestKernel,
    private readonly ops: FlushQueueOps<T>,
    /** The name the timer's flush is reported under. */
    private readonly opName = 'flush',
  ) {
    this.policy = FQ_POLICIES[kind];
  }

  /**
   * The flush-queue kind of a domain: guest.flushQueue, where `auto` is what Linux picks for the
   * driver (iommu_dma_init_options: the single queue when the IOMMU sets shadow_on_flush).
   */
  static kindFor(kernel: GuestKernel, shadowOnFlush: boolean): FlushQueueKind {
    const k = kernel.env.topology.guest?.flushQueue;
    if (k === 'single' || k === 'per-cpu') return k;
    return shadowOnFlush ? 'single' : 'per-cpu';
  }

  private ring(cpu: number): Entry<T>[] {
    const key = this.policy.perCpu ? cpu : 0;
    let r = this.rings.get(key);
    if (!r) {
      r = [];
      this.rings.set(key, r);
    }
    return r;
  }

  /**
   * Before any lazy-mode operation of vCPU `cpu` on the domain: its turn in modeled time, then the
   * domain's timer if it was due by the time the operation starts.
   */
  async enter(cpu: number): Promise<void> {
    const at = this.kernel.vcpuNs[cpu] ?? 0;
    await this.kernel.order?.turn(cpu, at);
    if (this.timer && this.timer.atNs <= at) await this.fire();
  }

  /** queue_iova at modeled `atNs` on vCPU `cpu`, charged to the unmap's `ctx`; 0 or the flush's -errno. */
  async queue(ctx: OpContext, cpu: number, atNs: number, item: T): Promise<number> {
    ctx.charge('guest.fq_insert');
    const ring = this.ring(cpu);
    this.freeCovered(ctx, ring);
    let status = 0;
    if (ring.length >= this.policy.size - 1) {
      this.counters.fullFlushes += 1;
      status = await this.flush(ctx, cpu);
      this.freeCovered(ctx, ring);
    }
    ring.push({ counter: this.startCnt, item });
    if (!this.timer) this.timer = { atNs: atNs + this.policy.timeoutMs * 1e6, cpu };
    return status;
  }

  /** fq_flush_iotlb: the flush counts around the domain's flush. */
  private async flush(ctx: OpContext, cpu: number): Promise<number> {
    this.startCnt += 1;
    const status = await this.ops.flush(ctx, cpu);
    this.finishCnt += 1;
    return status;
  }

  /** fq_ring_free_locked: frees the ring's head entries a finished flush covers. */
  private freeCovered(ctx: OpContext, ring: Entry<T>[]): void {
    let n = 0;
    while (n < ring.length && (ring[n] as Entry<T>).counter < this.finishCnt) n += 1;
    if (n > 0) this.ops.release(ctx, ring.splice(0, n).map((e) => e.item));
  }

  /** fq_flush_timeout at the timer's modeled time, in the guest's timer context. */
  private async fire(): Promise<void> {
    const t = this.timer;
    if (!t) return;
    this.timer = undefined;
    this.counters.timerFlushes += 1;
    await this.kernel.timer(this.opName, t.atNs, async (ctx) => {
      await this.flush(ctx, t.cpu);
      for (const ring of this.rings.values()) this.freeCovered(ctx, ring);
    });
  }

  /** The end of the run: the timer fires for whatever is still queued (at its own time). */
  async drain(): Promise<void> {
    while (this.timer) await this.fire();
  }

  pending(): number {
    let n = 0;
    for (const r of this.rings.values()) n += r.length;
    return n;
  }
}
