import type { OpContext } from '../common/op-context.js';
import { registerGuestDriver, type GuestDriver } from './driver.js';

/**
 * No vIOMMU: the device's DMA is translated by stage 2 only (VFIO mapped all guest RAM at VM
 * start), so dma_map returns the guest-physical address and neither call leaves the guest.
 */
class NoIommuDriver implements GuestDriver {
  readonly guestCommands = 0;
  readonly translates = false;

  async map(ctx: OpContext): Promise<number> {
    ctx.charge('guest.dma_direct');
    return 0;
  }

  async unmap(ctx: OpContext): Promise<number> {
    ctx.charge('guest.dma_direct');
    return 0;
  }
}

registerGuestDriver('none', () => new NoIommuDriver());
