import { guestRamFile } from '../machine/board.js';
import { Errno } from '../runtime/errors.js';
import type { StartReply } from '../runtime/generated/vmmsim/v1/StartReply.js';
import { emulatedDevicesOf, emulatedVsmmuOf } from '../machine/emulated-vsmmu.js';
import { vsmmuOfDevice } from '../machine/iommufd-objects.js';
import { FileMemory } from '../machine/memory.js';
import type { OpContext } from '../runtime/op-context.js';
import { EMPTY, type RoleEnv, type RoleFactory, type RoleInstance, type RunTopology } from '../runtime/role-api.js';
import type { Endpoint } from '../runtime/topology.js';
import { designOf } from '../designs/registry.js';
import { SETUP_THREAD, TIMER_THREAD, type DmaApi, type DmaApiFactory, type GuestDevice, type GuestKernel } from './driver.js';
import { NS_PER_US, nowNs } from '../runtime/clock.js';
import { withDmaMode } from './dma-modes.js';
import type { GuestMetrics } from './metrics.js';
import { MigrationStep } from './migration.js';
import { OpStats } from './op-stats.js';
import { Samples } from '../runtime/samples.js';
import { VcpuClocks } from './vcpu-clocks.js';
import { runWorkload } from './workload.js';

/** guest-N: a VM's guest OS running the workload through its DMA API and IOMMU driver. */
class GuestRole implements RoleInstance {
  private readonly env: RoleEnv;
  private readonly ram: FileMemory;
  private readonly dma: DmaApi;
  /** The architecture's DMA API itself, as dma_alloc_coherent uses it. */
  private readonly coherent: DmaApi;
  private readonly kernel: GuestKernel;
  private opStats: OpStats | undefined;
  private readonly metrics: GuestMetrics | undefined;
  private operations = 0;

  constructor(
    runtimeEnv: RoleEnv,
    /** The run's design's guest part: its DMA API over its IOMMU driver. */
    dmaApi: DmaApiFactory,
    /** Its Prometheus instruments, when the process serves metrics. */
    metrics: GuestMetrics | undefined,
  ) {
    // Every operation's context comes from here: while vmmsim explain looks for its operation
    // (guest-0 only), the contexts started are traced across the processes.
    const env: RoleEnv = {
      ...runtimeEnv,
      newContext: (opId, modeledNs) => {
        const ctx = runtimeEnv.newContext(opId, modeledNs);
        if (this.opStats?.explaining()) ctx.explain();
        return ctx;
      },
    };
    this.env = env;
    const vm = env.self.index;
    // Guest RAM is a file the SMMU's walks read too; the guest owns it and starts it empty.
    this.ram = new FileMemory(guestRamFile(env.topology.ramDir, vm), 'create');
    const devices: GuestDevice[] = [];
    env.topology.devices.forEach((d, i) => {
      if (d.vm === vm) devices.push({ index: i, vsid: d.vsid, vsmmu: vsmmuOfDevice(env.topology, i) });
    });
    // The devices the VMM emulates come after the assigned ones, behind the VM's emulated vSMMU.
    const emulated = emulatedDevicesOf(env.topology, vm);
    if (emulated.length > 0) {
      const vsmmu = emulatedVsmmuOf(env.topology, vm);
      for (const d of emulated) devices.push({ index: d.index, vsid: d.vsid, vsmmu, emulated: true });
    }
    const vcpuNs: number[] = [];
    this.kernel = {
      env,
      ram: this.ram,
      devices,
      vcpuNs,
      vcpus: new VcpuClocks(vcpuNs),
      background: (op: string, ctx: OpContext, measuredNs: number, cpu = 0) => {
        const start = this.kernel.vcpuNs[cpu] ?? 0;
        this.kernel.vcpuNs[cpu] = start + ctx.modeledNs;
        this.opStats?.record(op, measuredNs, ctx, cpu, start);
      },
      setup: async (op: string, work: (ctx: OpContext) => Promise<void>) => {
        const ctx = env.newContext(0, 0);
        const t0 = nowNs();
        await work(ctx);
        // Boot, before the workload: it contends with nothing of the steady state.
        ctx.holds.length = 0;
        this.opStats?.record(op, nowNs() - t0, ctx, SETUP_THREAD, 0, true);
      },
      timer: async (op: string, atNs: number, work: (ctx: OpContext) => Promise<void>) => {
        const ctx = env.newContext(0, 0);
        const t0 = nowNs();
        await work(ctx);
        this.opStats?.record(op, nowNs() - t0, ctx, TIMER_THREAD, atNs, true);
      },
    };
    this.coherent = dmaApi(this.kernel);
    this.dma = withDmaMode(env.topology.dma, this.coherent, this.kernel);
    this.metrics = metrics;
    this.metrics?.attachDriver(this.dma);
  }

  /** The IOMMU driver probes its IOMMU at boot: everything downstream is configured by now. */
  async init(): Promise<void> {
    await this.coherent.probe?.();
  }

  async handle(): Promise<{ status: number; payload: Buffer }> {
    // Nothing upstream of a guest sends it requests.
    return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
  }

  async start(): Promise<StartReply> {
    const w = this.env.topology.workload;
    if (!w) throw new Error('topology has no workload');
    // A live migration during the run (workload.migration) reports its operations before and after it.
    const step = MigrationStep.forGuest(this.kernel, this.coherent, this.env.endpoints, w);
    const stats = step?.stats ?? new OpStats(this.env.endpoints, { warmupOps: this.env.topology.warmupOps, guestIsHost: designOf(this.env.topology.model).traits.hostTables === 'bare-metal' });
    this.opStats = stats;
    stats.observeWith({ tracing: this.env.tracing, log: this.env.log });
    const explain = this.env.topology.explain;
    if (explain && explain.op !== '' && this.env.self.index === 0) stats.explainOp(explain.op, explain.after);
    this.metrics?.attachOps(stats);
    // Topology.floor_peer: one bare round trip to that peer after each operation (not timed with it).
    const floor = this.env.floorRoundTrip ? new Samples() : undefined;
    const roundTrip = this.env.floorRoundTrip;
    const probe = floor && roundTrip
      ? async (): Promise<void> => {
        // After an operation of a thread still warming up, the floor's stream warms up too.
        const warm = stats.warmingUp(0);
        const ns = await roundTrip();
        if (!warm) floor.record(ns / 2);
      }
      : undefined;
    // The driver's boot-time work (a DDW over all RAM), before the workload and reported apart.
    await this.dma.boot?.();
    const r = await runWorkload({ kernel: this.kernel, dma: this.dma, coherent: this.coherent, stats, w, step, ...(probe ? { probe } : {}) });
    this.operations += r.operations;
    const { timeline, resourceNames, stepVectors, explained } = stats.takeTimeline();
    return {
      ops: stats.opReports(),
      hops: stats.hopReports(),
      residence: stats.residenceReports(),
      elapsedSec: r.elapsedNs / 1e9,
      timeline,
      resourceNames,
      stepNames: [...this.env.costs.steps.names],
      stepVectors,
      ...(explained ? { explained } : {}),
      // An application workload's replay threads are its vCPUs' lanes.
      threadEndNs: r.threadEndNs ?? [...this.kernel.vcpuNs],
      guestCommands: this.dma.guestCommands,
      emulatedCommands: this.dma.emulatedCommands ?? 0,
      workloadCounters: { ...r.counters, ...step?.counters },
      ...(floor ? { floorUs: floor.summary(NS_PER_US) } : {}),
    };
  }

  stats(): Record<string, number> {
    return { operations: this.operations, guestCommands: this.dma.guestCommands, guestCommandsFailed: this.dma.guestCommandsFailed ?? 0, emulatedCommands: this.dma.emulatedCommands ?? 0, emulatedCommandsFailed: this.dma.emulatedCommandsFailed ?? 0 };
  }

  async close(): Promise<void> {
    if (this.opStats) this.metrics?.detachOps(this.opStats);
    this.metrics?.detachDriver(this.dma);
    // The run's sampled traces leave before the controller reads the results and moves on.
    await this.env.tracing?.flush();
    this.dma.close();
    this.ram.close();
  }
}

async function create(env: RoleEnv): Promise<RoleInstance> {
  // prom-client only in a process that serves metrics.
  const metrics = env.metrics ? (await import('./metrics.js')).guestMetrics(env.metrics) : undefined;
  return new GuestRole(env, await designOf(env.topology.model).parts.guest(), metrics);
}

/**
 * The guest links to KVM, and to the pSMMUs only where its design reaches one with no trap: the
 * VCMDQ pages mapped into it (traits.vcmdq) or, on bare metal, the host kernel's own queues. Under
 * every other design a guest's link to each pSMMU would stay idle for the whole run (16 of them
 * per guest in `npm run bench -- scale`).
 */
function linkPeers(topology: RunTopology, downstream: readonly Endpoint[]): readonly Endpoint[] {
  const traits = designOf(topology.model).traits;
  if (traits.vcmdq || traits.hostTables === 'bare-metal') return downstream;
  return downstream.filter((e) => e.role !== 'psmmu');
}

export const createRole: RoleFactory = Object.assign(create, { linkPeers });
