import type { Memory } from '../machine/memory.js';
import type { OpContext } from '../runtime/op-context.js';
import type { RoleEnv } from '../runtime/role-api.js';
import type { VcpuClocks } from './vcpu-clocks.js';
import type { ModeledOrder } from './modeled-order.js';

/** One device as the guest sees it: assigned (VFIO), or emulated by the VMM (topology.emulatedDevices). */
export interface GuestDevice {
  /**
   * The guest's device number: index in the topology's device list for an assigned device; after
   * all of those for an emulated one (services/machine/emulated-vsmmu.ts).
   */
  index: number;
  vsid: number;
  /** The vSMMU instance it sits behind. */
  vsmmu: number;
  /** A device the VMM emulates, behind the VM's separate emulated vSMMU (absent: assigned). */
  emulated?: boolean;
}

/**
 * The name an operation on `device` is reported under: emulated devices' operations apart
 * (`unmap@emulated`), since their path stops in the VMM.
 */
export function deviceOpName(op: string, device: GuestDevice): string {
  return device.emulated ? `${op}@emulated` : op;
}

/** What the guest kernel gives a DMA layer: its RAM and a way to report work no caller waits for. */
export interface GuestKernel {
  env: RoleEnv;
  ram: Memory;
  devices: readonly GuestDevice[];
  /**
   * Each vCPU's modeled clock: the modeled time of the operations it completed. An operation in
   * progress on vCPU c is at vcpuNs[c] + its context's modeledNs.
   */
  vcpuNs: number[];
  /**
   * Lower bounds of the vCPUs' modeled clocks, for decisions taken in modeled time (the command
   * queue's gathering, cmdq-gather.ts). Absent: nothing is known (a unit test's kernel).
   */
  vcpus?: VcpuClocks;
  /** Records an operation that ran on its own on vCPU `cpu`, after its clock. */
  background(op: string, ctx: OpContext, measuredNs: number, cpu?: number): void;
  /**
   * Runs `work` in the guest's timer context as a timer that fired at modeled `atNs` (a flush
   * queue's fq_flush_timeout): a fresh context, reported as its own operation `op` on the guest's
   * timer thread (TIMER_THREAD), which arrives at `atNs` and holds no vCPU. It contends for the
   * resources it holds (locks, queues) with the vCPUs' operations in the queueing model; the softirq
   * time it would take from the vCPU it fires on is not charged to that vCPU.
   */
  timer(op: string, atNs: number, work: (ctx: OpContext) => Promise<void>): Promise<void>;
  /**
   * Runs `work` once at boot, before the workload, and reports it as its own operation `op`
   * (services/machine/setup-ops.ts): on the guest's setup thread (SETUP_THREAD), holding nothing the
   * workload contends for, so the steady state begins after it.
   */
  setup(op: string, work: (ctx: OpContext) => Promise<void>): Promise<void>;
  /**
   * While a workload's vCPUs run concurrently: their turns in modeled time, for state whose outcome
   * depends on order (flush queues). Absent when operations run one after another anyway.
   */
  order?: ModeledOrder;
}

/** The guest's timer context in the queueing model: a thread of its own, after every vCPU's. */
export const TIMER_THREAD = 0xffff;
/** The guest's boot-time work (GuestKernel.setup) in the queueing model. */
export const SETUP_THREAD = 0xfffe;

/**
 * The guest's DMA API under one architecture (dma-direct, or dma-iommu over the guest IOMMU
 * driver): what dma_map and dma_unmap do to the guest's tables and which requests leave the guest.
 * Statuses are kernel-style (0 or -errno).
 */
export interface DmaApi {
  /** Maps `pages` pages at guest-physical `pa` for `device`; returns the IOVA or -errno. */
  map(ctx: OpContext, cpu: number, device: GuestDevice, pa: number, pages: number): Promise<number>;
  unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number>;
  /**
   * SVA (shared virtual addressing): a process bound to `device` unmapped `pages` pages of its own
   * memory at virtual address `va` (munmap -> MMU notifier -> arm_smmu_mm_arch_invalidate): the IOMMU
   * invalidates that VA range in the process's ASID, stage 1, and waits for it (TLBI_NH_VA over the
   * range + CMD_SYNC on SMMUv3). One SVA process per device: the threads on a device are its
   * threads. Returns 0 or -errno. Absent when the architecture has no SVA.
   */
  invalidateVa?(ctx: OpContext, cpu: number, device: GuestDevice, va: number, pages: number): Promise<number>;
  /**
   * Invalidation commands issued (TLBI, ATC_INV, CFGI_CD; CMD_SYNC not counted), but for those
   * counted in emulatedCommands.
   */
  readonly guestCommands: number;
  /**
   * Of guestCommands, those that did not complete (the queue stopped on them, the request or
   * hypercall came back with an error, or they were never sent because one before them failed):
   * every invalidation is either completed or counted here. Absent: none can fail (dma-direct).
   */
  readonly guestCommandsFailed?: number;
  /** Those sent to an emulated vSMMU instance beside accelerated ones (no physical SMMU gets them). */
  readonly emulatedCommands?: number;
  /** Of emulatedCommands, those that did not complete. */
  readonly emulatedCommandsFailed?: number;
  /**
   * What the driver does once at boot, before the workload (a DDW over all guest RAM, guest.ddw):
   * it reports that work through GuestKernel.setup. Absent: nothing.
   */
  boot?(): Promise<void>;
  /** Flushes anything deferred (lazy mode) before the run's results are taken. */
  drain(): Promise<void>;
  /**
   * The IOMMU driver's probe at boot, before any operation (not counted among them): the register
   * reads it makes to learn what its IOMMU offers (arm-smmu-v3 reads the ID registers). Absent:
   * nothing to read.
   */
  probe?(): Promise<void>;
  /**
   * The VM was live-migrated to a host where vSMMU v has `hwQueues[v]` of its VCMDQs backed by
   * hardware (the first ones); the driver sends what it would have put in the others through the
   * trapped queue. Absent when the architecture has no hardware queues.
   */
  migrated?(hwQueues: readonly number[]): void;
  close(): void;
}

/** A design's guest part (services/designs): the DMA API over its guest IOMMU driver. */
export type DmaApiFactory = (kernel: GuestKernel) => DmaApi;
