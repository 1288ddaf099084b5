import type { Memory } from '../common/memory.js';
import type { OpContext } from '../common/op-context.js';
import type { RoleEnv } from '../common/role-api.js';

/** One assigned device as the guest sees it. */
export interface GuestDevice {
  /** Index in the topology's device list (also the guest's device number). */
  index: number;
  vsid: number;
  /** The vSMMU instance it sits behind. */
  vsmmu: number;
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
  /** Records an operation that ran on its own on vCPU `cpu` (a lazy flush at the end of the run). */
  background(op: string, ctx: OpContext, measuredNs: number, cpu?: number): void;
}

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
  /** Invalidation commands issued (TLBI, ATC_INV, CFGI_CD; CMD_SYNC not counted). */
  readonly guestCommands: number;
  /** Flushes anything deferred (lazy mode) before the run's results are taken. */
  drain(): Promise<void>;
  /**
   * The VM was live-migrated to a host where vSMMU v has `hwQueues[v]` of its VCMDQs backed by
   * hardware (the first ones); the driver sends what it would have put in the others through the
   * trapped queue. Absent when the architecture has no hardware queues.
   */
  migrated?(hwQueues: readonly number[]): void;
  close(): void;
}

export type DmaApiFactory = (kernel: GuestKernel) => DmaApi;

const factories = new Map<string, DmaApiFactory>();

export function registerDmaApi(model: string, factory: DmaApiFactory): void {
  factories.set(model, factory);
}

export function dmaApiFor(model: string): DmaApiFactory | undefined {
  return factories.get(model);
}
