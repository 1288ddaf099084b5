import type { OpContext } from '../../runtime/op-context.js';
import type { DmaApi, DmaApiFactory, GuestDevice } from '../../guest/driver.js';

/**
 * No vIOMMU: dma-direct. The device's DMA is translated by stage 2 only (VFIO mapped all guest RAM
 * at VM start), so dma_map returns the guest-physical address and neither call leaves the guest.
 */
class DmaDirect implements DmaApi {
  readonly guestCommands = 0;

  async map(ctx: OpContext, _cpu: number, _device: GuestDevice, pa: number): Promise<number> {
    ctx.charge('guest.dma_direct');
    return pa;
  }

  async unmap(ctx: OpContext): Promise<number> {
    ctx.charge('guest.dma_direct');
    return 0;
  }

  async drain(): Promise<void> {}

  close(): void {}
}

/** No vIOMMU: the guest's dma-direct. */
export const dmaApi: DmaApiFactory = () => new DmaDirect();
