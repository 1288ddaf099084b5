/**
 * A guest process's Prometheus instruments: the operations it completed and the invalidation
 * commands its IOMMU driver issued. Both are counted by the guest anyway; they are read when
 * Prometheus scrapes, so an operation makes no metrics call.
 */
import { RunTotals, perRegistry, totalsCounter, type Registry } from '../runtime/metrics.js';
import type { OpStats } from './op-stats.js';

/** What the invalidation count is read from: the run's DMA API. */
export interface InvalidationSource {
  readonly guestCommands: number;
}

class GuestMetrics {
  private readonly ops = new RunTotals<OpStats>((stats, emit) => {
    for (const r of stats.opReports()) {
      emit(`done\u0000${r.op}`, Number(r.count ?? 0));
      emit(`failed\u0000${r.op}`, Number(r.failed ?? 0));
    }
  });
  private readonly invalidations = new RunTotals<InvalidationSource>((dma, emit) => emit('commands', dma.guestCommands));

  constructor(registry: Registry) {
    const ops = (prefix: string) => (emit: (labels: readonly string[], total: number) => void): void => {
      for (const [key, n] of this.ops.totals()) if (key.startsWith(prefix)) emit([key.slice(prefix.length)], n);
    };
    totalsCounter(registry, 'vmmsim_guest_operations_total', 'Operations the guest completed, by name (map, unmap, flush, invalidate...).', ['op'], ops('done\u0000'));
    totalsCounter(registry, 'vmmsim_guest_operation_failures_total', 'Operations that failed (a status other than 0 from below), by name.', ['op'], ops('failed\u0000'));
    totalsCounter(registry, 'vmmsim_guest_invalidations_total', 'Invalidation commands the guest IOMMU driver issued (results.json guestCommands): TLBIs, VT-d descriptors, virtio-iommu UNMAPs, TCE updates.', [], (emit) =>
      emit([], this.invalidations.totals().get('commands') ?? 0),
    );
  }

  /** A run's DMA API (one per configured run). */
  attachDriver(dma: InvalidationSource): void {
    this.invalidations.attach(dma);
  }

  detachDriver(dma: InvalidationSource): void {
    this.invalidations.detach(dma);
  }

  /** A workload's operation records (one per Start). */
  attachOps(stats: OpStats): void {
    this.ops.attach(stats);
  }

  detachOps(stats: OpStats): void {
    this.ops.detach(stats);
  }
}

export type { GuestMetrics };
/** The guest instruments of a registry (one set per process). */
export const guestMetrics = perRegistry((registry) => new GuestMetrics(registry));
