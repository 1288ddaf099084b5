import { describe, expect, it } from 'vitest';
import { DeviceRing, SlotState } from '../../services/machine/device-ring.js';
import { PhysMemory } from '../../services/machine/memory.js';
import { Random } from '../../services/machine/random.js';
import { DeviceDma, type DmaTranslator } from '../../services/machine/device-dma.js';

/** An IOMMU stand-in: records accesses and answers stale for the IOVAs it is told. */
class Recorder implements DmaTranslator {
  readonly accesses: { sid: number; iova: number }[] = [];
  readonly staleIovas = new Set<number>();

  translate(sid: number, iova: number): { stale: boolean } {
    this.accesses.push({ sid, iova });
    return { stale: this.staleIovas.has(iova - (iova % 4096)) };
  }
}

const BUF = 0x1_0000_0000;

describe('a device doing DMA through its IOMMU', () => {
  it('issues the rate\'s accesses into the buffers posted in its ring, under its StreamID', () => {
    const ram = new PhysMemory();
    new DeviceRing(ram, 2).post(0, BUF, 2);
    const iommu = new Recorder();
    const dma = new DeviceDma([{ index: 2, sid: 24, ram: () => ram, iommu }], { rate: 1000, lingerMs: 0, lingerShare: 0 }, new Random(1));
    dma.tick(50e6); // 50 ms after the start: 50 accesses due
    expect(iommu.accesses).toHaveLength(50);
    for (const a of iommu.accesses) {
      expect(a.sid).toBe(24);
      expect(a.iova).toBeGreaterThanOrEqual(BUF);
      expect(a.iova).toBeLessThan(BUF + 2 * 4096);
    }
    dma.tick(50e6); // nothing more is due
    expect(iommu.accesses).toHaveLength(50);
  });

  it('counts an idle device, and a lingering device\'s accesses after the unmap returned as use-after-unmap', () => {
    const ram = new PhysMemory();
    const ring = new DeviceRing(ram, 0);
    const iommu = new Recorder();
    const dma = new DeviceDma([{ index: 0, sid: 8, ram: () => ram, iommu }], { rate: 1000, lingerMs: 100, lingerShare: 1 }, new Random(1));
    dma.tick(10e6);
    expect(dma.counters.idle).toBe(10);
    ring.post(0, BUF, 1);
    ring.setState(0, SlotState.RETIRED);
    ring.setState(0, SlotState.UNMAPPED);
    iommu.staleIovas.add(BUF);
    dma.tick(20e6); // sees the unmap; keeps touching the buffer
    expect(dma.counters.useAfterUnmap).toBe(10);
    expect(dma.counters.staleTranslations).toBe(10);
    // The IOVA was posted again and is being retired: stale hits now race the driver's unmap and
    // are no use-after-unmap.
    ring.post(0, BUF, 1);
    ring.setState(0, SlotState.RETIRED);
    dma.tick(30e6);
    expect(iommu.accesses).toHaveLength(20); // none while idle
    expect(dma.counters.useAfterUnmap).toBe(10);
    expect(dma.counters.staleDuringUnmap).toBe(10);
  });

  it('waits for its guest RAM to be mapped before it reads its ring', () => {
    const ram = new PhysMemory();
    new DeviceRing(ram, 0).post(0, BUF, 1);
    const iommu = new Recorder();
    const mapping: { ram?: PhysMemory } = {};
    const dma = new DeviceDma([{ index: 0, sid: 8, ram: () => mapping.ram, iommu }], { rate: 1000, lingerMs: 0, lingerShare: 0 }, new Random(1));
    dma.tick(10e6);
    expect(iommu.accesses).toHaveLength(0);
    mapping.ram = ram;
    dma.tick(20e6);
    expect(iommu.accesses).toHaveLength(10);
  });
});
