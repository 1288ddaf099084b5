import type { OpContext } from '../common/op-context.js';
import type { RoleEnv } from '../common/role-api.js';

/**
 * The guest's IOMMU driver under one architecture: what a dma_map and a dma_unmap do to the
 * guest's tables and which requests leave the guest. Returns a kernel-style status.
 */
export interface GuestDriver {
  map(ctx: OpContext, iova: number, pa: number, pages: number): Promise<number>;
  unmap(ctx: OpContext, iova: number, pages: number): Promise<number>;
  /** Invalidation commands issued (TLBI, ATC_INV, CFGI_CD; CMD_SYNC not counted). */
  readonly guestCommands: number;
  /** Whether IOVAs are allocated (false: the device sees guest-physical addresses). */
  readonly translates: boolean;
}

export type GuestDriverFactory = (env: RoleEnv) => GuestDriver;

const drivers = new Map<string, GuestDriverFactory>();

export function registerGuestDriver(model: string, factory: GuestDriverFactory): void {
  drivers.set(model, factory);
}

export function guestDriver(model: string): GuestDriverFactory | undefined {
  return drivers.get(model);
}
