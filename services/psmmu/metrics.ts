/**
 * A pSMMU process's Prometheus instruments. The SMMU already counts what it does in plain numbers
 * (commands by opcode, event records by type, translations); these are read when Prometheus
 * scrapes, so the command and DMA paths make no metrics call. Queue depths are read live.
 */
import { Gauge } from 'prom-client';
import { RunTotals, perRegistry, totalsCounter, type Registry } from '../runtime/metrics.js';
import { opcodeName } from '../formats/smmu/commands.js';

/** Entries waiting in one VCMDQ and the worker thread that serves it. */
export interface VcmdqDepth {
  /** vcmdq-VM.VSMMU.LIDX, as the queue's modeled resource is named. */
  queue: string;
  worker: number;
  entries: number;
}

/** What a running pSMMU (one configured run) shows its metrics. */
export interface PsmmuState {
  /** Commands the main CMDQ executed, by opcode, CMD_SYNC included. */
  readonly cmdqOpcodes: Float64Array;
  /** Commands its VCMDQs executed, by opcode, CMD_SYNC included. */
  readonly vcmdqOpcodes: Float64Array;
  /** Event records by type (F_TRANSLATION, C_BAD_STE...). */
  readonly events: ReadonlyMap<string, number>;
  vevents(): number;
  translations(): { hits: number; misses: number };
  /** Entries between CONS and PROD of the main CMDQ now, and the most it held. */
  cmdqEntries(): number;
  cmdqPeak(): number;
  vcmdqDepths(): readonly VcmdqDepth[];
  workerThreads(): number;
}

function opcodeTotals(key: string, counts: Float64Array, emit: (key: string, value: number) => void): void {
  for (let op = 0; op < counts.length; op++) {
    const n = counts[op] ?? 0;
    if (n > 0) emit(`${key}\u0000${opcodeName(op)}`, n);
  }
}

class PsmmuMetrics {
  private readonly totals = new RunTotals<PsmmuState>((s, emit) => {
    opcodeTotals('cmdq', s.cmdqOpcodes, emit);
    opcodeTotals('vcmdq', s.vcmdqOpcodes, emit);
    for (const [type, n] of s.events) emit(`event\u0000${type}`, n);
    emit('vevents', s.vevents());
    const t = s.translations();
    emit('translation\u0000hit', t.hits);
    emit('translation\u0000miss', t.misses);
  });
  private live: PsmmuState | undefined;
  private peak = 0;

  constructor(registry: Registry) {
    const totals = this.totals;
    const each = (prefix: string, emit: (labels: readonly string[], total: number) => void): void => {
      for (const [key, n] of totals.totals()) if (key.startsWith(prefix)) emit(key.slice(prefix.length).split('\u0000'), n);
    };
    totalsCounter(registry, 'vmmsim_psmmu_commands_total', 'SMMU commands executed, by queue (cmdq: the main command queue; vcmdq: the CMDQV\'s VCMDQs) and opcode name, CMD_SYNC included.', ['queue', 'opcode'], (emit) => {
      each('', (labels, n) => {
        if (labels[0] === 'cmdq' || labels[0] === 'vcmdq') emit(labels, n);
      });
    });
    totalsCounter(registry, 'vmmsim_psmmu_events_total', 'Event records the SMMU wrote, by type (F_TRANSLATION, C_BAD_STE...): the faults of device DMA and bad configuration.', ['type'], (emit) => each('event\u0000', emit));
    totalsCounter(registry, 'vmmsim_psmmu_vevents_total', 'VCMDQs halted on an illegal command (each a vEVENT to the VMM).', [], (emit) => emit([], totals.totals().get('vevents') ?? 0));
    totalsCounter(registry, 'vmmsim_psmmu_translations_total', 'Device DMA translations, by IOTLB result (hit, miss: a page-table walk).', ['result'], (emit) => each('translation\u0000', emit));
    const live = (): PsmmuState | undefined => this.live;
    const peak = (): number => {
      this.peak = Math.max(this.peak, this.live?.cmdqPeak() ?? 0);
      return this.peak;
    };
    new Gauge({
      name: 'vmmsim_psmmu_cmdq_entries',
      help: 'Commands between CONS and PROD of the main CMDQ now. The SMMU consumes each PROD write at once, so this is non-zero only while the queue is stopped on an error.',
      registers: [registry],
      collect(this: Gauge) {
        this.set(live()?.cmdqEntries() ?? 0);
      },
    });
    new Gauge({
      name: 'vmmsim_psmmu_cmdq_peak_entries',
      help: 'The most commands the main CMDQ held at once (after a PROD write) since this process started.',
      registers: [registry],
      collect(this: Gauge) {
        this.set(peak());
      },
    });
    new Gauge({
      name: 'vmmsim_psmmu_vcmdq_entries',
      help: 'Commands written to a VCMDQ and not consumed yet, per queue (vcmdq-VM.VSMMU.LIDX).',
      labelNames: ['queue'],
      registers: [registry],
      collect(this: Gauge<'queue'>) {
        this.reset();
        for (const d of live()?.vcmdqDepths() ?? []) this.labels(d.queue).set(d.entries);
      },
    });
    new Gauge({
      name: 'vmmsim_worker_pool_pending_commands',
      help: 'The VCMDQ worker pool\'s queue: commands waiting in the VCMDQs each worker thread serves.',
      labelNames: ['worker'],
      registers: [registry],
      collect(this: Gauge<'worker'>) {
        this.reset();
        const byWorker = new Map<number, number>();
        for (const d of live()?.vcmdqDepths() ?? []) byWorker.set(d.worker, (byWorker.get(d.worker) ?? 0) + d.entries);
        for (const [w, n] of byWorker) this.labels(String(w)).set(n);
      },
    });
    new Gauge({
      name: 'vmmsim_worker_pool_threads',
      help: 'Worker threads of the VCMDQ pool (0 when the run has no VCMDQs).',
      registers: [registry],
      collect(this: Gauge) {
        this.set(live()?.workerThreads() ?? 0);
      },
    });
  }

  /** The run that starts: its counts are read live from now on. */
  attach(state: PsmmuState): void {
    this.totals.attach(state);
    this.live = state;
  }

  /** The run ended: its counts stay in the totals. */
  detach(state: PsmmuState): void {
    if (this.live === state) {
      this.peak = Math.max(this.peak, state.cmdqPeak());
      this.live = undefined;
    }
    this.totals.detach(state);
  }
}

export type { PsmmuMetrics };
/** The pSMMU instruments of a registry (one set per process). */
export const psmmuMetrics = perRegistry((registry) => new PsmmuMetrics(registry));
