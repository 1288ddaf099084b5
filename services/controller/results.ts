import type { ApplicationResult, BoundBy } from './application.js';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import type { CostProfile } from '../cost/profile.js';
import type { BreakdownEntry } from './breakdown.js';
import type { ResourceStats } from './queueing.js';
import type { Summary__Output as Summary } from '../runtime/generated/vmmsim/v1/Summary.js';
import type { ArrivalProcess, ModelName, Scenario } from '../scenario/schema.js';
import type { TransitionCounts } from '../runtime/topology.js';
import { writeRegularFile, type FileText } from './output-path.js';
import type { MeasuredSection } from './measured.js';
import type { SensitivitySection } from './sensitivity.js';

export const RESULTS_SCHEMA = 'vmmsim/results/v1';

export interface OpResult {
  op: string;
  count: number;
  failed: number;
  /** Transitions of each kind per operation (averages over the operations counted). */
  transitions: TransitionCounts;
  measuredUs: Summary;
  modeledNs: Summary;
  /**
   * Where the modeled time goes: per cost step on the operation's critical path its count and mean
   * ns per operation, then per contended resource the mean queueing wait (`wait:<resource>`); the
   * entries add up to modeledNs.mean (controller/breakdown.ts, docs/results.md).
   */
  breakdown: BreakdownEntry[];
}

export interface HopResult {
  from: string;
  to: string;
  count: number;
  measuredUs: Summary;
}


/**
 * The run's DMA: the guest DMA API mode it ran in, and the device DMA through the physical SMMUs
 * while the workload ran, summed over them.
 */
export interface DmaResult {
  /** strict | lazy | static | bounce (as scenario.dma). */
  mode: string;
  translations: number;
  iotlbHitRate: number;
  faults: number;
  /**
   * Translations served from a stale IOTLB entry, or with ATS (device.ats) from a stale entry of the
   * device's ATC, to a buffer whose dma_unmap had returned.
   */
  staleTranslations: number;
  /** ATS: accesses the devices served from their ATCs (no SMMU translation); 0 without ATS. */
  atcHits: number;
  /** ATS: of staleTranslations, those served from a stale ATC entry. */
  atcStaleTranslations: number;
  /** Accesses to buffers whose dma_unmap had returned (by a device set to linger). */
  useAfterUnmap: number;
  /** Stale hits while the buffer's unmap was still in progress (the device raced its driver). */
  staleDuringUnmap: number;
  walkAccesses: number;
  /**
   * Modeled SMMU time of the translations that happened (IOTLB lookups and walk accesses). The
   * devices issue DMA in real time, so how many translations happen follows the measured run: this
   * is not one of the deterministic modeled sections.
   */
  translationCostNs: number;
}

/** A contended resource over a run (the queueing model's figures) and its utilization of the modeled run. */
export type ModeledResource = ResourceStats & { utilization: number };

/** An open-loop run's load (workload.rate > 0): requested against achieved arrivals per second. */
export interface LoadResult {
  requestedPerSec: number;
  /** Completed arrivals per second and per VM (requestedPerSec is each VM's) from the run's start to its end: measured time, and modeled time (after queueing). */
  achievedPerSec: { measured: number; modeled: number };
  arrivals: ArrivalProcess;
  /** Arrivals completed (their last operation, the unmap, returned). */
  completed: number;
}

/** The clock a saturation search judges latency and achieved rate in. */
export type SaturationMetric = 'modeled' | 'measured';

/**
 * One model's saturation rate (`vmmsim saturate`): the highest requested rate at which the run
 * achieved at least 95% of it and kept its main operation's p99 under the bound, in `metric`'s clock.
 */
export interface SaturationResult {
  model: ModelName;
  /** In a sweep with --saturate: the point's swept values. */
  point?: Record<string, string | number>;
  /** null when no rate tried passed. */
  ratePerSec: number | null;
  metric: SaturationMetric;
  p99BoundUs: number;
  /** The operation whose p99 was judged (unmap, or the workload's main one). */
  op: string;
  /** The lowest rate tried that failed, above ratePerSec (null: none failed up to the maximum). */
  failedAtPerSec: number | null;
  steps: number;
  /**
   * converged (within 5%), max (passed at the hard cap capPerSec, after raising the bound from
   * --max: it saturates above the cap), step-cap, or floor (nothing passed down to the lowest rate tried).
   */
  stop: 'converged' | 'max' | 'step-cap' | 'floor';
  /** The upper bound when the search ended: --max, doubled at each pass there (up to capPerSec). Absent in older documents. */
  boundPerSec?: number;
  /** The hard cap the bound could rise to (--cap). Absent in older documents. */
  capPerSec?: number;
  /** True when a rate passed at the cap: the search stopped at the cap without finding where the design saturates. */
  capped?: boolean;
  /**
   * What bounds the rate: the resource of highest working utilization in the modeled replay of the
   * lowest failing step, with its kind and utilization (application.ts boundByOf; below 0.9 the
   * step failed on its p99 before any resource ran out). Absent when no step failed (the search
   * stopped at its cap or step limit) and in older documents.
   */
  boundBy?: BoundBy;
}

/** A note on a run's results (controller/notes.ts): a stable code and a sentence for people. */
export interface RunNote {
  /**
   * Stable, for tools: arch-mismatch (the design models another architecture than the profile's
   * host), exploration.* (no upstream code runs it), design.not-upstream (the design's status),
   * measured.* (about the measured clock: controller/measured-notes.ts NOTE_CODES).
   */
  code: string;
  text: string;
  /**
   * What the note found in this run in a few words, where a command of many runs says it once for
   * all of them (measured.unsettled: "unmap p50 +16%"); absent on other notes.
   */
  subject?: string;
}

export interface RunResult {
  /** In a sweep: the value of each swept key at this run's point (`{ "topology.psmmus": 4 }`). */
  point?: Record<string, string | number>;
  model: string;
  workload: Scenario['workload'];
  topology: Scenario['topology'];
  /** metricsPort: where the process serves Prometheus metrics (--metrics-port), when it does. */
  processes: { role: string; name: string; pid: number; host: string; metricsPort?: number }[];
  ops: OpResult[];
  hops: HopResult[];
  /**
   * Operations are every operation of the workload (each map and each unmap; an application
   * workload's CPU-work and device operations too); setup operations and resizes are not counted.
   */
  throughput: { opsPerSecMeasured: number; opsPerSecModeled: number };
  /**
   * Application workloads (packet-stream, block): packets or requests per second in modeled time, as
   * the queueing replay yields them, with the resource that bounds them and every resource's
   * utilization (application.ts, docs/results.md). Absent for a bare DMA-API workload.
   */
  application?: ApplicationResult;
  /**
   * guestCommands: invalidations the guest issued (TLBI, ATC_INV, CFGI_CD; CMD_SYNC not counted);
   * deliveredPerPsmmu: commands each pSMMU executed (under the sPAPR designs, the TCE kills its PHB
   * took: one per PE per VFIO ioctl or per TCE from KVM); fanout: deliveries per guest command; wasted:
   * deliveries to a pSMMU that holds none of the affected devices (a broadcast's cost).
   * hostStage2: the host's own stage-2 changes (IOMMU_IOAS_UNMAP, from virtio-mem unplugs), kept
   * out of the guests' deliveries: unmaps, and the commands each pSMMU executed for them (TLBI_S2_IPA
   * and, under the nested designs, TLBI_NH_ALL; CMD_SYNC not counted).
   */
  invalidations: {
    guestCommands: number;
    /**
     * Of guestCommands, those that did not complete (a stopped queue, an error status, never sent
     * behind a failed one), from the guests' DMA layers: the others all completed.
     */
    guestCommandsFailed: number;
    deliveredPerPsmmu: Record<string, number>;
    fanout: number;
    wasted: number;
    hostStage2: { unmaps: number; deliveredPerPsmmu: Record<string, number> };
    /**
     * With topology.emulatedDevices: the commands the guests sent to their emulated vSMMU instances
     * (CMD_SYNC not counted). No pSMMU gets them, so they are in neither guestCommands nor fanout.
     */
    emulatedCommands?: number;
    /** Of emulatedCommands, those that did not complete. */
    emulatedCommandsFailed?: number;
  };
  dma: DmaResult;
  elapsedSec: number;
  modeledElapsedNs: number;
  /**
   * Each contended resource in modeled time (from the queueing model): how often it was held,
   * for how long, what operations waited for it, and its utilization over the modeled run.
   */
  modeledResources: ModeledResource[];
  /**
   * What bounds the run in modeled time: the busiest of its resources, each vCPU counted (in a
   * DMA-API workload, the thread running its operations back to back), with its kind and working
   * utilization (application.ts boundByOf). Absent when nothing ran.
   */
  modeledBound?: BoundBy;
  /** What the workload counted itself (trace-replay: events, replayed, lines skipped by kind). */
  workloadCounters: Record<string, number>;
  /** Every counter of every process, by process name. */
  counters: Record<string, Record<string, number>>;
  /** Open loop (workload.rate > 0) only: requested against achieved rate. */
  load?: LoadResult;
  /**
   * This host's real IPC between the simulator's processes, apart from every modeled figure: per
   * operation, hop and transition kind, over the trials (--trials) after the warm-up, with the
   * host's floor and the machine's state (docs/results.md). The older measured fields above
   * (ops[].measuredUs, hops[], throughput.opsPerSecMeasured, elapsedSec) stay: they are the first
   * trial's, every operation included.
   */
  measured?: MeasuredSection;
  /**
   * What to keep in mind reading this run (controller/notes.ts): which parts of its model no upstream
   * code runs, a profile of another architecture...; and the measured clock's notes
   * (controller/measured-notes.ts: a noisy machine, trials that disagree, no floor); printed under
   * the terminal table; [] when nothing.
   */
  notes: RunNote[];
}

export interface ResultsDoc {
  schema: typeof RESULTS_SCHEMA;
  status: 'ok' | 'failed' | 'interrupted';
  error?: { code: string; message: string };
  tool: { name: 'vmmsim'; version: string };
  startedAt: string;
  finishedAt: string;
  scenario: Scenario;
  seed: number;
  /** arch: the architecture of the host the profile describes (a design of another gets a note). */
  profile: { name: string; path: string; arch: string };
  /** A sweep's swept keys and its number of points; `scenario` is then the first point's. */
  sweep?: { keys: string[]; points: number };
  runs: RunResult[];
  /** `vmmsim saturate`: each model's saturation rate (every step is a run in runs[], its point the rate). */
  saturation?: SaturationResult[];
  /**
   * `vmmsim sensitivity` and `vmmsim compare --sensitivity`: every pair of runs re-priced across the
   * profile's cost ranges (controller/sensitivity.ts, docs/results.md).
   */
  sensitivity?: SensitivitySection;
}

/** Default output folder: results/<time>-<scenario name>/ under the working directory. */
export function defaultOutDir(name: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const safe = name.replace(/[^A-Za-z0-9._-]+/g, '_');
  return resolve('results', `${stamp}-${safe}-${process.pid}`);
}

/** The profile file a measured-host run writes beside its results. */
export function profileFile(name: string): string {
  return `${name}.yaml`;
}

/**
 * Writes DIR/NAME atomically (a temporary file in the same folder, then a rename), onto a regular
 * file only: output-path.ts.
 */
export function writeFileAtomic(dir: string, name: string, text: FileText): string {
  return writeRegularFile(join(dir, name), text);
}

/** Writes DIR/results.json atomically. */
export function writeResults(dir: string, doc: ResultsDoc): string {
  return writeFileAtomic(dir, 'results.json', JSON.stringify(doc, null, 2) + '\n');
}

/** Writes the profile a run computed (measured-host) beside its results, as a profile file. */
export function writeProfile(dir: string, profile: CostProfile): string {
  return writeFileAtomic(dir, profileFile(profile.name), stringify({ name: profile.name, arch: profile.arch, description: profile.description, steps: profile.steps }));
}
