import { describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import { PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { VirtioIommuDevice, statusOfErrno, type VirtioIommuBackend } from '../../services/machine/virtio-iommu-device.js';
import {
  ATTACH_SIZE, DETACH_SIZE, MAP_F_MMIO, MAP_F_READ, MAP_F_WRITE, MAP_SIZE, PROBE_HEAD_SIZE, PROBE_SIZE, RESV_MEM_T_MSI, ReqType, Status, TAIL_SIZE, UNMAP_SIZE,
  VIOMMU_QUEUE_SIZE, VIOMMU_REQUEST_QUEUE, decodeFault, decodeProbeProperties, decodeRequest, encodeFault, encodeRequest, encodeResvMem, readableSize,
  requestSlotGpa, tailStatus, type Request, type StatusCode,
} from '../../services/formats/virtio-iommu.js';
import {
  DESC_SIZE, MAX_INDIRECT_DESCS, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VirtqueueDevice, avail, availRingBytes, decodeDescriptor, descAddr, descTableBytes, encodeDescriptor, idxAdd,
  idxDiff, read16, ringSlot, used, usedRingBytes, vringNeedEvent, write16, type VirtqueueLayout,
} from '../../services/machine/virtqueue.js';
import { VirtqueueDriver } from '../../services/designs/virtio-iommu/virtqueue-driver.js';

const PAGE = 0x1000;

describe('virtio-iommu request structs', () => {
  it('have the sizes and field offsets of include/uapi/linux/virtio_iommu.h', () => {
    const map = encodeRequest({ type: ReqType.MAP, domain: 7, virtStart: 0x1000n, virtEnd: 0x2fffn, physStart: 0x8000_0000n, flags: MAP_F_READ | MAP_F_WRITE });
    expect(map.length).toBe(MAP_SIZE);
    expect(MAP_SIZE).toBe(40);
    expect(map.readUInt8(0)).toBe(3);
    expect(map.readUInt32LE(4)).toBe(7);
    expect(map.readBigUInt64LE(8)).toBe(0x1000n);
    expect(map.readBigUInt64LE(16)).toBe(0x2fffn);
    expect(map.readBigUInt64LE(24)).toBe(0x8000_0000n);
    expect(map.readUInt32LE(32)).toBe(3);
    expect(tailStatus(map)).toBe(0);
    const unmap = encodeRequest({ type: ReqType.UNMAP, domain: 2, virtStart: 0x4000n, virtEnd: 0x4fffn });
    expect(unmap.length).toBe(UNMAP_SIZE);
    expect(UNMAP_SIZE).toBe(32);
    expect([unmap.readUInt8(0), unmap.readUInt32LE(4), unmap.readBigUInt64LE(8), unmap.readBigUInt64LE(16)]).toEqual([4, 2, 0x4000n, 0x4fffn]);
    const attach = encodeRequest({ type: ReqType.ATTACH, domain: 1, endpoint: 0x10, flags: 1, reserved: Buffer.alloc(4) });
    expect([attach.length, attach.readUInt8(0), attach.readUInt32LE(4), attach.readUInt32LE(8), attach.readUInt32LE(12)]).toEqual([ATTACH_SIZE, 1, 1, 0x10, 1]);
    expect(encodeRequest({ type: ReqType.DETACH, domain: 1, endpoint: 2, reserved: Buffer.alloc(8) }).length).toBe(DETACH_SIZE);
    const probe = encodeRequest({ type: ReqType.PROBE, endpoint: 9 }, PROBE_SIZE);
    expect(probe.length).toBe(PROBE_HEAD_SIZE + PROBE_SIZE + TAIL_SIZE);
    expect([probe.readUInt8(0), probe.readUInt32LE(4)]).toEqual([5, 9]);
    // The device reads everything but the tail.
    expect([readableSize(ReqType.ATTACH), readableSize(ReqType.MAP), readableSize(ReqType.UNMAP), readableSize(ReqType.PROBE), readableSize(9)]).toEqual([20, 36, 28, 72, undefined]);
  });

  it('decode what they encode, and refuse a short readable part or an unknown type', () => {
    const reqs: Request[] = [
      { type: ReqType.ATTACH, domain: 3, endpoint: 4, flags: 0, reserved: Buffer.from([0, 0, 0, 1]) },
      { type: ReqType.DETACH, domain: 3, endpoint: 4, reserved: Buffer.alloc(8) },
      { type: ReqType.MAP, domain: 5, virtStart: 0xffff_ffff_ffff_f000n, virtEnd: 0xffff_ffff_ffff_ffffn, physStart: 1n, flags: 0xffff_ffff },
      { type: ReqType.UNMAP, domain: 6, virtStart: 0n, virtEnd: 2n ** 64n - 1n },
      { type: ReqType.PROBE, endpoint: 0xffff_ffff },
    ];
    for (const r of reqs) {
      const b = encodeRequest(r);
      expect(decodeRequest(b.subarray(0, readableSize(r.type)))).toEqual(r);
      expect(decodeRequest(b.subarray(0, (readableSize(r.type) as number) - 1))).toBeUndefined();
    }
    expect(decodeRequest(Buffer.from([9, 0, 0, 0, 0, 0, 0, 0]))).toBeUndefined();
    expect(decodeRequest(Buffer.alloc(3))).toBeUndefined();
  });

  it('encode RESV_MEM probe properties and fault events', () => {
    const props = Buffer.concat([encodeResvMem({ subtype: RESV_MEM_T_MSI, start: 0x800_0000n, end: 0x80f_ffffn }), Buffer.alloc(16)]);
    expect(props.readUInt16LE(0)).toBe(1);
    expect(props.readUInt16LE(2)).toBe(20);
    expect(decodeProbeProperties(props)).toEqual([{ subtype: RESV_MEM_T_MSI, start: 0x800_0000n, end: 0x80f_ffffn }]);
    expect(decodeProbeProperties(Buffer.alloc(PROBE_SIZE))).toEqual([]);
    const f = { reason: 2, flags: (1 << 8) | 2, endpoint: 17, address: 0xdead_b000n };
    expect(encodeFault(f).length).toBe(24);
    expect(decodeFault(encodeFault(f))).toEqual(f);
  });
});

describe('split virtqueue', () => {
  it('does its index arithmetic on 16 bits', () => {
    expect(idxAdd(0xffff, 1)).toBe(0);
    expect(idxAdd(0xfffe, 5)).toBe(3);
    expect(idxAdd(2, -3)).toBe(0xffff);
    expect(idxDiff(2, 0xfffe)).toBe(4);
    expect(idxDiff(5, 5)).toBe(0);
    expect(ringSlot(65535, 256)).toBe(255);
    expect(ringSlot(idxAdd(65535, 1), 256)).toBe(0);
    // vring_need_event: did the index pass the event index, across the wrap too?
    expect(vringNeedEvent(10, 11, 10)).toBe(true);
    expect(vringNeedEvent(10, 10, 9)).toBe(false);
    expect(vringNeedEvent(0xffff, 1, 0xfffe)).toBe(true);
    expect(vringNeedEvent(5, 1, 0xfffe)).toBe(false);
    expect(vringNeedEvent(7, 7, 7)).toBe(false);
  });

  it('lays out descriptors, available and used rings as virtio_ring.h', () => {
    const d = { addr: 0x1_2345_6000, len: 36, flags: VRING_DESC_F_NEXT, next: 17 };
    const b = encodeDescriptor(d);
    expect(b.length).toBe(DESC_SIZE);
    expect([b.readBigUInt64LE(0), b.readUInt32LE(8), b.readUInt16LE(12), b.readUInt16LE(14)]).toEqual([0x1_2345_6000n, 36, 1, 17]);
    expect(decodeDescriptor(b)).toEqual(d);
    expect([descTableBytes(256), availRingBytes(256), usedRingBytes(256)]).toEqual([4096, 518, 2054]);
    const l = VIOMMU_REQUEST_QUEUE;
    expect(l.size).toBe(VIOMMU_QUEUE_SIZE);
    expect([avail.flags(l) - l.avail, avail.idx(l) - l.avail, avail.ring(l, 257) - l.avail, avail.usedEvent(l) - l.avail]).toEqual([0, 2, 6, 516]);
    expect([used.idx(l) - l.used, used.elem(l, 3) - l.used, used.availEvent(l) - l.used]).toEqual([2, 28, 2052]);
    // Each part fits its page, and the request slots start after them.
    expect(l.avail - l.desc).toBeGreaterThanOrEqual(descTableBytes(l.size));
    expect(l.used - l.avail).toBeGreaterThanOrEqual(availRingBytes(l.size));
    expect(requestSlotGpa(0) - l.used).toBeGreaterThanOrEqual(usedRingBytes(l.size));
  });

  it('carries chains from driver to device and back, with indexes wrapping at 65536', () => {
    const mem = new PhysMemory();
    const l: VirtqueueLayout = { size: 8, desc: 0x10_0000, avail: 0x10_1000, used: 0x10_2000 };
    const drv = new VirtqueueDriver<number>(mem, l);
    const dev = new VirtqueueDevice(mem, l, GUEST_RAM_SIZE);
    // Enough rounds of three requests for both indexes to wrap past 65535; the checks inside the
    // loop are plain comparisons (tallied), so the test stays fast.
    const rounds = Math.ceil(65536 / 3) + 10;
    let bad = 0;
    for (let n = 0; n < rounds; n++) {
      // Three requests in flight at a time: 2 descriptors each, 6 of 8.
      for (let k = 0; k < 3; k++) {
        const buf = 0x20_0000 + k * 0x100;
        mem.write(buf, Buffer.from([n & 0xff, k, 0, 0]));
        if (drv.add([{ addr: buf, len: 4 }], [{ addr: buf + 0x80, len: 4 }], n * 3 + k) === undefined) bad++;
      }
      if (drv.add([{ addr: 0x30_0000, len: 4 }], [{ addr: 0x30_0080, len: 4 }, { addr: 0x30_0100, len: 4 }], -1) !== undefined) bad++; // 3 > 2 free
      if (!drv.kickPrepare()) bad++;
      for (let k = 0; k < 3; k++) {
        const c = dev.pop();
        if (!c || c.readable[0] !== (n & 0xff) || c.readable[1] !== k || c.writableBytes !== 4) {
          bad++;
          continue;
        }
        dev.push(c.head, dev.writeBack(c, Buffer.from([0, 0, 0, 0])));
      }
      if (dev.pop() !== undefined) bad++;
      dev.armKick();
      if (drv.kickPrepare()) bad++; // nothing added since
      for (let k = 0; k < 3; k++) {
        const b = drv.getBuf();
        if (b?.token !== n * 3 + k || b.len !== 4) bad++;
      }
      if (drv.getBuf() !== undefined || drv.free !== 8) bad++;
    }
    expect(bad).toBe(0);
    expect(read16(mem, avail.idx(l))).toBe((rounds * 3) % 65536);
    expect(read16(mem, used.idx(l))).toBe((rounds * 3) % 65536);
    expect(dev.broken).toBeUndefined();
    expect(drv.broken).toBe(false);
  });

  it('puts a chain of two or more buffers in an indirect table, one ring descriptor each, as Linux does with INDIRECT_DESC', () => {
    const mem = new PhysMemory();
    const l: VirtqueueLayout = { size: 4, desc: 0x10_0000, avail: 0x10_1000, used: 0x10_2000 };
    const tableOf = (head: number): number => 0x18_0000 + head * 64;
    const drv = new VirtqueueDriver<number>(mem, l, { tableGpa: tableOf, maxBuffers: 4 });
    const dev = new VirtqueueDevice(mem, l, GUEST_RAM_SIZE);
    // Four requests of two buffers fill a 4-entry ring (eight without the tables would not fit).
    for (let k = 0; k < 4; k++) {
      mem.write(0x20_0000 + k * 0x100, Buffer.from([k, 0xaa, 0, 0]));
      expect(drv.add([{ addr: 0x20_0000 + k * 0x100, len: 4 }], [{ addr: 0x20_0080 + k * 0x100, len: 4 }], k)).toBe(k);
    }
    expect(drv.free).toBe(0);
    // A single buffer takes a ring descriptor of its own (virtqueue_use_indirect: total_sg > 1).
    expect(drv.descriptorsFor(1)).toBe(1);
    const ring = decodeDescriptor(mem.view(descAddr(l, 2), DESC_SIZE));
    expect(ring).toEqual({ addr: tableOf(2), len: 2 * DESC_SIZE, flags: VRING_DESC_F_INDIRECT, next: 0 });
    expect(decodeDescriptor(mem.view(tableOf(2), DESC_SIZE))).toEqual({ addr: 0x20_0200, len: 4, flags: VRING_DESC_F_NEXT, next: 1 });
    expect(decodeDescriptor(mem.view(tableOf(2) + DESC_SIZE, DESC_SIZE))).toEqual({ addr: 0x20_0280, len: 4, flags: VRING_DESC_F_WRITE, next: 0 });
    for (let k = 0; k < 4; k++) {
      const c = dev.pop();
      expect([c?.head, c?.readable[0], c?.readable[1], c?.readableBytes, c?.writable]).toEqual([k, k, 0xaa, 4, [{ addr: 0x20_0080 + k * 0x100, len: 4 }]]);
      if (c) dev.push(c.head, dev.writeBack(c, Buffer.from([0, 0, 0, 0])));
    }
    for (let k = 0; k < 4; k++) expect(drv.getBuf()).toEqual({ token: k, len: 4 });
    expect(drv.free).toBe(4);
    expect(dev.broken).toBeUndefined();
    // A chain longer than a table slot holds takes ring descriptors (not a table that would run into the next head's).
    const fresh = new PhysMemory();
    const small = new VirtqueueDriver<number>(fresh, l, { tableGpa: tableOf, maxBuffers: 2 });
    const smallDev = new VirtqueueDevice(fresh, l, GUEST_RAM_SIZE);
    expect(small.descriptorsFor(2)).toBe(1);
    expect(small.descriptorsFor(3)).toBe(3);
    expect(small.add([{ addr: 0x30_0000, len: 4 }, { addr: 0x30_0100, len: 4 }], [{ addr: 0x30_0200, len: 4 }], 7)).toBe(0);
    expect(small.free).toBe(1);
    expect(decodeDescriptor(fresh.view(descAddr(l, 0), DESC_SIZE)).flags).toBe(VRING_DESC_F_NEXT);
    const c = smallDev.pop();
    expect([c?.head, c?.readableBytes, c?.writable]).toEqual([0, 8, [{ addr: 0x30_0200, len: 4 }]]);
  });

  it('refuses an indirect table of a bad size, beyond RAM, nested in another, or whose next leaves it', () => {
    const l: VirtqueueLayout = { size: 4, desc: 0x10_0000, avail: 0x10_1000, used: 0x10_2000 };
    const T = 0x18_0000;
    const run = (head: { addr?: number; len: number }, entries: { addr: number; len: number; flags: number; next: number }[]): string | undefined => {
      const mem = new PhysMemory();
      const dev = new VirtqueueDevice(mem, l, GUEST_RAM_SIZE);
      entries.forEach((e, i) => mem.write(T + i * DESC_SIZE, encodeDescriptor(e)));
      mem.write(descAddr(l, 0), encodeDescriptor({ addr: head.addr ?? T, len: head.len, flags: VRING_DESC_F_INDIRECT, next: 0 }));
      write16(mem, avail.ring(l, 0), 0);
      write16(mem, avail.idx(l), 1);
      const c = dev.pop();
      return c ? 'ok' : dev.broken;
    };
    const req = { addr: 0x20_0000, len: 4, flags: VRING_DESC_F_NEXT, next: 1 };
    const tail = { addr: 0x20_0080, len: 4, flags: VRING_DESC_F_WRITE, next: 0 };
    expect(run({ len: 2 * DESC_SIZE }, [req, tail])).toBe('ok');
    // QEMU's "Invalid size for indirect buffer table": empty or not whole descriptors.
    expect(run({ len: 0 }, [req, tail])).toBe('indirect');
    expect(run({ len: 2 * DESC_SIZE - 1 }, [req, tail])).toBe('indirect');
    // More than QEMU maps of a chain ("too many write descriptors in indirect table"): refused
    // before the table is read.
    expect(MAX_INDIRECT_DESCS).toBe(1024);
    expect(run({ len: (MAX_INDIRECT_DESCS + 1) * DESC_SIZE }, [req, tail])).toBe('indirect');
    expect(run({ addr: GUEST_RAM_SIZE - DESC_SIZE, len: 2 * DESC_SIZE }, [req, tail])).toBe('bad-address');
    // vhost's "Nested indirect descriptor".
    expect(run({ len: 2 * DESC_SIZE }, [req, { ...tail, flags: VRING_DESC_F_INDIRECT }])).toBe('indirect');
    // next indexes the table: 2 is past a table of two.
    expect(run({ len: 2 * DESC_SIZE }, [{ ...req, next: 2 }, tail])).toBe('bad-next');
    expect(run({ len: 2 * DESC_SIZE }, [{ ...req, next: 0 }, tail])).toBe('loop');
  });

  it('copies at most its read limit out of a chain, however long the guest says its buffers are', () => {
    const mem = new PhysMemory();
    const l: VirtqueueLayout = { size: 4, desc: 0x10_0000, avail: 0x10_1000, used: 0x10_2000 };
    const dev = new VirtqueueDevice(mem, l, GUEST_RAM_SIZE, 72);
    mem.write(0x20_0000, Buffer.from([ReqType.PROBE, 0, 0, 0]));
    // Two readable descriptors of 4 GiB - 1 each, then a writable one: 8 GiB the device must not copy.
    mem.write(descAddr(l, 0), encodeDescriptor({ addr: 0x20_0000, len: 0xffff_ffff, flags: VRING_DESC_F_NEXT, next: 1 }));
    mem.write(descAddr(l, 1), encodeDescriptor({ addr: 0x1_2000_0000, len: 0xffff_ffff, flags: VRING_DESC_F_NEXT, next: 2 }));
    mem.write(descAddr(l, 2), encodeDescriptor({ addr: 0x30_0000, len: 4, flags: VRING_DESC_F_WRITE, next: 0 }));
    write16(mem, avail.ring(l, 0), 0);
    write16(mem, avail.idx(l), 1);
    const c = dev.pop();
    expect(c?.readable.length).toBe(72);
    expect(c?.readable[0]).toBe(ReqType.PROBE);
    expect(c?.readableBytes).toBe(2 * 0xffff_ffff);
    expect(c?.writableBytes).toBe(4);
  });

  it('marks the ring broken on a malformed chain or index, and never touches it again', () => {
    const l: VirtqueueLayout = { size: 4, desc: 0x10_0000, avail: 0x10_1000, used: 0x10_2000 };
    const setup = (): { mem: PhysMemory; dev: VirtqueueDevice } => {
      const mem = new PhysMemory();
      return { mem, dev: new VirtqueueDevice(mem, l, GUEST_RAM_SIZE) };
    };
    const publish = (mem: PhysMemory, heads: number[]): void => {
      heads.forEach((h, i) => write16(mem, avail.ring(l, i), h));
      write16(mem, avail.idx(l), heads.length);
    };
    let s = setup();
    s.mem.write(descAddr(l, 0), encodeDescriptor({ addr: 0x1000, len: 4, flags: VRING_DESC_F_NEXT, next: 0 }));
    publish(s.mem, [0]);
    expect(s.dev.pop()).toBeUndefined();
    expect(s.dev.broken).toBe('loop');
    s = setup();
    publish(s.mem, [4]);
    expect(s.dev.pop()).toBeUndefined();
    expect(s.dev.broken).toBe('bad-head');
    s = setup();
    write16(s.mem, avail.idx(l), 5); // more than the queue holds
    expect(s.dev.pop()).toBeUndefined();
    expect(s.dev.broken).toBe('avail-idx-jump');
    s = setup();
    s.mem.write(descAddr(l, 0), encodeDescriptor({ addr: 0x1000, len: 4, flags: VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, next: 1 }));
    s.mem.write(descAddr(l, 1), encodeDescriptor({ addr: 0x2000, len: 4, flags: 0, next: 0 }));
    publish(s.mem, [0]);
    expect(s.dev.pop()).toBeUndefined();
    expect(s.dev.broken).toBe('read-after-write');
    s = setup();
    s.mem.write(descAddr(l, 0), encodeDescriptor({ addr: GUEST_RAM_SIZE - 2, len: 4, flags: 0, next: 0 }));
    publish(s.mem, [0]);
    expect(s.dev.pop()).toBeUndefined();
    expect(s.dev.broken).toBe('bad-address');
    // A used element naming no chain in flight breaks the driver's side.
    const mem = new PhysMemory();
    const drv = new VirtqueueDriver<string>(mem, l);
    drv.add([{ addr: 0x1000, len: 4 }], [{ addr: 0x2000, len: 4 }], 'a');
    mem.write(used.elem(l, 0), Buffer.from([3, 0, 0, 0, 4, 0, 0, 0]));
    write16(mem, used.idx(l), 1);
    expect(drv.getBuf()).toBeUndefined();
    expect(drv.broken).toBe(true);
  });
});

interface BackendCall {
  op: 'map' | 'unmap';
  /** The endpoint (vSID) whose container the call changes: one call per endpoint of the domain. */
  endpoint: number;
  iova: number;
  gpa?: number;
  size: number;
  flags?: number;
}

/** A device over private memory, a recording backend, and a guest driver to send requests. */
function rig(attachments = [{ endpoint: 0x10, domain: 1 }, { endpoint: 0x11, domain: 2 }]) {
  const mem = new PhysMemory();
  const calls: BackendCall[] = [];
  let failNext: StatusCode | undefined;
  const backend: VirtioIommuBackend = {
    async map(_ctx, endpoint, iova, gpa, size, flags) {
      calls.push({ op: 'map', endpoint, iova, gpa, size, flags });
      const s = failNext ?? Status.OK;
      failNext = undefined;
      return s;
    },
    async unmap(_ctx, endpoint, iova, size) {
      calls.push({ op: 'unmap', endpoint, iova, size });
      return Status.OK;
    },
  };
  const device = new VirtioIommuDevice({ mem, layout: VIOMMU_REQUEST_QUEUE, ramBytes: GUEST_RAM_SIZE, attachments, backend, requestStep: 'vmm.virtio_req' });
  const drv = new VirtqueueDriver<{ slot: number; size: number }>(mem, VIOMMU_REQUEST_QUEUE);
  const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, k === 'vmm.virtio_req' ? 100 : 0])));
  const ctx = new OpContext(1, 0, costs, new Map());
  // Request buffers one after another (a PROBE is larger than the driver's 64-byte slots).
  let next = 0x6000_0000;
  /** Adds one chain: `bytes` split after `readable` bytes (the rest is the device-writable part). */
  const add = (bytes: Buffer, readable: number): void => {
    const slot = next;
    next += Math.ceil(bytes.length / 64) * 64;
    mem.write(slot, bytes);
    drv.add([{ addr: slot, len: readable }], [{ addr: slot + readable, len: bytes.length - readable }], { slot, size: bytes.length });
  };
  /** Kicks, then returns the tail status of each completed request, in order. */
  const kick = async (): Promise<number[]> => {
    await device.kick(ctx);
    const out: number[] = [];
    for (let b = drv.getBuf(); b; b = drv.getBuf()) out.push(mem.view(b.token.slot + b.token.size - TAIL_SIZE, 1).readUInt8(0));
    return out;
  };
  /** Sends requests in one kick. */
  const send = async (...reqs: Request[]): Promise<number[]> => {
    for (const r of reqs) add(encodeRequest(r, r.type === ReqType.PROBE ? PROBE_SIZE : 0), readableSize(r.type) as number);
    return kick();
  };
  return { device, calls, add, kick, send, ctx, mem, fail: (s: StatusCode) => (failNext = s) };
}

const mapReq = (domain: number, start: number, bytes: number, phys = 0x8000_0000, flags = MAP_F_READ | MAP_F_WRITE): Request => ({
  type: ReqType.MAP, domain, virtStart: BigInt(start), virtEnd: BigInt(start + bytes - 1), physStart: BigInt(phys), flags,
});
const unmapReq = (domain: number, start: number, bytes: number): Request => ({ type: ReqType.UNMAP, domain, virtStart: BigInt(start), virtEnd: BigInt(start + bytes - 1) });

describe('virtio-iommu device', () => {
  it('maps and unmaps through its backend, one call per mapping, and charges each request', async () => {
    const r = rig();
    expect(await r.send(mapReq(1, 0x10_0000, 2 * PAGE, 0x9000_0000), mapReq(1, 0x20_0000, PAGE))).toEqual([Status.OK, Status.OK]);
    expect(r.calls).toEqual([
      { op: 'map', endpoint: 0x10, iova: 0x10_0000, gpa: 0x9000_0000, size: 2 * PAGE, flags: 3 },
      { op: 'map', endpoint: 0x10, iova: 0x20_0000, gpa: 0x8000_0000, size: PAGE, flags: 3 },
    ]);
    expect(r.device.mappings(1)?.map((m) => [m.iova, m.size])).toEqual([[0x10_0000, 2 * PAGE], [0x20_0000, PAGE]]);
    // One UNMAP over both mappings removes both, one backend call each.
    expect(await r.send(unmapReq(1, 0, 0x100_0000))).toEqual([Status.OK]);
    expect(r.calls.slice(2)).toEqual([
      { op: 'unmap', endpoint: 0x10, iova: 0x10_0000, size: 2 * PAGE },
      { op: 'unmap', endpoint: 0x10, iova: 0x20_0000, size: PAGE },
    ]);
    expect(r.device.mappings(1)).toEqual([]);
    // A range with no mapping is fine and calls nothing.
    expect(await r.send(unmapReq(1, 0x50_0000, PAGE))).toEqual([Status.OK]);
    expect(r.calls).toHaveLength(4);
    expect(r.ctx.modeledNs).toBe(4 * 100);
    expect(r.device.counters).toMatchObject({ kicks: 3, requests: 4, maps: 2, unmaps: 2, backendCalls: 4, failed: 0 });
  });

  it('refuses an UNMAP that would split a mapping with RANGE, removing nothing', async () => {
    const r = rig();
    await r.send(mapReq(1, 0x10_0000, 4 * PAGE), mapReq(1, 0x20_0000, PAGE));
    expect(await r.send(unmapReq(1, 0x10_1000, PAGE))).toEqual([Status.RANGE]);
    // Covers the second mapping entirely but only part of the first: still nothing removed.
    expect(await r.send(unmapReq(1, 0x10_2000, 0x10_0000))).toEqual([Status.RANGE]);
    expect(r.calls.filter((c) => c.op === 'unmap')).toEqual([]);
    expect(r.device.mappings(1)).toHaveLength(2);
    expect(r.device.failures).toEqual({ RANGE: 2 });
  });

  it('answers NOENT for an unknown domain or endpoint', async () => {
    const r = rig();
    expect(await r.send(mapReq(9, 0x1000, PAGE), unmapReq(9, 0x1000, PAGE))).toEqual([Status.NOENT, Status.NOENT]);
    expect(await r.send({ type: ReqType.ATTACH, domain: 1, endpoint: 0x99, flags: 0, reserved: Buffer.alloc(4) })).toEqual([Status.NOENT]);
    expect(await r.send({ type: ReqType.DETACH, domain: 9, endpoint: 0x10, reserved: Buffer.alloc(8) })).toEqual([Status.NOENT]);
    expect(await r.send({ type: ReqType.PROBE, endpoint: 0x99 }, { type: ReqType.PROBE, endpoint: 0x10 })).toEqual([Status.NOENT, Status.OK]);
    expect(r.calls).toEqual([]);
  });

  it('answers INVAL for bad flags, an inverted range or an overlap, RANGE when unaligned, UNSUPP for MMIO', async () => {
    const r = rig();
    expect(await r.send(mapReq(1, 0x1000, PAGE, 0x8000_0000, 1 << 3))).toEqual([Status.INVAL]);
    expect(await r.send({ type: ReqType.MAP, domain: 1, virtStart: 0x2000n, virtEnd: 0x1fffn, physStart: 0n, flags: 1 })).toEqual([Status.INVAL]);
    expect(await r.send({ type: ReqType.UNMAP, domain: 1, virtStart: 0x2000n, virtEnd: 0xfffn })).toEqual([Status.INVAL]);
    expect(await r.send(mapReq(1, 0x1800, PAGE), mapReq(1, 0x1000, PAGE, 0x8000_0800), mapReq(1, 0x1000, 0x800))).toEqual([Status.RANGE, Status.RANGE, Status.RANGE]);
    expect(await r.send(mapReq(1, 2 ** 48, PAGE))).toEqual([Status.RANGE]); // beyond input_range
    expect(await r.send(mapReq(1, 0x1000, PAGE, 0x8000_0000, MAP_F_READ | MAP_F_MMIO))).toEqual([Status.UNSUPP]);
    expect(r.calls).toEqual([]);
    expect(await r.send(mapReq(1, 0x1000, 2 * PAGE), mapReq(1, 0x2000, PAGE), mapReq(2, 0x2000, PAGE))).toEqual([Status.OK, Status.INVAL, Status.OK]);
    expect(r.calls.map((c) => c.endpoint)).toEqual([0x10, 0x11]);
    // A non-zero reserved field, or the BYPASS flag this device does not offer.
    expect(await r.send({ type: ReqType.ATTACH, domain: 1, endpoint: 0x10, flags: 0, reserved: Buffer.from([0, 1, 0, 0]) })).toEqual([Status.INVAL]);
    expect(await r.send({ type: ReqType.ATTACH, domain: 1, endpoint: 0x10, flags: 1, reserved: Buffer.alloc(4) })).toEqual([Status.INVAL]);
    // DETACH from a domain the endpoint is not in.
    expect(await r.send({ type: ReqType.DETACH, domain: 2, endpoint: 0x10, reserved: Buffer.alloc(8) })).toEqual([Status.INVAL]);
  });

  it('reports the backend\'s failure and keeps no mapping for it', async () => {
    const r = rig();
    r.fail(statusOfErrno(-Errno.EFAULT));
    expect(await r.send(mapReq(1, 0x1000, PAGE))).toEqual([Status.FAULT]);
    expect(r.device.mappings(1)).toEqual([]);
    expect([statusOfErrno(0), statusOfErrno(-Errno.EEXIST), statusOfErrno(-Errno.EINVAL), statusOfErrno(-Errno.ENODEV), statusOfErrno(-Errno.EIO)]).toEqual([
      Status.OK, Status.INVAL, Status.INVAL, Status.NOENT, Status.DEVERR,
    ]);
    // VFIO out of mappings (dma_entry_limit) or of lockable memory: the device is out of resources.
    expect([statusOfErrno(-Errno.ENOSPC), statusOfErrno(-Errno.ENOMEM)]).toEqual([Status.NOMEM, Status.NOMEM]);
  });

  it('answers UNSUPP for an unknown type and INVAL for a short request', async () => {
    const r = rig();
    r.add(Buffer.from([0x42, 0, 0, 0, 0, 0, 0, 0]), 4);
    r.add(Buffer.from([ReqType.MAP, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), 8);
    expect(await r.kick()).toEqual([Status.UNSUPP, Status.INVAL]);
    expect(r.device.vq.broken).toBeUndefined();
    expect(r.device.failures).toEqual({ UNSUPP: 1, INVAL: 1 });
  });

  it('gives up on the ring (needs reset) for a request without room for its tail', async () => {
    const r = rig();
    const map = encodeRequest(mapReq(1, 0x1000, PAGE));
    r.add(map.subarray(0, 38), 36); // 2 writable bytes: no room for the 4-byte tail
    expect(await r.kick()).toEqual([]);
    expect(r.device.vq.broken).toBe('bad-request');
    expect(r.device.counters.ringErrors).toBe(1);
    // Nothing is served any more, even a good request.
    r.add(encodeRequest(mapReq(1, 0x1000, PAGE)), 36);
    expect(await r.kick()).toEqual([]);
    expect(r.calls).toEqual([]);
  });

  it('frees a domain with its mappings when its last endpoint leaves, and re-creates it on ATTACH', async () => {
    const r = rig();
    await r.send(mapReq(1, 0x1000, PAGE), mapReq(1, 0x8000, 2 * PAGE));
    expect(await r.send({ type: ReqType.DETACH, domain: 1, endpoint: 0x10, reserved: Buffer.alloc(8) })).toEqual([Status.OK]);
    expect(r.calls.filter((c) => c.op === 'unmap').map((c) => [c.iova, c.size])).toEqual([[0x1000, PAGE], [0x8000, 2 * PAGE]]);
    expect(r.device.mappings(1)).toBeUndefined();
    expect(await r.send(mapReq(1, 0x1000, PAGE))).toEqual([Status.NOENT]);
    // Attaching to another domain moves the endpoint; domain 1 comes back empty.
    expect(await r.send({ type: ReqType.ATTACH, domain: 2, endpoint: 0x10, flags: 0, reserved: Buffer.alloc(4) })).toEqual([Status.OK]);
    expect(await r.send({ type: ReqType.ATTACH, domain: 1, endpoint: 0x10, flags: 0, reserved: Buffer.alloc(4) })).toEqual([Status.OK]);
    expect(r.device.mappings(1)).toEqual([]);
    expect(await r.send(mapReq(1, 0x1000, PAGE))).toEqual([Status.OK]);
  });

  it('changes the container of each endpoint of a domain (virtio_iommu_notify_map per endpoint), replays the domain onto a joining endpoint and clears it from a leaving one', async () => {
    const r = rig([{ endpoint: 0x10, domain: 1 }, { endpoint: 0x11, domain: 1 }, { endpoint: 0x12, domain: 2 }]);
    expect(await r.send(mapReq(1, 0x1000, PAGE))).toEqual([Status.OK]);
    expect(r.calls.map((c) => `${c.op} ${c.endpoint.toString(16)}`)).toEqual(['map 10', 'map 11']);
    // 0x12 joins domain 1: its own container gets the domain's mapping.
    expect(await r.send({ type: ReqType.ATTACH, domain: 1, endpoint: 0x12, flags: 0, reserved: Buffer.alloc(4) })).toEqual([Status.OK]);
    expect(r.calls.slice(2).map((c) => `${c.op} ${c.endpoint.toString(16)} ${c.iova.toString(16)}`)).toEqual(['map 12 1000']);
    // 0x10 leaves: only its container loses the mapping; the domain keeps it for the others.
    expect(await r.send({ type: ReqType.DETACH, domain: 1, endpoint: 0x10, reserved: Buffer.alloc(8) })).toEqual([Status.OK]);
    expect(r.calls.slice(3).map((c) => `${c.op} ${c.endpoint.toString(16)}`)).toEqual(['unmap 10']);
    expect(r.device.mappings(1)).toHaveLength(1);
    expect(await r.send(unmapReq(1, 0x1000, PAGE))).toEqual([Status.OK]);
    expect(r.calls.slice(4).map((c) => `${c.op} ${c.endpoint.toString(16)}`)).toEqual(['unmap 11', 'unmap 12']);
  });

  it('writes probe_size bytes of properties (none) before the tail, and INVAL when they do not fit', async () => {
    const r = rig();
    expect(await r.send({ type: ReqType.PROBE, endpoint: 0x11 })).toEqual([Status.OK]);
    const probe = encodeRequest({ type: ReqType.PROBE, endpoint: 0x11 });
    r.add(probe, PROBE_HEAD_SIZE); // only the tail is writable
    expect(await r.kick()).toEqual([Status.INVAL]);
    expect(r.device.counters.probes).toBe(2);
  });
});
