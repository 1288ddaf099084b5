import { constants, copyFileSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { CostProfile } from '../cost/profile.js';
import { profileCosts } from '../cost/profile.js';
import { VmmsimError } from '../runtime/errors.js';
import type { Device } from '../runtime/generated/vmmsim/v1/Device.js';
import type { Endpoint } from '../runtime/generated/vmmsim/v1/Endpoint.js';
import type { ExplainedOp__Output } from '../runtime/generated/vmmsim/v1/ExplainedOp.js';
import type { StartReply__Output } from '../runtime/generated/vmmsim/v1/StartReply.js';
import type { Topology } from '../runtime/generated/vmmsim/v1/Topology.js';
import type { Logger } from '../runtime/logger.js';
import type { ModelName, Scenario } from '../scenario/schema.js';
import { START_ORDER, type Role } from '../runtime/topology.js';
import { emulatedDeviceList } from '../machine/emulated-vsmmu.js';
import { checkAts, checkEmulatedDevices } from '../scenario/validate.js';
import { designOf } from '../designs/registry.js';
import { adoptRunFolder } from '../machine/run-folder.js';
import type { RunToken } from '../runtime/transport/auth.js';
import { INSECURE, withToken, type Security } from '../runtime/transport/credentials.js';
import { Control } from './control-client.js';
import { runNotes } from './notes.js';
import { applicationResult } from './application.js';
import { combineGuests, type CombinedTimeline } from './timeline.js';
import { isResizeOp } from '../machine/virtio-mem.js';
import { isSetupOp } from '../machine/setup-ops.js';
import type { ProcessSpec, ProcessTree, StartedProcess } from './launcher.js';
import type { DmaResult, OpResult, RunResult } from './results.js';
import type { TranslationCounter } from '../machine/device-dma.js';
import { MachineSample, combineMachine, type MachineState } from './machine.js';
import { measuredSection, trialFigures, type HostFloor, type Placement, type TrialFigures } from './measured.js';
import { NOTE_CODES, measuredNotes } from './measured-notes.js';

/** How a run's measured part is taken (none of it changes a modeled figure), and what it traces. */
export interface TrialOptions {
  /** Operations of each guest thread left out of the measured figures (Topology.warmup_ops). */
  warmupOps?: number;
  /** Topology.floor_peer: the guest times a bare round trip to this peer after each operation. */
  floorPeer?: string;
  /** vmmsim explain: guest-0 traces the first operation named `op` after `after` operations (Topology.explain). */
  explain?: { op: string; after: number };
}

/**
 * How a session takes every run's measured part (--trials, --warmup, --pin): the same settings
 * for every run of a command. The defaults keep a run as it was: one trial, no warm-up left out.
 */
export interface MeasureSettings {
  trials: number;
  /** Operations per guest thread left out of the measured figures; auto: 50, or a tenth of a thread's share when less. */
  warmup: number | 'auto';
  placement: Placement | null;
  /** The host's floor, measured when the command started. */
  floor: HostFloor | undefined;
  /** Why there is no floor, when it could not be measured. */
  floorMissing?: string;
}

/** Operations of each thread a warm-up of `auto` leaves out: 50, or a tenth of a thread's share when less. */
export function autoWarmup(s: Scenario): number {
  const w = s.workload;
  if (!(w.ops > 0)) return 50;
  // Most workloads make a map and an unmap of each item.
  const perThread = (2 * Math.ceil(w.ops / Math.max(1, w.threads)));
  return Math.min(50, Math.floor(perThread / 10));
}

/**
 * One run of a scenario: its results (without the measured section), its raw measured figures, and
 * what its results were made of (the guests' Start replies, the VM of each, the combined timeline).
 */
export interface Trial {
  result: RunResult;
  figures: TrialFigures;
  machine: MachineState;
  replies: StartReply__Output[];
  vms: number[];
  combined: CombinedTimeline;
}

/** The processes a scenario needs: one guest and qemu per VM, one kvm and vfio, one psmmu per pSMMU. */
export function processSpecs(s: Scenario): ProcessSpec[] {
  const specs: ProcessSpec[] = [];
  for (let k = 0; k < s.topology.psmmus; k++) specs.push({ role: 'psmmu', index: k });
  specs.push({ role: 'vfio', index: 0 });
  for (let v = 0; v < s.topology.vms; v++) specs.push({ role: 'qemu', index: v });
  specs.push({ role: 'kvm', index: 0 });
  for (let v = 0; v < s.topology.vms; v++) specs.push({ role: 'guest', index: v });
  return specs;
}

/**
 * Assigned devices: `devicesPerPsmmu` behind each pSMMU, numbered pSMMU by pSMMU and dealt to the
 * VMs in turn (device n goes to VM n mod vms). So with devicesPerPsmmu = vms every VM has one
 * device behind every pSMMU (the case where a single vSMMU must broadcast), and with one device
 * per pSMMU the pSMMUs are shared out among the VMs. A device's vSID is the RID its VM sees (bus 0,
 * one device number each, counted per VM); its pSID is the host RID: bus p + 1, device d mod 32,
 * function d / 32 (past 32 devices a bus runs out of device numbers, and a bare d << 3 would spill
 * into the bus byte and give two devices one STE).
 */
export function devices(s: Scenario): Device[] {
  const out: Device[] = [];
  const perVm = new Array<number>(s.topology.vms).fill(0);
  let n = 0;
  for (let p = 0; p < s.topology.psmmus; p++) {
    for (let d = 0; d < s.topology.devicesPerPsmmu; d++, n++) {
      const vm = n % s.topology.vms;
      const k = perVm[vm] ?? 0;
      perVm[vm] = k + 1;
      out.push({ vm, psmmu: p, vsid: (k + 1) << 3, psid: ((p + 1) << 8) | ((d & 31) << 3) | (d >> 5) });
    }
  }
  return out;
}

/** A run with what it was made of (Session.record). */
export interface RecordedResult {
  result: RunResult;
  /** The guests' Start replies, and the VM of each. */
  replies: StartReply__Output[];
  vms: number[];
  combined: CombinedTimeline;
}

/** A run with one operation traced (vmmsim explain). */
export interface ExplainedRun {
  result: RunResult;
  /** The traced operation, absent when none of its name ran after the warm-up. */
  explained?: ExplainedOp__Output;
  /** What it waited in the queueing replay, for each resource it waited for. */
  waits?: { resource: string; ns: number }[];
  /** Open loop: what it waited for its vCPU's earlier operations. */
  backlogNs?: number;
  /** Its modeled latency after queueing. */
  latencyNs?: number;
}

/** The name a replayed trace has in the run folder. */
const TRACE_FILE = 'workload.trace';

const ROLE_RANK: Record<Role, number> = Object.fromEntries(START_ORDER.map((r, i) => [r, i])) as Record<Role, number>;

/**
 * A process a session drives: one its launcher started, or one it connected to (`--connect`),
 * which says its own pid and host.
 */
export type SessionProcess = Pick<StartedProcess, 'role' | 'index' | 'name' | 'pid' | 'address' | 'metricsPort'> & { host?: string };

/** A process tree plus its control clients: runs one model after another on the same processes. */
export class Session {
  private readonly controls = new Map<string, Control>();
  private readonly endpoints: Endpoint[];
  /** Each process's Prometheus port, for the processes that serve metrics. */
  private readonly metricsPorts = new Map<string, number>();

  constructor(
    tree: ProcessTree | { readonly processes: readonly SessionProcess[]; readonly token?: RunToken },
    private readonly log: Logger,
    /** Folder of the memory files the processes share (guest RAM, host tables). */
    private readonly ramDir: string,
    security: Security = INSECURE,
  ) {
    // A tree this controller launched has its own token; processes it connected to share --token-file's.
    if (tree.token) security = withToken(security, tree.token);
    // The roles map files only in a folder a launcher marked as a run folder (run-folder.ts).
    adoptRunFolder(ramDir);
    const host = hostname();
    this.endpoints = tree.processes.map((p: SessionProcess, i) => ({ id: i + 1, role: p.role, index: p.index, name: p.name, address: p.address, pid: p.pid, host: p.host ?? host }));
    for (const p of tree.processes) this.controls.set(p.name, new Control(p.name, p.address, security));
    for (const p of tree.processes) if (p.metricsPort !== undefined) this.metricsPorts.set(p.name, p.metricsPort);
  }

  private ordered(): Endpoint[] {
    return [...this.endpoints].sort((a, b) => ROLE_RANK[a.role as Role] - ROLE_RANK[b.role as Role] || (a.index ?? 0) - (b.index ?? 0));
  }

  private control(name: string): Control {
    const c = this.controls.get(name);
    if (!c) throw new Error(`no process ${name}`);
    return c;
  }

  /**
   * A trace to replay, copied into the run folder: the guest reads files there only, whatever
   * path a request names (configure-check.ts). Empty: none.
   */
  private stageTrace(trace: string): string {
    if (trace === '') return '';
    const staged = join(this.ramDir, TRACE_FILE);
    rmSync(staged, { force: true });
    copyFileSync(trace, staged, constants.COPYFILE_EXCL);
    return staged;
  }

  /** How every run of this session takes its measured part. */
  measure: MeasureSettings = { trials: 1, warmup: 0, placement: null, floor: undefined };

  /** Runs the scenario's workload under one model and gathers its results (record()). */
  async run(s: Scenario, model: ModelName, profile: CostProfile, opts: TrialOptions = {}): Promise<RunResult> {
    return (await this.record(s, model, profile, opts)).result;
  }

  /**
   * vmmsim explain: runs the scenario's workload under one model with guest-0 tracing the first
   * operation named `op` after `after` operations (the warm-up). Gives the run's results, the traced
   * operation (absent when none ran) and the queueing replay it was part of.
   */
  async explain(s: Scenario, model: ModelName, profile: CostProfile, op: string, after: number): Promise<ExplainedRun> {
    const r = await this.record(s, model, profile, { explain: { op, after } });
    const first = r.replies[0];
    const explained = first?.explained ?? undefined;
    if (!explained) return { result: r.result };
    const index = r.combined.replay.ops.findIndex((o) => o.guest === 0 && o.index === explained.timelineIndex);
    const q = r.combined.replay.queueing;
    return {
      result: r.result,
      explained,
      waits: q.waits.filter((w) => w.op === index).map((w) => ({ resource: w.resource, ns: w.ns })),
      backlogNs: q.backlogNs[index] ?? 0,
      latencyNs: q.latencyNs[index] ?? explained.ns,
    };
  }

  /**
   * Runs the scenario's workload under one model and gathers its results, with what they were made
   * of: the modeled figures, the older measured fields, the guests' Start replies (every operation
   * with its step vectors, in the order of `vms`) and the combined timeline with its queueing replay
   * all come from the first trial; the measured section is taken over every trial
   * (this.measure.trials); the notes say what a reader needs about both. With `opts.explain`,
   * guest-0 traces one operation of the first trial (explain()).
   */
  async record(s: Scenario, model: ModelName, profile: CostProfile, opts: TrialOptions = {}): Promise<RecordedResult> {
    const m = this.measure;
    const warmupOps = opts.warmupOps ?? (m.warmup === 'auto' ? autoWarmup(s) : m.warmup);
    const trials: Trial[] = [];
    for (let k = 0; k < Math.max(1, m.trials); k++) {
      const { explain, ...rest } = opts;
      trials.push(await this.trial(s, model, profile, { ...rest, warmupOps, ...(k === 0 && explain ? { explain } : {}) }));
    }
    const first = trials[0] as Trial;
    const measured = measuredSection({ trials: trials.map((t) => t.figures), seed: s.seed, warmupOps, placement: m.placement, floor: m.floor, machine: combineMachine(trials.map((t) => t.machine)), guestIsHost: designOf(model).traits.hostTables === 'bare-metal' });
    const notes = measuredNotes(measured);
    if (m.floorMissing) notes.push({ code: NOTE_CODES.noFloor, text: `the host's floor could not be measured (${m.floorMissing}): the measured figures stand without it` });
    // The modeled figures' notes (architecture, what no upstream code runs) first, then the measured clock's.
    const result: RunResult = { ...first.result, measured, notes: [...first.result.notes, ...notes] };
    return { result, replies: first.replies, vms: first.vms, combined: first.combined };
  }

  /**
   * Configures every process for the scenario under one model and starts nothing: the links are
   * open and idle (the path bench relays over them). release() ends it.
   */
  async configureOnly(s: Scenario, model: ModelName, profile: CostProfile): Promise<void> {
    const topology = this.topology(s, model, profile, {});
    for (const role of START_ORDER) {
      await Promise.all(this.ordered().filter((e) => e.role === role).map((e) => this.control(e.name as string).configure(topology)));
    }
  }

  /** The Configure request of a run. */
  private topology(s: Scenario, model: ModelName, profile: CostProfile, opts: TrialOptions): Topology {
    // The scenario was checked under its own model; compare and sweep run it under others too.
    checkEmulatedDevices(s.topology, model);
    checkAts(s, model);
    return {
      runId: `${s.name}-${model}`,
      model,
      dma: s.dma,
      seed: s.seed,
      endpoints: this.endpoints,
      devices: devices(s),
      costsNs: profileCosts(profile),
      workload: { ...s.workload, trace: this.stageTrace(s.workload.trace) },
      vmids: Array.from({ length: s.topology.vms }, (_, v) => v + 1),
      deadlineMs: 10_000,
      vsmmu: s.topology.vsmmu,
      ramDir: this.ramDir,
      vcmdqsPerVsmmu: s.topology.vcmdqsPerVsmmu,
      device: { ...s.device },
      guest: { flushQueue: s.guest.flushQueue, tceHcalls: s.guest.tceHcalls, ddw: s.guest.ddw },
      vmm: { hwptInvalidate: s.vmm.hwptInvalidate },
      smmu: { ril: s.smmu.ril },
      dispatch: s.topology.dispatch,
      vmidPolicy: s.topology.vmid,
      emulatedDevices: emulatedDeviceList(s.topology.vms, s.topology.emulatedDevices),
      floorPeer: opts.floorPeer ?? '',
      warmupOps: opts.warmupOps ?? 0,
      ...(opts.explain ? { explain: opts.explain } : {}),
    };
  }

  /** Runs the scenario's workload under one model once: its results and its raw measured figures. */
  async trial(s: Scenario, model: ModelName, profile: CostProfile, opts: TrialOptions = {}): Promise<Trial> {
    const topology = this.topology(s, model, profile, opts);
    const order = this.ordered();
    // Downstream first: a process opens its links only to peers that are already configured.
    for (const role of START_ORDER) {
      await Promise.all(order.filter((e) => e.role === role).map((e) => this.control(e.name as string).configure(topology)));
    }
    const guests = order.filter((e) => e.role === 'guest');
    // Everything but the guests first: the devices start their DMA before the workload does.
    await Promise.all(order.filter((e) => e.role !== 'guest').map((e) => this.control(e.name as string).start(10_000)));
    // Start carries the whole workload; its deadline follows the workload's own limits.
    const startDeadline = s.workload.durationSec > 0 ? (s.workload.durationSec + 60) * 1000 : 3_600_000;
    this.log.debug({ model }, 'workload starting');
    const local = hostname();
    const sample = new MachineSample(() => this.endpoints.filter((e) => e.host === local && (e.pid ?? 0) > 0).map((e) => e.pid as number));
    const replies: StartReply__Output[] = await Promise.all(guests.map((g) => this.control(g.name as string).start(startDeadline)));
    const machine = sample.end();
    const stats = await Promise.all(order.map((e) => this.control(e.name as string).stats()));
    for (const e of [...order].reverse()) await this.control(e.name as string).stop();

    const counters: Record<string, Record<string, number>> = {};
    for (const st of stats) counters[st.name] = st.counters;
    const reply = replies[0];
    if (!reply) throw new VmmsimError('E_RUN', 'no guest ran the workload');
    const costsNs = topology.costsNs as Record<string, number>;
    const combined = combineGuests(replies, guests.map((g) => g.index ?? 0), { profile, costs: costsNs });
    const ops = combined.ops;
    // Throughput counts the workload's operations; virtio-mem resizes are the host's, not its.
    const totalOps = ops.reduce((n, o) => n + (isResizeOp(o.op) || isSetupOp(o.op) ? 0 : o.count), 0);
    // The VMs run side by side: the run lasts as long as the slowest guest's workload.
    const elapsedSec = Math.max(0, ...replies.map((r) => r.elapsedSec));
    const deliveredPerPsmmu: Record<string, number> = {};
    const hostStage2PerPsmmu: Record<string, number> = {};
    const vfio = counters['vfio'] ?? {};
    for (const e of order.filter((x) => x.role === 'psmmu')) {
      const name = e.name as string;
      // The host's stage-2 changes reach the same CMDQ; they are not deliveries of guest commands.
      const host = vfio[`stage2Commands.${name}`] ?? 0;
      hostStage2PerPsmmu[name] = host;
      // SMMU commands of the main CMDQ and the VCMDQs, and TCE kills (the sPAPR designs' PHB work).
      deliveredPerPsmmu[name] = (counters[name]?.['commands'] ?? 0) + (counters[name]?.['vcmdqCommands'] ?? 0) + (counters[name]?.['tceKills'] ?? 0) - host;
    }
    const delivered = Object.values(deliveredPerPsmmu).reduce((a, b) => a + b, 0);
    const guestCommands = replies.reduce((n, r) => n + r.guestCommands, 0);
    const opsPerSecMeasured = elapsedSec > 0 ? round(totalOps / elapsedSec) : 0;
    const roleOf = (name: string): string => this.endpoints.find((e) => e.name === name)?.role ?? name;
    const figures = trialFigures(replies, roleOf, opsPerSecMeasured, s.workload.threads);
    // Packets or requests per second, as the replay yields them (application.ts); none for a bare DMA-API workload.
    const app = applicationResult(s.workload, ops, combined.replay.queueing, combined.modeledElapsedNs);
    const result: RunResult = {
      model,
      workload: s.workload,
      topology: s.topology,
      processes: this.endpoints.map((e) => {
        const metricsPort = this.metricsPorts.get(e.name as string);
        return { role: e.role as string, name: e.name as string, pid: e.pid as number, host: e.host as string, ...(metricsPort !== undefined ? { metricsPort } : {}) };
      }),
      ops,
      hops: replies.flatMap((r) => r.hops.map((h) => ({ from: h.from, to: h.to, count: h.measuredUs?.count ?? 0, measuredUs: h.measuredUs ?? emptySummary() }))),
      throughput: {
        opsPerSecMeasured,
        opsPerSecModeled: combined.modeledElapsedNs > 0 ? round(totalOps / (combined.modeledElapsedNs / 1e9)) : 0,
      },
      invalidations: {
        guestCommands,
        // Read after the workload and its drain, so every command is settled: completed or failed.
        guestCommandsFailed: guests.reduce((n, g) => n + (counters[g.name as string]?.['guestCommandsFailed'] ?? 0), 0),
        deliveredPerPsmmu,
        fanout: guestCommands > 0 ? round(delivered / guestCommands) : 0,
        wasted: order.filter((x) => x.role === 'psmmu').reduce((n, e) => n + (counters[e.name as string]?.['wasted'] ?? 0), 0),
        hostStage2: { unmaps: vfio['ioasUnmaps'] ?? 0, deliveredPerPsmmu: hostStage2PerPsmmu },
        // An emulated vSMMU's commands reach no pSMMU: counted apart, out of the fanout.
        ...(s.topology.emulatedDevices > 0
          ? {
            emulatedCommands: replies.reduce((n, r) => n + r.emulatedCommands, 0),
            emulatedCommandsFailed: guests.reduce((n, g) => n + (counters[g.name as string]?.['emulatedCommandsFailed'] ?? 0), 0),
          }
          : {}),
      },
      // Device DMA is translated by the pSMMUs, or by the VMM's emulated vIOMMU for emulated devices.
      dma: dmaResult(s.dma, order.filter((x) => x.role === 'psmmu' || x.role === 'qemu').map((e) => counters[e.name as string] ?? {})),
      elapsedSec: round(elapsedSec),
      modeledElapsedNs: combined.modeledElapsedNs,
      modeledResources: combined.resources,
      ...(combined.bound ? { modeledBound: combined.bound } : {}),
      ...(app ? { application: app } : {}),
      workloadCounters: sumCounters(replies.map((r) => r.workloadCounters)),
      counters,
      notes: runNotes({ scenario: s, model, profile, devices: topology.devices ?? [], ops, counters, hostStage2Unmaps: vfio['ioasUnmaps'] ?? 0 }),
    };
    return { result, figures, machine, replies, vms: guests.map((g) => g.index ?? 0), combined };
  }

  /**
   * Stops every process's run (last started first), so processes the controller does not own
   * release a run that failed or was interrupted; they keep serving. Failures are ignored: a
   * process that is gone has nothing to release.
   */
  async release(deadlineMs = 5_000): Promise<void> {
    for (const e of [...this.ordered()].reverse()) await this.control(e.name as string).stop(deadlineMs).catch(() => undefined);
  }

  close(): void {
    for (const c of this.controls.values()) c.close();
  }
}

function dmaResult(mode: string, translators: Record<string, number>[]): DmaResult {
  const sum = (k: TranslationCounter): number => translators.reduce((n, c) => n + (c[k] ?? 0), 0);
  const translations = sum('translations');
  return {
    mode,
    translations,
    iotlbHitRate: translations > 0 ? round(sum('iotlbHits') / translations) : 0,
    faults: sum('faults'),
    staleTranslations: sum('staleTranslations'),
    atcHits: sum('atcHits'),
    atcStaleTranslations: sum('atcStaleTranslations'),
    useAfterUnmap: sum('useAfterUnmap'),
    staleDuringUnmap: sum('staleDuringUnmap'),
    walkAccesses: sum('walkAccesses'),
    translationCostNs: sum('dmaModeledNs'),
  };
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function emptySummary(): OpResult['measuredUs'] {
  return { count: 0, mean: 0, stddev: 0, min: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
}

/** Counters of several VMs' workloads, added key by key. */
function sumCounters(all: readonly Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of all) for (const [k, v] of Object.entries(c)) out[k] = (out[k] ?? 0) + v;
  return out;
}
