import { describe, expect, it } from 'vitest';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { encodeMmio } from '../../services/formats/kvm-run.js';
import { OpContext } from '../../services/runtime/op-context.js';
import type { RoleEnv } from '../../services/runtime/role-api.js';
import {
  VIRTIO_MEM_BLOCKS, VIRTIO_MEM_BLOCK_SIZE, VIRTIO_MEM_NOTIFY_GPA, VIRTIO_MEM_REGION_BASE, VIRTIO_MEM_REQ, VIRTIO_MEM_REQ_GPA, VIRTIO_MEM_RESP,
  decodeVirtioMemReq, decodeVirtioMemResp, encodeVirtioMemReq, virtioMemBlockGpa, virtioMemRange,
} from '../../services/machine/virtio-mem.js';
import { VirtioMemDevice, isVirtioMemMmio } from '../../services/qemu/virtio-mem.js';

describe('virtio-mem requests', () => {
  it('round-trip through their wire layout', () => {
    const req = { type: VIRTIO_MEM_REQ.UNPLUG, addr: virtioMemBlockGpa(3), nbBlocks: 2 };
    expect(decodeVirtioMemReq(encodeVirtioMemReq(req))).toEqual(req);
    expect(decodeVirtioMemReq(Buffer.alloc(8))).toBeUndefined();
  });

  it('accept only block-aligned ranges inside the region', () => {
    expect(virtioMemRange(VIRTIO_MEM_REGION_BASE, 1)).toBe(0);
    expect(virtioMemRange(virtioMemBlockGpa(VIRTIO_MEM_BLOCKS - 2), 2)).toBe(VIRTIO_MEM_BLOCKS - 2);
    expect(virtioMemRange(virtioMemBlockGpa(VIRTIO_MEM_BLOCKS - 1), 2)).toBeUndefined();
    expect(virtioMemRange(VIRTIO_MEM_REGION_BASE - VIRTIO_MEM_BLOCK_SIZE, 1)).toBeUndefined();
    expect(virtioMemRange(VIRTIO_MEM_REGION_BASE + 0x1000, 1)).toBeUndefined();
    expect(virtioMemRange(VIRTIO_MEM_REGION_BASE, 0)).toBeUndefined();
  });
});

/** The VMM's device of a VM with no RAM-mapped IOAS (a shadowing vIOMMU): the plugged state alone. */
function device() {
  const topology = { model: 'virtio-iommu', devices: [{ vm: 0, psmmu: 0, vsid: 8, psid: 0x100 }], vmids: [1], vcmdqsPerVsmmu: 0, vsmmu: 'single' } as unknown as Topology__Output;
  const dev = new VirtioMemDevice({ self: { index: 0, name: 'qemu-0' }, topology } as unknown as RoleEnv);
  const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
  const send = async (req: Buffer | undefined): Promise<number | undefined> => {
    const kick = encodeMmio({ physAddr: VIRTIO_MEM_NOTIFY_GPA, data: 0, len: 4, isWrite: true });
    const env = { payload: kick, guestMemory: req ? [{ gpa: VIRTIO_MEM_REQ_GPA, data: req }] : [] } as unknown as Envelope__Output;
    const r = await dev.mmioExit({ physAddr: VIRTIO_MEM_NOTIFY_GPA, data: 0, len: 4, isWrite: true }, env, new OpContext(1, 0, costs, new Map()));
    const resp = r.guestMemory?.[0]?.data;
    return resp instanceof Uint8Array ? decodeVirtioMemResp(Buffer.from(resp)) : undefined;
  };
  const req = (type: number, block: number, n = 1): Buffer => encodeVirtioMemReq({ type, addr: virtioMemBlockGpa(block), nbBlocks: n });
  return { dev, send, req };
}

describe('the VMM\'s virtio-mem device', () => {
  it('owns its virtio-mmio window only', () => {
    expect(isVirtioMemMmio(VIRTIO_MEM_NOTIFY_GPA)).toBe(true);
    expect(isVirtioMemMmio(0x0b00_0050)).toBe(false);
  });

  it('unplugs plugged blocks and plugs unplugged ones, and answers ERROR otherwise', async () => {
    const d = device();
    expect(await d.send(d.req(VIRTIO_MEM_REQ.PLUG, 4))).toBe(VIRTIO_MEM_RESP.ERROR); // plugged at boot
    expect(await d.send(d.req(VIRTIO_MEM_REQ.UNPLUG, 4, 2))).toBe(VIRTIO_MEM_RESP.ACK);
    expect(await d.send(d.req(VIRTIO_MEM_REQ.UNPLUG, 5))).toBe(VIRTIO_MEM_RESP.ERROR); // already unplugged
    expect(await d.send(d.req(VIRTIO_MEM_REQ.PLUG, 3, 2))).toBe(VIRTIO_MEM_RESP.ERROR); // block 3 is plugged
    expect(await d.send(d.req(VIRTIO_MEM_REQ.PLUG, 4, 2))).toBe(VIRTIO_MEM_RESP.ACK);
    expect(await d.send(d.req(VIRTIO_MEM_REQ.UNPLUG, VIRTIO_MEM_BLOCKS - 1, 2))).toBe(VIRTIO_MEM_RESP.ERROR); // past the region
    expect(await d.send(d.req(9, 4))).toBe(VIRTIO_MEM_RESP.ERROR); // unknown type
    expect(await d.send(Buffer.alloc(4))).toBe(VIRTIO_MEM_RESP.ERROR); // cut short
    expect(await d.send(undefined)).toBe(VIRTIO_MEM_RESP.ERROR); // no request in guest memory
    expect(d.dev.counters).toEqual({ memRequests: 9, memUnplugged: 2, memPlugged: 2, memErrors: 7 });
  });

  it('UNPLUG_ALL gives back every block still plugged, around the holes', async () => {
    const d = device();
    expect(await d.send(d.req(VIRTIO_MEM_REQ.UNPLUG, 10, 3))).toBe(VIRTIO_MEM_RESP.ACK);
    expect(await d.send(d.req(VIRTIO_MEM_REQ.UNPLUG_ALL, 0))).toBe(VIRTIO_MEM_RESP.ACK);
    expect(d.dev.counters.memUnplugged).toBe(VIRTIO_MEM_BLOCKS);
    expect(await d.send(d.req(VIRTIO_MEM_REQ.UNPLUG, 0))).toBe(VIRTIO_MEM_RESP.ERROR);
    expect(await d.send(d.req(VIRTIO_MEM_REQ.PLUG, 0, 4))).toBe(VIRTIO_MEM_RESP.ACK);
  });
});
