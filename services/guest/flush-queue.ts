import type { GuestKernel } from './driver.js';

/** Linux's flush queues (drivers/iommu/dma-iommu.c IOVA_DEFAULT_FQ_* and IOVA_SINGLE_FQ_*). */
export const FQ_POLICIES = {
  'per-cpu': { entries: 256, timeoutMs: 10, perCpu: true },
  single: { entries: 32768, timeoutMs: 1000, perCpu: false },
} as const;

export type FlushQueueKind = keyof typeof FQ_POLICIES;

interface Queue<T> {
  entries: T[];
  /** Modeled time its oldest entry was queued. */
  sinceNs: number;
}

/**
 * Lazy mode's deferred unmaps: entries wait in a per-CPU queue (or one shared queue) until it
 * holds its size or its oldest entry is older than its timeout, in the vCPU's modeled time, checked
 * when an unmap is queued (that unmap pays the flush). Modeled age, not real timers, so flushes fall
 * on the same operations in every run.
 */
export class FlushQueues<T> {
  private readonly queues = new Map<number, Queue<T>>();
  readonly policy: (typeof FQ_POLICIES)[FlushQueueKind];

  constructor(kind: FlushQueueKind) {
    this.policy = FQ_POLICIES[kind];
  }

  static forKernel<T>(kernel: GuestKernel): FlushQueues<T> {
    const kind = kernel.env.topology.guest?.flushQueue;
    return new FlushQueues<T>(kind === 'single' ? 'single' : 'per-cpu');
  }

  /** The queue a CPU uses: its own, or the single shared one (key 0). */
  keyOf(cpu: number): number {
    return this.policy.perCpu ? cpu : 0;
  }

  /**
   * Queues an entry at modeled time `nowNs`; returns the entries to invalidate and free now when
   * the queue is full or has aged out (they leave the queue), or undefined.
   */
  push(cpu: number, nowNs: number, entry: T): T[] | undefined {
    const key = this.keyOf(cpu);
    let q = this.queues.get(key);
    if (!q) {
      q = { entries: [], sinceNs: nowNs };
      this.queues.set(key, q);
    }
    if (q.entries.length === 0) q.sinceNs = nowNs;
    q.entries.push(entry);
    if (q.entries.length >= this.policy.entries || nowNs - q.sinceNs >= this.policy.timeoutMs * 1e6) return q.entries.splice(0);
    return undefined;
  }

  /** Everything still queued, by queue key in ascending order (the flush at the end of a run). */
  drain(): [number, T[]][] {
    return [...this.queues.entries()]
      .sort((a, b) => a[0] - b[0])
      .filter(([, q]) => q.entries.length > 0)
      .map(([k, q]) => [k, q.entries.splice(0)]);
  }

  pending(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.entries.length;
    return n;
  }
}
