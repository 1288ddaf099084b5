import { errnoName } from '../runtime/errors.js';

import { decodeMigrateReplyFull, encodeMigrateRequest } from '../formats/migration.js';
import type { OpContext } from '../runtime/op-context.js';
import type { EndpointTable } from '../runtime/topology.js';
import type { DmaApi, GuestKernel } from './driver.js';
import { OpStats } from './op-stats.js';
import type { WorkloadSpec, WorkloadStep } from './workloads/common.js';
import { iommufdLayoutOf } from '../designs/registry.js';

/** The VM that workload.migration moves. */
export const MIGRATING_VM = 0;

type Phase = 'before' | 'after';

/**
 * The guest's operation records with the phase of the run each fell in: `map@before`,
 * `unmap@after`, so results and tables show the two sides of the step apart.
 */
class PhasedOpStats extends OpStats {
  private phase: Phase = 'before';
  private readonly names: string[] = [];

  override declare(name: string): void {
    if (!this.names.includes(name)) this.names.push(name);
    super.declare(`${name}@${this.phase}`);
  }

  override record(name: string, measuredNs: number, ctx: OpContext, thread: number, startNs: number, arrival = false, vcpu = thread): void {
    super.record(`${name}@${this.phase}`, measuredNs, ctx, thread, startNs, arrival, vcpu);
  }

  override fail(name: string): void {
    super.fail(`${name}@${this.phase}`);
  }

  /** The step was taken: what follows is `after`, and the operations declared so far are reported there too. */
  enterAfter(): void {
    this.phase = 'after';
    for (const n of this.names) super.declare(`${n}@after`);
  }
}

type ThreadState = 'running' | 'waiting' | 'done';

/**
 * A live migration of the VM in the middle of its workload (workload.migration). Each thread runs
 * its fixed share of `atOp` operations (shared as workload.ops is, so the step falls at the same
 * operations on every run) and stops; a thread that runs out of operations first stops too. When
 * none is running, the VM is paused: the guest asks for the move (VM_MIGRATE down its link to KVM,
 * which hands it to the VMM, as the management plane would tell the VMM), the VMM re-creates the
 * VM's HW queues on the destination with what it has free, and the guest's IOMMU driver learns
 * which VCMDQs are still hardware. The stopped vCPUs resume together, at the modeled time the last
 * of them stopped. The step's own time (the VM's downtime) is not an operation and is not modeled.
 */
export class MigrationStep implements WorkloadStep {
  readonly stats: PhasedOpStats;
  /**
   * hwQueueRecreateNs: the modeled time the VMM spent re-creating the HW queues at the destination
   * (its IOMMU_HW_QUEUE_ALLOC calls); migrationNs: the whole step's (destroying them at the source
   * too). Neither is an operation of the workload: the vCPUs are paused.
   */
  readonly counters = { migrations: 0, hwQueuesBefore: 0, hwQueuesAfter: 0, hwQueueRecreateNs: 0, migrationNs: 0 };
  private readonly destVcmdqs: number;
  private readonly quota: number[];
  private readonly ran: number[];
  private readonly state: ThreadState[];
  private started = false;
  private after = false;
  private readonly gate: Promise<void>;
  private open: () => void = () => undefined;
  private fail: (err: unknown) => void = () => undefined;

  constructor(
    private readonly kernel: GuestKernel,
    private readonly coherent: DmaApi,
    endpoints: EndpointTable,
    w: WorkloadSpec,
  ) {
    this.stats = new PhasedOpStats(endpoints, { warmupOps: kernel.env.topology.warmupOps });
    const threads = Math.max(1, w.threads);
    const atOp = w.migration?.atOp ?? 0;
    this.quota = Array.from({ length: threads }, (_, t) => Math.floor(atOp / threads) + (t < atOp % threads ? 1 : 0));
    this.ran = new Array<number>(threads).fill(0);
    this.state = new Array<ThreadState>(threads).fill('running');
    this.gate = new Promise<void>((resolve, reject) => {
      this.open = resolve;
      this.fail = reject;
    });
    // Nobody may be waiting when it settles (every thread ended first).
    this.gate.catch(() => undefined);
    const t = kernel.env.topology;
    this.counters.hwQueuesBefore = iommufdLayoutOf(t).hwQueues.filter((q) => q.vm === kernel.env.self.index).length;
    // Until the step is taken the VM keeps what it has.
    this.counters.hwQueuesAfter = this.counters.hwQueuesBefore;
    this.destVcmdqs = w.migration?.destVcmdqs ?? 0;
  }

  /** The step for this guest, or undefined when the scenario has none or moves another VM. */
  static forGuest(kernel: GuestKernel, coherent: DmaApi, endpoints: EndpointTable, w: WorkloadSpec): MigrationStep | undefined {
    if (kernel.env.self.index !== MIGRATING_VM || !((w.migration?.atOp ?? 0) > 0)) return undefined;
    return new MigrationStep(kernel, coherent, endpoints, w);
  }

  async reach(t: number): Promise<void> {
    if (this.after) return;
    const ran = this.ran[t] ?? 0;
    if (ran < (this.quota[t] ?? 0)) {
      this.ran[t] = ran + 1;
      return;
    }
    this.state[t] = 'waiting';
    this.take();
    await this.gate;
  }

  leave(t: number): void {
    this.state[t] = 'done';
    this.take();
  }

  /** Migrates once no thread is running and at least one waits to go on. */
  private take(): void {
    if (this.started || this.state.includes('running') || !this.state.includes('waiting')) return;
    this.started = true;
    this.migrate().then(
      () => {
        this.after = true;
        this.open();
      },
      (err: unknown) => this.fail(err),
    );
  }

  private async migrate(): Promise<void> {
    const k = this.kernel;
    const waiting = this.state.flatMap((s, t) => (s === 'waiting' ? [t] : []));
    const resumeNs = Math.max(...waiting.map((t) => k.vcpuNs[t] ?? 0));
    const ctx = k.env.newContext(0, 0);
    const r = await ctx.call('kvm', 'VM_MIGRATE', encodeMigrateRequest({ destVcmdqs: this.destVcmdqs }));
    const reply = r.status === 0 ? decodeMigrateReplyFull(r.payload) : undefined;
    if (!reply) throw new Error(`the VMM refused the migration (${errnoName(r.status)})`);
    const hwQueues = reply.hwQueues;
    this.counters.hwQueueRecreateNs = reply.recreateNs;
    this.counters.migrationNs = ctx.modeledNs;
    this.coherent.migrated?.(hwQueues);
    this.counters.migrations += 1;
    this.counters.hwQueuesAfter = hwQueues.reduce((a, b) => a + b, 0);
    for (const t of waiting) k.vcpuNs[t] = resumeNs;
    this.stats.enterAfter();
  }
}
