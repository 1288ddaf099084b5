import { describe, expect, it } from 'vitest';
import { GUEST_BUFFER_BASE, GUEST_RAM_SIZE } from '../../services/machine/board.js';
import type { OpContext } from '../../services/runtime/op-context.js';
import type { DmaApi, GuestDevice, GuestKernel } from '../../services/guest/driver.js';
import { withDmaMode } from '../../services/guest/dma-modes.js';

/** An IOMMU layer that maps at the physical address itself and records what it was asked to map. */
function recorder(): { api: DmaApi; maps: { pa: number; pages: number }[] } {
  const maps: { pa: number; pages: number }[] = [];
  const api: DmaApi = {
    guestCommands: 0,
    map: async (_ctx, _cpu, _d, pa, pages) => {
      maps.push({ pa, pages });
      return pa;
    },
    unmap: async () => 0,
    drain: async () => undefined,
    close: () => undefined,
  };
  return { api, maps };
}

describe('bounce mode pools', () => {
  it('give every CPU and device its own memory between the workload buffers and the receive rings', async () => {
    const devices: GuestDevice[] = [0, 1, 2].map((i) => ({ index: 10 + i, vsid: (i + 1) << 3, vsmmu: 0 }));
    const kernel = { devices, env: { topology: {} } } as unknown as GuestKernel;
    const r = recorder();
    const bounce = withDmaMode('bounce', r.api, kernel);
    const ctx = { charge: () => undefined } as unknown as OpContext;
    for (let cpu = 0; cpu < 8; cpu++) for (const d of devices) expect(await bounce.map(ctx, cpu, d, 0, 512)).toBeGreaterThan(0);
    const spans = r.maps.map((m) => [m.pa, m.pa + m.pages * 4096] as const).sort((a, b) => a[0] - b[0]);
    expect(spans).toHaveLength(24);
    // No workload batches: two slots of the first map's size per pool (one I/O in flight, one being unmapped).
    for (const m of r.maps) expect(m.pages).toBe(2 * 512);
    for (let i = 1; i < spans.length; i++) expect(spans[i]?.[0]).toBeGreaterThanOrEqual(spans[i - 1]?.[1] ?? Infinity);
    // Above the 4 GiB of workload buffers, below the receive rings at 12 GiB, inside guest RAM.
    expect(spans[0]?.[0]).toBeGreaterThanOrEqual(GUEST_BUFFER_BASE + 0x1_0000_0000);
    expect(spans.at(-1)?.[1]).toBeLessThanOrEqual(Math.min(0x3_0000_0000, GUEST_RAM_SIZE));
  });

  it("hold a slot per request a block batch maps at once (queueDepth), as many as fit in the pool's 4 MiB", async () => {
    const devices: GuestDevice[] = [{ index: 0, vsid: 8, vsmmu: 0 }];
    const ctx = { charge: () => undefined } as unknown as OpContext;
    const pool = async (workload: object, pages: number): Promise<{ slots: number; base: number; maps: number[] }> => {
      const kernel = { devices, env: { topology: { workload } } } as unknown as GuestKernel;
      const r = recorder();
      const bounce = withDmaMode('bounce', r.api, kernel);
      const maps: number[] = [];
      for (;;) {
        const iova = await bounce.map(ctx, 0, devices[0] as GuestDevice, 0, pages);
        if (iova < 0) break;
        maps.push(iova);
      }
      expect(r.maps).toHaveLength(1);
      return { slots: (r.maps[0]?.pages ?? 0) / pages, base: r.maps[0]?.pa ?? -1, maps };
    };
    // 32 requests of 2 pages in flight: 32 slots, the 33rd map finds the pool empty.
    const deep = await pool({ kind: 'block', queueDepth: 32 }, 2);
    expect(deep.slots).toBe(32);
    // Each map a distinct slot of the pool's one IOMMU mapping (the last slot first).
    expect(deep.maps).toEqual(Array.from({ length: 32 }, (_, i) => deep.base + (31 - i) * 2 * 4096));
    // 256 requests of 8 pages (32 KiB) would need 8 MiB: the pool keeps 128 slots (its 4 MiB).
    expect((await pool({ kind: 'block', queueDepth: 256 }, 8)).slots).toBe(128);
  });
});
