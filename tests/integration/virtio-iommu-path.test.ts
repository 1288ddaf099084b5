import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * virtio-iommu and vhost-iommu through the real processes: the guest's MAP and UNMAP requests go on
 * the request virtqueue in its RAM, the kick traps to KVM, and the device (QEMU's, or the one in
 * the host kernel) serves the ring and changes the endpoint's own host domain, which invalidates
 * its pSMMU after an unmap (an SMMUv3 host invalidates nothing after a map).
 * No receive ring, so every request belongs to a measured operation.
 */
const quiet = { device: { ringBuffers: 0 } };
const scenario = resolveScenario({ name: 'it', ...quiet, workload: { ops: 50 } });
const fx = useProcessTree(scenario);
const step = (name: string): number => testProfile.steps[name]?.ns ?? Number.NaN;

describe('virtio-iommu: the kick goes to QEMU', () => {
  it('pays exit, user and ioctl once per strict map and once per strict unmap, and hw once per unmap', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario, 'virtio-iommu', testProfile);
      const map = run.ops.find((o) => o.op === 'map');
      const unmap = run.ops.find((o) => o.op === 'unmap');
      expect(map?.count).toBe(50);
      expect(unmap?.count).toBe(50);
      expect(map?.transitions).toEqual({ exit: 1, user: 1, ioctl: 1, hw: 0, direct: 0 });
      expect(unmap?.transitions).toEqual({ exit: 1, user: 1, ioctl: 1, hw: 1, direct: 0 });
      const hops = run.hops.map((h) => `${h.from}>${h.to}`).sort();
      expect(hops).toEqual(['guest-0>kvm', 'kvm>qemu-0', 'qemu-0>vfio', 'vfio>psmmu-0', 'psmmu-0>vfio', 'vfio>qemu-0', 'qemu-0>kvm', 'kvm>guest-0'].sort());
      for (const h of run.hops) expect(h.count).toBe(h.from.startsWith('psmmu') || h.to.startsWith('psmmu') ? 50 : 100);
      // Each kick is one ioeventfd wake-up of QEMU serving one request, one VFIO ioctl per mapping.
      expect(run.counters['kvm']).toMatchObject({ exits: 100, userExits: 100, inKernel: 0 });
      expect(run.counters['qemu-0']).toMatchObject({ notifies: 100, kicks: 100, requests: 100, maps: 50, unmaps: 50, backendCalls: 100, failed: 0, ringErrors: 0 });
      expect(run.counters['vfio']).toMatchObject({ maps: 50, unmaps: 50, pagesMapped: 50, pagesUnmapped: 50, flushes: 50, mapErrors: 0 });
      expect(run.counters['psmmu-0']).toMatchObject({ commands: 50, errors: 0 });
      // Every MAP and every UNMAP request is the guest's word to the host; only the UNMAPs reach the pSMMU.
      expect(run.invalidations.guestCommands).toBe(100);
      // A device can still fault on a buffer it picked from its ring just before the driver retired
      // it (a race real devices have too); what strict mode rules out is a stale translation.
      expect(run.dma.staleTranslations).toBe(0);
      // Modeled: every unmap pays the same steps; so does every map but the first, which also
      // writes the three table descriptors above the leaf in the host's shadow table.
      expect(unmap?.modeledNs.min).toBe(unmap?.modeledNs.max);
      expect((map?.modeledNs.max ?? 0) - (map?.modeledNs.min ?? 0)).toBe(3 * step('kernel.iommu_pte_write'));
      // The ioeventfd wake-up is in it, the return of KVM_RUN to user space is not.
      expect(map?.modeledNs.mean).toBeGreaterThan(step('host.thread_wakeup') + step('vmm.virtio_req') + step('ioctl.syscall'));
    });
  });

  it('lazy: UNMAPs wait in the ring with no kick; each map\'s kick serves the one before, the drain the last', async () => {
    const lazy = resolveScenario({ ...quiet, dma: 'lazy', workload: { ops: 100 } });
    await withSession(fx, async (session) => {
      const run = await session.run(lazy, 'virtio-iommu', testProfile);
      const map = run.ops.find((o) => o.op === 'map');
      const unmap = run.ops.find((o) => o.op === 'unmap');
      const flush = run.ops.find((o) => o.op === 'flush');
      // 100 unmaps, none of which kicks (the per-CPU queue never fills); one flush at the end.
      expect(unmap?.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
      expect(flush?.count).toBe(1);
      expect(flush?.transitions).toEqual({ exit: 1, user: 1, ioctl: 1, hw: 1, direct: 0 });
      // Maps 2..100 each carry the previous UNMAP: 99 extra ioctls and host invalidations over 100 maps.
      expect(map?.transitions).toEqual({ exit: 1, user: 1, ioctl: 1.99, hw: 0.99, direct: 0 });
      const kicks = run.counters['qemu-0']?.['notifies'] ?? 0;
      expect(kicks).toBe(101);
      expect(kicks - 100).toBeLessThan(100); // kicks beyond the maps' own: fewer than the unmaps
      expect(run.counters['qemu-0']).toMatchObject({ requests: 200, unmaps: 100, failed: 0 });
      expect(run.counters['vfio']).toMatchObject({ maps: 100, unmaps: 100 });
    });
  });
});

describe('vhost-iommu: the kick stays in the host kernel', () => {
  it('pays one exit per strict map and unmap, and hw per unmap, with no QEMU on the path', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario, 'vhost-iommu', testProfile);
      const map = run.ops.find((o) => o.op === 'map');
      const unmap = run.ops.find((o) => o.op === 'unmap');
      expect(map?.transitions).toEqual({ exit: 1, user: 0, ioctl: 0, hw: 0, direct: 0 });
      expect(unmap?.transitions).toEqual({ exit: 1, user: 0, ioctl: 0, hw: 1, direct: 0 });
      const hops = run.hops.map((h) => `${h.from}>${h.to}`).sort();
      expect(hops).toEqual(['guest-0>kvm', 'kvm>vfio', 'vfio>psmmu-0', 'psmmu-0>vfio', 'vfio>kvm', 'kvm>guest-0'].sort());
      expect(hops.some((h) => h.includes('qemu'))).toBe(false);
      expect(run.counters['kvm']).toMatchObject({ exits: 100, userExits: 0, inKernel: 100, notifies: 100, requests: 100, maps: 50, unmaps: 50, backendCalls: 100, failed: 0 });
      expect(run.counters['qemu-0']?.['exits']).toBe(0);
      expect(run.counters['vfio']).toMatchObject({ maps: 50, unmaps: 50, flushes: 50, mapErrors: 0 });
      // QEMU's device pays more per request: its request handling instead of the kernel's, the
      // syscall, and VFIO's lookup in its tree of user mappings, which iommu_map() does not make.
      const virtio = await session.run(scenario, 'virtio-iommu', testProfile);
      const vmap = virtio.ops.find((o) => o.op === 'map');
      const extra = step('vmm.virtio_req') - step('kernel.vhost_req') + step('ioctl.syscall') + step('kernel.vfio_dma_op');
      expect((vmap?.modeledNs.mean ?? 0) - (map?.modeledNs.mean ?? 0)).toBeCloseTo(extra, 6);
    });
  });

  it('gives identical modeled results run after run with two vCPUs on two devices', async () => {
    const two = resolveScenario({ ...quiet, topology: { devicesPerPsmmu: 2 }, workload: { ops: 40, threads: 2 } });
    await withSession(fx, async (session) => {
      const a = await session.run(two, 'vhost-iommu', testProfile);
      const b = await session.run(two, 'vhost-iommu', testProfile);
      expect(b.ops.map((o) => [o.op, o.count, o.failed, o.modeledNs])).toEqual(a.ops.map((o) => [o.op, o.count, o.failed, o.modeledNs]));
      expect(b.modeledElapsedNs).toBe(a.modeledElapsedNs);
      // Two domains, each in its own host domain, the same IOVAs in both: nothing refused.
      expect(a.counters['kvm']).toMatchObject({ maps: 40, unmaps: 40, failed: 0 });
      expect(a.counters['vfio']?.['mapErrors']).toBe(0);
    });
  });
});
