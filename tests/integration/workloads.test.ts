import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { PAGE_SIZE } from '../../services/machine/memory.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const scenario = (workload: Record<string, unknown>, dma = 'strict'): ReturnType<typeof resolveScenario> => resolveScenario({ name: 'it-workloads', model: 'none', dma, workload: { threads: 2, ...workload } });
const fx = useProcessTree(scenario({ ops: 40 }));
const NONE = { exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 };
const step = (name: string): number => testProfile.steps[name]?.ns ?? NaN;
const dmaDirectNs = step('guest.dma_direct');
/** A 1500-byte packet through the NIC (device.nic.mpps 115) and over the wire with its 38 bytes of framing (100 Gb/s), in ns. */
const NIC_NS = Math.round(1000 / 115) + Math.round(((1500 + 38) * 8) / 100);
/** 8 pages over the drive's link (device.nvme.linkGBps 7), in ns. */
const NVME_LINK_NS = Math.round((8 * PAGE_SIZE) / 7);

describe('the workloads through real processes (no vIOMMU)', () => {
  it('packet-stream: per packet its stack work, a map, the NIC and the link, an unmap; closed loop and at a rate', async () => {
    await withSession(fx, async (session) => {
      // One vCPU, one packet in flight: every operation alone on its vCPU, the NIC and the link,
      // priced as its steps (two vCPUs would meet on the one NIC).
      const one = await session.run(scenario({ kind: 'packet-stream', threads: 1, ops: 40, queueDepth: 1 }), 'none', testProfile);
      expect(one.ops.map((o) => [o.op, o.count, o.failed, o.modeledNs.mean])).toEqual([
        ['map', 40, 0, dmaDirectNs], ['unmap', 40, 0, dmaDirectNs], ['tx', 20, 0, step('net.tx_packet')], ['rx', 20, 0, step('net.rx_packet')], ['io', 40, 0, NIC_NS],
      ]);
      for (const o of one.ops) expect(o.transitions).toEqual(NONE);
      expect(one.workloadCounters).toEqual({ packets: 40, tx: 20, rx: 20, failed: 0 });
      // The default 64 in flight per vCPU: the two vCPUs are the bottleneck, each packet's CPU work
      // (TX: stack, map, unmap; RX: map, unmap, stack) back to back on them.
      const cpuPerPacketNs = (step('net.tx_packet') + step('net.rx_packet')) / 2 + 2 * dmaDirectNs;
      const closed = await session.run(scenario({ kind: 'packet-stream', ops: 40 }), 'none', testProfile);
      expect(closed.workloadCounters).toEqual({ packets: 40, tx: 20, rx: 20, failed: 0 });
      expect(closed.modeledElapsedNs).toBe(20 * cpuPerPacketNs);
      expect(closed.application).toMatchObject({ unit: 'packets', count: 40, perSecModeled: Math.round((2 * 1e9) / cpuPerPacketNs), bottleneck: 'vm0.vcpu0', bottleneckKind: 'vcpu', saturated: true });
      // 40 packets at 2000 per second: the last one arrives 19.5 ms into the run, in modeled time too.
      const open = await session.run(scenario({ kind: 'packet-stream', ops: 40, rate: 2000 }), 'none', testProfile);
      expect(open.ops.find((o) => o.op === 'map')?.count).toBe(40);
      expect(open.modeledElapsedNs).toBeGreaterThanOrEqual(19.5e6);
      expect(open.modeledElapsedNs).toBeLessThan(20e6);
      expect(open.elapsedSec).toBeGreaterThan(0.018);
      expect(open.application?.saturated).toBe(false);
    });
  });

  it('packet-stream: names what bounds each design, the link for a fast one and a lock (the guest driver\'s, the VMM\'s) or a vCPU for a slow one', async () => {
    await withSession(fx, async (session) => {
      // A 10 GbE port: two vCPUs of stack work outrun its 2 x 0.81 M packets/s, so no vIOMMU runs at
      // line rate; virtio-iommu serialises every map and unmap on its request lock, and nested
      // SMMUv3's trapped invalidations keep its vCPUs busy.
      const s = scenario({ kind: 'packet-stream', ops: 400 });
      s.device.nic.lineGbps = 10;
      const linePerSec = (2 * 10e9) / ((1500 + 38) * 8);
      const none = await session.run(s, 'none', testProfile);
      expect(none.application).toMatchObject({ bottleneck: 'link-0.rx', bottleneckKind: 'link', saturated: true });
      expect(none.application?.perSecModeled).toBeGreaterThan(0.9 * linePerSec);
      expect(none.application?.perSecModeled).toBeLessThanOrEqual(linePerSec);
      const virtio = await session.run(s, 'virtio-iommu', testProfile);
      expect(virtio.application).toMatchObject({ bottleneck: 'guest-0.viommu.request_lock', bottleneckKind: 'lock', saturated: true });
      const nested = await session.run(s, 'nested-smmuv3', testProfile);
      expect(nested.application).toMatchObject({ bottleneckKind: 'vcpu', saturated: true });
      // Four vCPUs of H_PUT_TCE exits queue on QEMU's big lock, which every one of them takes.
      const four = scenario({ kind: 'packet-stream', ops: 400, threads: 4 });
      four.device.nic.lineGbps = 10;
      const tce = await session.run(four, 'spapr-tce', testProfile);
      expect(tce.application).toMatchObject({ bottleneck: 'qemu-0.bql', bottleneckKind: 'lock', saturated: true });
      for (const r of [none, virtio, nested, tce]) {
        // Utilizations are shares of the run: none above 1, and the bottleneck's is the highest.
        const u = Object.values(r.application?.utilization ?? {});
        expect(Math.max(...u)).toBeLessThanOrEqual(1);
        expect(r.application?.utilization[r.application.bottleneck]).toBe(Math.max(...u));
      }
      expect(virtio.application?.perSecModeled).toBeLessThan(nested.application?.perSecModeled ?? 0);
      expect(nested.application?.perSecModeled).toBeLessThan(none.application?.perSecModeled ?? 0);
    });
  });

  it('packet-stream with a page_pool: RX buffers mapped once at setup and recycled, TX still mapped per packet', async () => {
    await withSession(fx, async (session) => {
      const s = scenario({ kind: 'packet-stream', threads: 1, ops: 40, queueDepth: 4 });
      const plain = await session.run(s, 'nested-smmuv3', testProfile);
      s.device.nic.pagePool = true;
      const pooled = await session.run(s, 'nested-smmuv3', testProfile);
      const count = (r: typeof plain, op: string): number | undefined => r.ops.find((o) => o.op === op)?.count;
      expect([count(plain, 'map'), count(plain, 'unmap'), count(plain, 'page-pool-setup')]).toEqual([40, 40, undefined]);
      // 20 TX packets map and unmap; the 2 RX lanes (of 4) are each mapped once, before the packets.
      expect([count(pooled, 'map'), count(pooled, 'unmap'), count(pooled, 'page-pool-setup'), count(pooled, 'rx'), count(pooled, 'io')]).toEqual([20, 20, 2, 20, 40]);
      expect(pooled.workloadCounters).toEqual({ packets: 40, tx: 20, rx: 20, failed: 0 });
      // Half the invalidations (only TX unmaps), and no device access after an unmap.
      expect(pooled.invalidations.guestCommands).toBe(plain.invalidations.guestCommands / 2);
      expect(pooled.dma.useAfterUnmap).toBe(0);
      expect(pooled.application?.perSecModeled).toBeGreaterThan(plain.application?.perSecModeled ?? Infinity);
    });
  });

  it('block: per request its block-layer work, a map, the drive and its link, an unmap', async () => {
    await withSession(fx, async (session) => {
      const ioNs = step('hw.device_ns') * (78_000 + 200_000) + step('hw.link_ns') * NVME_LINK_NS;
      // One vCPU, one request in flight: each request's operations back to back.
      const r = await session.run(scenario({ kind: 'block', threads: 1, ops: 20, queueDepth: 1, granulePages: 8, dwellUs: 200 }), 'none', testProfile);
      expect(r.ops.map((o) => [o.op, o.count, o.failed, o.modeledNs.mean])).toEqual([
        ['map', 20, 0, dmaDirectNs], ['unmap', 20, 0, dmaDirectNs], ['request', 20, 0, step('block.request')], ['io', 20, 0, ioNs],
      ]);
      expect(r.workloadCounters).toEqual({ requests: 20, batches: 20, failed: 0 });
      expect(r.modeledElapsedNs).toBe(20 * (step('block.request') + 2 * dmaDirectNs + ioNs));
      // The default 32 in flight: each thread's 20 requests are one batch, served together.
      const deep = await session.run(scenario({ kind: 'block', ops: 40, granulePages: 8, dwellUs: 200 }), 'none', testProfile);
      expect(deep.workloadCounters).toEqual({ requests: 40, batches: 2, failed: 0 });
      expect(deep.application).toMatchObject({ unit: 'requests', count: 40, bottleneckKind: 'device', saturated: false });
      expect(deep.application?.perSecModeled).toBeGreaterThan(10 * (r.application?.perSecModeled ?? Infinity));
    });
  });

  it('dma=static: buffers premapped at setup, a lookup per map and unmap, a poll-mode driver per I/O', async () => {
    await withSession(fx, async (session) => {
      const r = await session.run(scenario({ kind: 'block', threads: 1, ops: 20, queueDepth: 1, dwellUs: 50 }, 'static'), 'none', testProfile);
      const lookup = step('guest.static_lookup');
      expect(r.ops.map((o) => [o.op, o.count, o.failed, o.modeledNs.mean])).toEqual([
        ['map', 20, 0, lookup], ['unmap', 20, 0, lookup], ['request', 20, 0, step('guest.pmd_io')],
        ['io', 20, 0, step('hw.device_ns') * (78_000 + 50_000) + step('hw.link_ns') * Math.round(PAGE_SIZE / 7)], ['static-setup', 1, 0, dmaDirectNs],
      ]);
      expect(r.workloadCounters).toEqual({ requests: 20, batches: 20, failed: 0 });
    });
  });

  it('dma-map-benchmark still runs for durationSec', async () => {
    await withSession(fx, async (session) => {
      const r = await session.run(scenario({ ops: 0, durationSec: 0.2 }), 'none', testProfile);
      expect(r.elapsedSec).toBeGreaterThanOrEqual(0.2);
      expect(r.ops.find((o) => o.op === 'map')?.count).toBeGreaterThan(0);
    });
  });

  it('sva-unmap-storm: one stage-1 invalidation by ASID and VA per munmap, trapped or through a VCMDQ', async () => {
    await withSession(fx, async (session) => {
      const s = scenario({ kind: 'sva-unmap-storm', ops: 20, granulePages: 16 });
      const nested = await session.run(s, 'nested-smmuv3', testProfile);
      const inv = nested.ops.find((o) => o.op === 'invalidate');
      expect(inv?.count).toBe(20);
      // Two vCPUs in step: one PROD write publishes both lists (the queue's gathering), and each
      // reads CONS for its own sync.
      expect(inv?.transitions).toEqual({ ...NONE, exit: 1.5, user: 1.5, ioctl: 1, hw: 1 });
      // 16 pages are one range TLBI_NH_VA each; every one reaches the pSMMU.
      expect(nested.invalidations.guestCommands).toBe(20);
      expect(nested.invalidations.deliveredPerPsmmu['psmmu-0']).toBe(20);
      const vcmdq = await session.run(s, 'nested-smmuv3-vcmdq', testProfile);
      expect(vcmdq.ops.find((o) => o.op === 'invalidate')?.transitions).toEqual({ ...NONE, direct: 2 });
    });
  });

  it('sva-unmap-storm is refused by a model with no SVA, naming it', async () => {
    await withSession(fx, async (session) => {
      await expect(session.run(scenario({ kind: 'sva-unmap-storm', ops: 20 }), 'none', testProfile)).rejects.toThrow(/sva-unmap-storm is not supported with model none/);
    });
  });
});
