import { describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { decodeMmio } from '../../services/formats/kvm-run.js';
import { PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import type { RoleEnv } from '../../services/runtime/role-api.js';
import type { LinkClient, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { VirtioIommuDevice, type VirtioIommuBackend } from '../../services/machine/virtio-iommu-device.js';
import { Status, VIOMMU_NOTIFY_GPA, VIOMMU_REQUEST_QUEUE, type StatusCode } from '../../services/formats/virtio-iommu.js';
import '../../services/designs/virtio-iommu/guest.js';
import type { GuestDevice, GuestKernel } from '../../services/guest/driver.js';
import { dmaApi as virtioDmaApi } from '../../services/designs/virtio-iommu/guest.js';

const device: GuestDevice = { index: 0, vsid: 0x10, vsmmu: 0 };

/**
 * The guest driver over a device running in this process: the guest's kick reaches the device
 * through a fake kvm link, and the device's backend records every host change it asks for.
 */
function rig(dma: 'strict' | 'lazy', mapStatus: StatusCode = Status.OK) {
  const ram = new PhysMemory();
  const calls: string[] = [];
  const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
  const backend: VirtioIommuBackend = {
    async map(_ctx, endpoint, iova, gpa, size) {
      calls.push(`map e${endpoint} ${iova.toString(16)}->${gpa.toString(16)} +${size.toString(16)}`);
      return mapStatus;
    },
    async unmap(_ctx, endpoint, iova, size) {
      calls.push(`unmap e${endpoint} ${iova.toString(16)} +${size.toString(16)}`);
      return Status.OK;
    },
  };
  const dev = new VirtioIommuDevice({ mem: ram, layout: VIOMMU_REQUEST_QUEUE, ramBytes: GUEST_RAM_SIZE, attachments: [{ endpoint: 0x10, domain: 1 }], backend, requestStep: 'vmm.virtio_req' });
  let kicks = 0;
  const link = {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      const m = decodeMmio(req.payload);
      if (req.kind !== 'MMIO_WRITE' || m?.physAddr !== VIOMMU_NOTIFY_GPA || m.data !== 0) throw new Error('not a kick of the request queue');
      kicks += 1;
      await dev.kick(new OpContext(0, 0, costs, new Map()));
      return { correlationId: 0, opId: 0, kind: 'MMIO_WRITE', reply: true, status: 0, payload: req.payload, guestMemory: [], modeledNs: req.modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [] } as Envelope__Output;
    },
  } as unknown as LinkClient;
  const newContext = (opId: number, modeledNs: number): OpContext => new OpContext(opId, modeledNs, costs, new Map([['kvm', link]]));
  const background: string[] = [];
  const env = {
    self: { name: 'guest-0', index: 0 },
    topology: { dma, workload: { threads: 1 }, guest: { flushQueue: 'per-cpu' } },
    log: { warn: () => undefined },
    newContext,
  } as unknown as RoleEnv;
  const kernel: GuestKernel = { env, ram, devices: [device], vcpuNs: [0], background: (op) => background.push(op),
    setup: async (_op, work) => work(newContext(0, 0)),
    timer: async (op, _at, work) => {
      await work(newContext(0, 0));
      background.push(op);
    },
  };
  const api = virtioDmaApi(kernel);
  return { api, calls, kicks: () => kicks, dev, newContext, background };
}

describe('the guest virtio-iommu driver', () => {
  it('strict: a map and an unmap each add one request and kick once', async () => {
    const r = rig('strict');
    const ctx = r.newContext(1, 0);
    const iova = await r.api.map(ctx, 0, device, 0x1_0000_0000, 2);
    expect(iova).toBeGreaterThan(0);
    expect(r.kicks()).toBe(1);
    expect(await r.api.unmap(r.newContext(2, 0), 0, device, iova, 2)).toBe(0);
    expect(r.kicks()).toBe(2);
    expect(r.calls).toEqual([`map e16 ${iova.toString(16)}->100000000 +2000`, `unmap e16 ${iova.toString(16)} +2000`]);
    // The MAP and the UNMAP each make the host invalidate its shadow.
    expect(r.api.guestCommands).toBe(2);
    // iova_alloc + virtio_req (each step costs 1 here): the device's own steps are not the guest's.
    expect(ctx.modeledNs).toBe(2);
    // An IOVA that is not mapped sends nothing.
    expect(await r.api.unmap(r.newContext(3, 0), 0, device, iova, 2)).toBe(-Errno.EINVAL);
    expect(r.kicks()).toBe(2);
  });

  it('returns the device\'s refusal as the kernel errno and frees the IOVA', async () => {
    const r = rig('strict', Status.FAULT);
    expect(await r.api.map(r.newContext(1, 0), 0, device, 0x1_0000_0000, 1)).toBe(-Errno.EFAULT);
    expect(r.dev.mappings(1)).toEqual([]);
  });

  it('lazy: UNMAPs wait in the ring without a kick; the next map\'s kick serves them', async () => {
    const r = rig('lazy');
    const a = await r.api.map(r.newContext(1, 0), 0, device, 0x1_0000_0000, 1);
    expect(await r.api.unmap(r.newContext(2, 0), 0, device, a, 1)).toBe(0);
    expect(r.kicks()).toBe(1);
    expect(r.dev.mappings(1)).toHaveLength(1); // still mapped on the host
    const b = await r.api.map(r.newContext(3, 0), 0, device, 0x1_0000_0000, 1);
    expect(b).not.toBe(a); // a's IOVA waits for the flush before reuse
    expect(r.kicks()).toBe(2);
    expect(r.calls.map((c) => c.split(' ')[0])).toEqual(['map', 'unmap', 'map']);
  });

  it('lazy: fails a map with ENOMEM when deferred unmaps hold the whole IOVA window, and maps again after the flush', async () => {
    const r = rig('lazy');
    for (let i = 0; i < 128; i++) {
      const iova = await r.api.map(r.newContext(1, 0), 0, device, 0x1_0000_0000, 512);
      expect(await r.api.unmap(r.newContext(2, 0), 0, device, iova, 512)).toBe(0);
    }
    expect(await r.api.map(r.newContext(3, 0), 0, device, 0x1_0000_0000, 512)).toBe(-Errno.ENOMEM);
    await r.api.drain();
    expect(await r.api.map(r.newContext(4, 0), 0, device, 0x1_0000_0000, 512)).toBeGreaterThan(0);
  });

  it('lazy: the flush puts every queued UNMAP in the ring, one indirect descriptor each, and one kick serves them', async () => {
    const r = rig('lazy');
    const iovas: number[] = [];
    for (let i = 0; i < 200; i++) iovas.push(await r.api.map(r.newContext(i + 1, 0), 0, device, 0x1_0000_0000 + i * 0x1000, 1));
    expect(r.kicks()).toBe(200);
    for (const iova of iovas) expect(await r.api.unmap(r.newContext(0, 0), 0, device, iova, 1)).toBe(0);
    // The UNMAPs wait for the CPU's next sync: no kick yet.
    expect(r.kicks()).toBe(200);
    expect(r.calls.filter((c) => c.startsWith('unmap'))).toHaveLength(0);
    // The flush puts them in the ring: each request takes one of the 256 descriptors (its two
    // buffers are in an indirect table), so all 200 fit and the flush's one kick serves them.
    await r.api.drain();
    expect(r.kicks()).toBe(201);
    expect(r.calls.filter((c) => c.startsWith('unmap'))).toHaveLength(200);
    expect(r.background).toEqual(['flush']);
    expect(r.dev.mappings(1)).toEqual([]);
  });
});
