import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { OpContext } from '../../services/runtime/op-context.js';
import type { RoleEnv } from '../../services/runtime/role-api.js';
import {
  DMA32_WINDOW_ENTRIES, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_RC, H_STUFF_TCE, encodeHcall, encodeTceList, liobnOf, tceOf, type Hcall,
} from '../../services/formats/spapr-tce.js';
import type { LinkClient, MemoryRange, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { decodeContainerIoctl, decodeDmaMap, decodeDmaUnmap } from '../../services/formats/vfio-type1.js';
import { VFIO_CONTAINER_FD_BASE } from '../../services/machine/vfio-containers.js';
import type { VmmDevice } from '../../services/qemu/device.js';
import { vmmDevice } from '../../services/designs/spapr-tce/vmm.js';
import '../../services/designs/spapr-tce/vmm.js';

const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
const LIOBN = BigInt(liobnOf(0));
const dir = mkdtempSync(join(tmpdir(), 'vmmsim-qemu-tce-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** QEMU's sPAPR TCE device (user-space tables) over a VFIO that records and accepts every ioctl. */
function rig() {
  const env = { self: { name: 'qemu-0', index: 0 }, topology: { ramDir: dir, model: 'spapr-tce' } } as unknown as RoleEnv;
  const device: VmmDevice = vmmDevice(env);
  const ioctls: string[] = [];
  const vfio = {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      // The PHB's one container.
      const io = decodeContainerIoctl(req.payload);
      if (io?.fd !== VFIO_CONTAINER_FD_BASE) throw new Error(`ioctl on fd ${io?.fd}, not the PHB's container`);
      const m = req.kind === 'VFIO_DMA_MAP' ? decodeDmaMap(io.arg) : undefined;
      const u = req.kind === 'VFIO_DMA_UNMAP' ? decodeDmaUnmap(io.arg) : undefined;
      ioctls.push(m ? `map ${m.iova.toString(16)}` : `unmap ${u?.iova.toString(16)}`);
      return { correlationId: 0, opId: 0, kind: req.kind, reply: true, status: 0, payload: req.payload, guestMemory: [], modeledNs: req.modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [] } as Envelope__Output;
    },
  } as unknown as LinkClient;
  const call = async (h: Hcall, guestMemory: MemoryRange[] = []): Promise<number> => {
    const ctx = new OpContext(1, 0, costs, new Map([['vfio', vfio]]));
    const req = { kind: 'HCALL_EXIT', payload: encodeHcall(h), guestMemory } as unknown as Envelope__Output;
    return (await (device.hcallExit as NonNullable<VmmDevice['hcallExit']>)(req, ctx)).status;
  };
  return { device, ioctls, call };
}

describe('QEMU\'s sPAPR TCE hypercalls (hw/ppc/spapr_iommu.c)', () => {
  it('shadows each TCE with one ioctl; a valid entry rewritten is one MAP_DMA (the sPAPR v2 container exchanges it)', async () => {
    const r = rig();
    expect(await r.call({ nr: H_PUT_TCE, args: [LIOBN, 0x3000n, tceOf(0x1_0000_0000, true, true)] })).toBe(H_RC.SUCCESS);
    expect(await r.call({ nr: H_PUT_TCE, args: [LIOBN, 0x3000n, tceOf(0x1_0000_1000, true, false)] })).toBe(H_RC.SUCCESS);
    const list = 0x7000_0000;
    const tces = [tceOf(0x1_0000_2000, true, true), 0n];
    const indirect = { nr: H_PUT_TCE_INDIRECT, args: [LIOBN, 0x5000n, BigInt(list), 2n] };
    expect(await r.call(indirect, [{ gpa: list, data: encodeTceList(tces) }])).toBe(H_RC.SUCCESS);
    expect(r.ioctls).toEqual(['map 3000', 'map 3000', 'map 5000', 'unmap 6000']);
  });

  it('refuses an unknown liobn, an oversized or unaligned list, and a stuff larger than the table, storing nothing', async () => {
    const r = rig();
    expect(await r.call({ nr: H_PUT_TCE, args: [LIOBN + 1n, 0n, 0n] })).toBe(H_RC.PARAMETER);
    expect(await r.call({ nr: H_PUT_TCE_INDIRECT, args: [LIOBN, 0n, 0x7000_0000n, 513n] })).toBe(H_RC.PARAMETER);
    expect(await r.call({ nr: H_PUT_TCE_INDIRECT, args: [LIOBN, 0n, 0x7000_0008n, 1n] })).toBe(H_RC.PARAMETER);
    expect(await r.call({ nr: H_STUFF_TCE, args: [LIOBN, 0n, 0n, BigInt(DMA32_WINDOW_ENTRIES) + 1n] })).toBe(H_RC.PARAMETER);
    expect(r.ioctls).toEqual([]);
    expect(r.device.stats()['tcesWritten']).toBe(0);
  });

  it('stops a stuff at the window\'s end with H_PARAMETER, and answers H_PARAMETER for a call of no entries, as QEMU does', async () => {
    const r = rig();
    const last = BigInt((DMA32_WINDOW_ENTRIES - 1) * 0x1000);
    expect(await r.call({ nr: H_STUFF_TCE, args: [LIOBN, last, 0n, 2n] })).toBe(H_RC.PARAMETER);
    expect(r.device.stats()['tcesWritten']).toBe(1);
    expect(await r.call({ nr: H_STUFF_TCE, args: [LIOBN, 0n, 0n, 0n] })).toBe(H_RC.PARAMETER);
    expect(await r.call({ nr: H_PUT_TCE_INDIRECT, args: [LIOBN, 0n, 0x7000_0000n, 0n] })).toBe(H_RC.PARAMETER);
    expect(await r.call({ nr: 0x1234, args: [] })).toBe(H_RC.FUNCTION);
  });
});
