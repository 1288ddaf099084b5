/**
 * Every guest invalidation is either completed or counted failed (DmaApi.guestCommandsFailed),
 * under each architecture's guest driver, including the ones nobody waits for (lazy UNMAPs). Each
 * driver runs over a device in this process that refuses or never completes what it is sent.
 */
import { describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import type { RoleEnv } from '../../services/runtime/role-api.js';
import { H_RC } from '../../services/formats/spapr-tce.js';
import type { LinkClient, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { VirtioIommuDevice } from '../../services/machine/virtio-iommu-device.js';
import { Status, VIOMMU_REQUEST_QUEUE } from '../../services/formats/virtio-iommu.js';
import '../../services/designs/nested-smmuv3/guest.js';
import '../../services/designs/intel-cm/guest.js';
import '../../services/designs/spapr-tce/guest.js';
import '../../services/designs/virtio-iommu/guest.js';
import type { DmaApi, DmaApiFactory, GuestDevice, GuestKernel } from '../../services/guest/driver.js';
import { dmaApi as intelCm } from '../../services/designs/intel-cm/guest.js';
import { smmuv3DmaApi } from '../../services/designs/nested-smmuv3/guest.js';
import { DESIGNS } from '../../services/designs/registry.js';
import { dmaApi as pseries } from '../../services/designs/spapr-tce/guest.js';
import { dmaApi as virtio } from '../../services/designs/virtio-iommu/guest.js';

/** The guest part of each design the test drives, as the registry would load it. */
const GUEST_PARTS: Record<string, DmaApiFactory> = { 'nested-smmuv3': smmuv3DmaApi(DESIGNS['nested-smmuv3'].traits), 'nested-smmuv3-vcmdq': smmuv3DmaApi(DESIGNS['nested-smmuv3-vcmdq'].traits), 'emulated-smmuv3': smmuv3DmaApi(DESIGNS['emulated-smmuv3'].traits), 'intel-cm': intelCm, 'virtio-iommu': virtio, 'vhost-iommu': virtio, 'spapr-tce': pseries, 'spapr-tce-kvm': pseries };
import { withDmaMode } from '../../services/guest/dma-modes.js';

const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
const device: GuestDevice = { index: 0, vsid: 0x8, vsmmu: 0 };
const PA = 0x1_0000_0000;

/** A reply to a request, with the given status and nothing written back. */
function reply(req: OutgoingRequest, status = 0): Envelope__Output {
  return { correlationId: 0, opId: 0, kind: req.kind, reply: true, status, payload: req.payload, guestMemory: [], modeledNs: req.modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [] } as Envelope__Output;
}

/**
 * The guest driver of `model` in DMA mode `dma` over guest RAM `ram`, whose kvm link is `kvm`;
 * `warnings` collects what the driver logged.
 */
function guest(model: string, kvm: (req: OutgoingRequest) => Promise<Envelope__Output>, dma: 'strict' | 'lazy' = 'strict', ram = new PhysMemory()): { api: DmaApi; ctx: () => OpContext; warnings: unknown[] } {
  const link = { request: kvm } as unknown as LinkClient;
  let op = 0;
  const warnings: unknown[] = [];
  const env = {
    self: { name: 'guest-0', index: 0 },
    topology: {
      model, dma, vsmmu: 'single', vmids: [1], vmidPolicy: 'per-s2-parent', vcmdqsPerVsmmu: 0,
      devices: [{ vm: 0, psmmu: 0, vsid: device.vsid, psid: 0x100 }], workload: { threads: 1 }, guest: { flushQueue: 'per-cpu', tceHcalls: 'indirect' },
    },
    log: { warn: (...args: unknown[]) => warnings.push(args) },
    newContext: (opId: number, modeledNs: number) => new OpContext(opId, modeledNs, costs, new Map([['kvm', link]])),
  } as unknown as RoleEnv;
  const kernel: GuestKernel = { env, ram, devices: [device], vcpuNs: [0], background: () => undefined,
    setup: async (_op, work) => work(env.newContext(0, 0)),
    timer: async (_op, _at, work) => work(env.newContext(0, 0)),
  };
  const api = withDmaMode(dma, (GUEST_PARTS[model] as DmaApiFactory)(kernel), kernel);
  return { api, ctx: () => new OpContext(++op, 0, costs, new Map([['kvm', link]])), warnings };
}

describe('failed guest invalidations are counted, never dropped', () => {
  it('nested SMMUv3: a batch whose CMD_SYNC never completes fails with every command in it', async () => {
    // The vSMMU takes the PROD write, never writes the sync's MSI and reports no queue error.
    const g = guest('nested-smmuv3', async (req) => reply(req));
    const iova = await g.api.map(g.ctx(), 0, device, PA, 1);
    expect(iova).toBeGreaterThan(0);
    expect(await g.api.unmap(g.ctx(), 0, device, iova, 1)).toBe(-Errno.ETIMEDOUT);
    expect([g.api.guestCommands, g.api.guestCommandsFailed]).toEqual([1, 1]);
  });

  it('intel-cm: an invalidation whose wait descriptor never completes is counted failed', async () => {
    const g = guest('intel-cm', async (req) => reply(req));
    // Caching mode invalidates after the map too: that one fails, and so does the map.
    expect(await g.api.map(g.ctx(), 0, device, PA, 1)).toBeLessThan(0);
    expect([g.api.guestCommands, g.api.guestCommandsFailed]).toEqual([1, 1]);
  });

  it('sPAPR TCE: each hypercall the hypervisor refuses is counted failed', async () => {
    let calls = 0;
    const g = guest('spapr-tce', async (req) => reply(req, ++calls === 1 ? H_RC.PARAMETER : H_RC.SUCCESS));
    // The H_PUT_TCE is refused; the map clears what it set (H_STUFF_TCE, accepted) and fails.
    expect(await g.api.map(g.ctx(), 0, device, PA, 1)).toBe(-Errno.EIO);
    expect([g.api.guestCommands, g.api.guestCommandsFailed]).toEqual([2, 1]);
  });

  for (const dma of ['strict', 'lazy'] as const) {
    it(`virtio-iommu (${dma}): an UNMAP the device refuses is counted failed${dma === 'lazy' ? ', though nobody waits for it' : ''}`, async () => {
      const ram = new PhysMemory();
      const dev = new VirtioIommuDevice({
        mem: ram, layout: VIOMMU_REQUEST_QUEUE, ramBytes: GUEST_RAM_SIZE, attachments: [{ endpoint: device.vsid, domain: 1 }], requestStep: 'vmm.virtio_req',
        backend: { map: async () => Status.OK, unmap: async () => Status.IOERR },
      });
      // The device reads the guest's ring from the RAM they share.
      const shared = guest('virtio-iommu', async (req) => {
        await dev.kick(new OpContext(0, 0, costs, new Map()));
        return reply(req);
      }, dma, ram);
      const iova = await shared.api.map(shared.ctx(), 0, device, PA, 1);
      expect(iova).toBeGreaterThan(0);
      const status = await shared.api.unmap(shared.ctx(), 0, device, iova, 1);
      if (dma === 'strict') expect(status).toBe(-Errno.EIO);
      else {
        // Lazy: the unmap returns at once; its UNMAP goes out with the flush at the end.
        expect(status).toBe(0);
        expect(shared.api.guestCommandsFailed).toBe(0);
        await shared.api.drain();
        expect(shared.warnings).toHaveLength(1);
      }
      expect([shared.api.guestCommands, shared.api.guestCommandsFailed]).toEqual([2, 1]);
    });
  }
});
