import { describe, expect, it } from 'vitest';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { Errno } from '../../services/runtime/errors.js';
import { PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import type { RoleEnv } from '../../services/runtime/role-api.js';
import type { LinkClient, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { DESC_SIZE, DescType, Granularity, decodeDescriptor } from '../../services/formats/vtd.js';
import '../../services/designs/intel-cm/guest.js';
import type { GuestDevice, GuestKernel } from '../../services/guest/driver.js';
import { dmaApi as intelCmDmaApi } from '../../services/designs/intel-cm/guest.js';

const device: GuestDevice = { index: 0, vsid: 0x08, vsmmu: 0 };

/**
 * The guest intel-cm driver over a VT-d that completes every wait descriptor it is given (the
 * status write of the wait), recording the IOTLB invalidations' granularities.
 */
function rig(flushQueue: 'per-cpu' | 'single') {
  const ram = new PhysMemory();
  const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
  const granularities: number[] = [];
  const kvm = {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      const writes = [];
      for (const r of req.guestMemory ?? []) {
        const data = r.data as Buffer;
        for (let o = 0; o < data.length; o += DESC_SIZE) {
          const d = decodeDescriptor(data, o);
          if (d?.type === DescType.IOTLB) granularities.push(d.granularity);
          if (d?.type !== DescType.WAIT) continue;
          const status = Buffer.alloc(4);
          status.writeUInt32LE(d.statusData);
          writes.push({ gpa: d.statusAddr, data: status });
        }
      }
      return { correlationId: 0, opId: 0, kind: 'MMIO_WRITE', reply: true, status: 0, payload: req.payload, guestMemory: writes, modeledNs: req.modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [] } as Envelope__Output;
    },
  } as unknown as LinkClient;
  const newContext = (opId: number, modeledNs: number): OpContext => new OpContext(opId, modeledNs, costs, new Map([['kvm', kvm]]));
  const background: { op: string; cpu: number | undefined }[] = [];
  const env = {
    self: { name: 'guest-0', index: 0 },
    topology: { dma: 'lazy', workload: { threads: 2 }, guest: { flushQueue } },
    log: { warn: () => undefined },
    newContext,
  } as unknown as RoleEnv;
  const kernel: GuestKernel = { env, ram, devices: [device], vcpuNs: [0, 0], background: (op, _ctx, _ns, cpu) => background.push({ op, cpu }),
    setup: async (_op, work) => work(newContext(0, 0)),
    timer: async (op, _at, work) => {
      await work(newContext(0, 0));
      background.push({ op, cpu: undefined });
    },
  };
  const api = intelCmDmaApi(kernel);
  return { api, newContext, granularities, background };
}

describe('the guest intel-cm driver', () => {
  it('invalidates page-selectively after a map (caching mode) and lazily flushes a domain-selective one', async () => {
    const r = rig('per-cpu');
    const iova = await r.api.map(r.newContext(1, 0), 1, device, 0x1_0000_0000, 1);
    expect(iova).toBeGreaterThan(0);
    expect(await r.api.unmap(r.newContext(2, 0), 1, device, iova, 1)).toBe(0);
    expect(r.granularities).toEqual([Granularity.DEVICE_OR_PAGE]);
    await r.api.drain();
    expect(r.granularities).toEqual([Granularity.DEVICE_OR_PAGE, Granularity.DOMAIN]);
    // The domain's timer flushed it at the end, in timer context: no vCPU pays it.
    expect(r.background).toEqual([{ op: 'flush', cpu: undefined }]);
  });

  it('fails a map with ENOMEM when lazy unmaps hold the CPU\'s whole IOVA window, and maps again after the flush', async () => {
    const r = rig('per-cpu');
    // 2 MiB buffers: 128 of them fill a CPU's 256 MiB window, and the flush queue is not full yet.
    for (let i = 0; i < 128; i++) {
      const iova = await r.api.map(r.newContext(1, 0), 0, device, 0x1_0000_0000, 512);
      expect(iova).toBeGreaterThan(0);
      expect(await r.api.unmap(r.newContext(2, 0), 0, device, iova, 512)).toBe(0);
    }
    expect(await r.api.map(r.newContext(3, 0), 0, device, 0x1_0000_0000, 512)).toBe(-Errno.ENOMEM);
    await r.api.drain();
    expect(await r.api.map(r.newContext(4, 0), 0, device, 0x1_0000_0000, 512)).toBeGreaterThan(0);
  });

  it('with a single flush queue, returns each IOVA to the allocator of the CPU it came from', async () => {
    const r = rig('single');
    const a = await r.api.map(r.newContext(1, 0), 1, device, 0x1_0000_0000, 1);
    expect(await r.api.unmap(r.newContext(2, 0), 1, device, a, 1)).toBe(0);
    await r.api.drain();
    // CPU 1 gets its own IOVA back (rcache, LIFO); CPU 0 carves from its own slice, not CPU 1's.
    expect(await r.api.map(r.newContext(3, 0), 1, device, 0x1_0000_0000, 1)).toBe(a);
    const b = await r.api.map(r.newContext(4, 0), 0, device, 0x1_0000_0000, 1);
    expect(b).not.toBe(a);
    expect(Math.floor(b / 0x1000_0000)).not.toBe(Math.floor(a / 0x1000_0000));
  });
});
