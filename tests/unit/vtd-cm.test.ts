import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GUEST_TABLE_BASE, guestRamFile } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { FileMemory, FrameAllocator, PAGE_SIZE } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import type { RoleEnv } from '../../services/runtime/role-api.js';
import type { LinkClient, MemoryRange, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VMM_RAM_VADDR, decodeContainerIoctl, decodeDmaMap, decodeDmaUnmap } from '../../services/formats/vfio-type1.js';
import { VFIO_CONTAINER_FD_BASE } from '../../services/machine/vfio-containers.js';
import { CONTEXT_ENTRY_SIZE, DESC_SIZE, DescType, EVENT_CTL, FSTS, Granularity, VTD_CAP, VTD_MMIO_BASE, VTD_REG, VTD_ROOT_TABLE_GPA, encodeContextEntry, encodeDescriptors, encodeRootEntry, iqIndexOf, iqRegisterOf, psiRange, vtdContextTableGpa, vtdIqSlotGpa, vtdIqStatusGpa, type IotlbDesc, type VtdDescriptor } from '../../services/formats/vtd.js';
import { VtdPageTable } from '../../services/machine/vtd-page-table.js';
import { GuestQi, QI_STATUS } from '../../services/designs/intel-cm/vtd-qi.js';
import type { VmmDevice } from '../../services/qemu/device.js';
import { vmmDevice } from '../../services/designs/intel-cm/vmm.js';
import '../../services/designs/intel-cm/vmm.js';

const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
const DID = 2;
const IOVA = 0x1_0fff_f000;
const GPA = 0x1_0000_0000;

interface Ioctl {
  kind: string;
  iova: number;
  size: number;
  vaddr?: number;
  flags?: number;
}

function reply(status: number, payload: Buffer, guestMemory: MemoryRange[] = [], modeledNs = 0): Envelope__Output {
  return {
    correlationId: 0, opId: 0, kind: 'MMIO_WRITE', reply: true, status, payload, modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [],
    guestMemory: guestMemory.map((r) => ({ gpa: Number(r.gpa), data: r.data as Buffer })),
  };
}

/**
 * The guest side and the VMM's VT-d model in one process: the guest's RAM file, a GuestQi whose
 * register accesses reach the model as KVM would hand them over, and a VFIO that records and
 * accepts every ioctl. One assigned device, RID 00:01.0, in domain DID with its own table.
 */
function rig() {
  const dir = mkdtempSync(join(tmpdir(), 'vmmsim-vtd-'));
  const ram = new FileMemory(guestRamFile(dir, 0), 'create');
  const env = { self: { name: 'qemu-0', index: 0, role: 'qemu', id: 3 }, topology: { ramDir: dir, model: 'intel-cm', devices: [{ vm: 0, psmmu: 0, vsid: 0x08, psid: 0x100 }] } } as unknown as RoleEnv;
  const device: VmmDevice = vmmDevice(env);
  const ioctls: Ioctl[] = [];
  const vfio = {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      // Every ioctl goes to the device's own container.
      const io = decodeContainerIoctl(req.payload);
      if (io?.fd !== VFIO_CONTAINER_FD_BASE) throw new Error(`ioctl on fd ${io?.fd}, not the device's container`);
      if (req.kind === 'VFIO_DMA_MAP') {
        const m = decodeDmaMap(io.arg);
        if (m) ioctls.push({ kind: 'MAP', iova: m.iova, size: m.size, vaddr: m.vaddr, flags: m.flags });
      } else {
        const u = decodeDmaUnmap(io.arg);
        if (u) ioctls.push({ kind: 'UNMAP', iova: u.iova, size: u.size });
      }
      return reply(0, req.payload, [], req.modeledNs + 1);
    },
  } as unknown as LinkClient;
  const kvm = {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      const access = decodeMmio(req.payload);
      if (!access) throw new Error('bad mmio');
      const qctx = new OpContext(req.opId, req.modeledNs, costs, new Map([['vfio', vfio]]));
      const env = reply(0, req.payload, [...(req.guestMemory ?? [])]);
      const r = await device.mmioExit(access, env, qctx);
      return reply(r.status, r.payload, r.guestMemory ?? [], qctx.modeledNs);
    },
  } as unknown as LinkClient;
  const ctx = (): OpContext => new OpContext(1, 0, costs, new Map([['kvm', kvm]]));
  const table = new VtdPageTable(ram, new FrameAllocator(GUEST_TABLE_BASE));
  ram.write(VTD_ROOT_TABLE_GPA, encodeRootEntry({ present: true, ctp: vtdContextTableGpa(0) }));
  ram.write(vtdContextTableGpa(0) + 0x08 * CONTEXT_ENTRY_SIZE, encodeContextEntry({ present: true, fpd: false, tt: 0, slptptr: table.root, aw: 2, did: DID }));
  const qi = new GuestQi(ram, 'guest-0.qi');
  /** A raw 32-bit register access as a hand-written guest would make it. */
  const mmio = async (offset: number, data: number, isWrite: boolean, ranges: MemoryRange[] = []): Promise<Envelope__Output> =>
    kvm.request({ kind: 'MMIO_WRITE', opId: 1, payload: encodeMmio({ physAddr: VTD_MMIO_BASE + offset, data, len: 4, isWrite }), guestMemory: ranges, modeledNs: 0 });
  const read = async (offset: number): Promise<number> => decodeMmio((await mmio(offset, 0, false)).payload)?.data ?? -1;
  const cleanup = (): void => {
    ram.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { ram, device, ioctls, ctx, table, qi, mmio, read, cleanup };
}

type Rig = ReturnType<typeof rig>;

function psi(iova: number, pages: number, did = DID): IotlbDesc {
  const { addr, am } = psiRange(iova, pages);
  return { type: DescType.IOTLB, granularity: Granularity.DEVICE_OR_PAGE, dr: true, dw: true, did, addr, ih: false, am };
}

function dsi(did = DID): IotlbDesc {
  return { type: DescType.IOTLB, granularity: Granularity.DOMAIN, dr: true, dw: true, did, addr: 0, ih: false, am: 0 };
}

const stats = (r: Rig): Record<string, number> => r.device.stats();
let current: Rig | undefined;
afterEach(() => {
  current?.cleanup();
  current = undefined;
});
const setup = (): Rig => (current = rig());

describe('the VMM VT-d model in caching mode (vtd-cm.ts), driven by the guest invalidation queue (vtd-qi.ts)', () => {
  it('shadows a page the guest mapped as one VFIO_IOMMU_MAP_DMA of its user address once PSI + wait ran, and writes the wait status', async () => {
    const r = setup();
    r.table.map(IOVA, GPA, 1);
    expect(await r.qi.submit(r.ctx(), [psi(IOVA, 1)])).toBe(0);
    expect(r.ioctls).toEqual([{ kind: 'MAP', iova: IOVA, size: PAGE_SIZE, vaddr: VMM_RAM_VADDR + GPA, flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE }]);
    expect(r.ram.read32(vtdIqStatusGpa(1))).toBe(QI_STATUS.DONE);
    expect(stats(r)).toMatchObject({ descriptors: 2, iotlbPsi: 1, waits: 1, walkReads: 4, mapDma: 1, unmapDma: 0, queueErrors: 0, shadowPages: 1 });
    expect(iqIndexOf(await r.read(VTD_REG.IQH))).toBe(2);
    // The same invalidation again finds the shadow already right: no ioctl.
    expect(await r.qi.submit(r.ctx(), [psi(IOVA, 1)])).toBe(0);
    expect(r.ioctls).toHaveLength(1);
  });

  it('notifies VFIO per leaf entry, as vtd_page_walk_one does: three pages are three MAP_DMA, then three UNMAP_DMA', async () => {
    const r = setup();
    const iova = IOVA - 2 * PAGE_SIZE;
    r.table.map(iova, GPA, 3);
    expect(await r.qi.submit(r.ctx(), [psi(iova, 3)])).toBe(0);
    expect(r.ioctls.map((i) => [i.kind, i.iova, i.size])).toEqual([0, 1, 2].map((k) => ['MAP', iova + k * PAGE_SIZE, PAGE_SIZE]));
    r.table.unmap(iova, 3);
    expect(await r.qi.submit(r.ctx(), [psi(iova, 3)])).toBe(0);
    expect(r.ioctls.slice(3).map((i) => [i.kind, i.iova, i.size])).toEqual([0, 1, 2].map((k) => ['UNMAP', iova + k * PAGE_SIZE, PAGE_SIZE]));
    expect(stats(r)).toMatchObject({ shadowMappings: 0 });
  });

  it('unmaps a page table the guest freed with one UNMAP_DMA over the span of the cleared directory entry', async () => {
    const r = setup();
    const base = 0x2_0000_0000;
    r.table.map(base, GPA, 512);
    expect(await r.qi.submit(r.ctx(), [psi(base, 512)])).toBe(0);
    expect(r.ioctls).toHaveLength(512);
    expect(r.table.unmap(base, 512).freed).toHaveLength(1);
    expect(await r.qi.submit(r.ctx(), [psi(base, 512)])).toBe(0);
    expect(r.ioctls.slice(512)).toEqual([{ kind: 'UNMAP', iova: base, size: 0x20_0000 }]);
    expect(stats(r)).toMatchObject({ shadowMappings: 0 });
  });

  it('maps a read-only leaf READ only', async () => {
    const r = setup();
    r.table.map(IOVA, GPA, 1, { read: true, write: false });
    await r.qi.submit(r.ctx(), [psi(IOVA, 1)]);
    expect(r.ioctls[0]?.flags).toBe(VFIO_DMA_MAP_FLAG_READ);
  });

  it('re-syncs the whole domain on a domain-selective invalidation: every table entry read, every cleared page unmapped', async () => {
    const r = setup();
    r.table.map(IOVA - 2 * PAGE_SIZE, GPA, 3);
    await r.qi.submit(r.ctx(), [psi(IOVA - 2 * PAGE_SIZE, 3)]);
    const readsBefore = stats(r)['walkReads'] ?? 0;
    // Lazy unmaps: the guest clears two leaves and invalidates nothing yet.
    r.table.unmap(IOVA - 2 * PAGE_SIZE, 2);
    expect(stats(r)['shadowPages']).toBe(3);
    expect(await r.qi.submit(r.ctx(), [dsi()])).toBe(0);
    expect(r.ioctls.slice(3).map((i) => [i.kind, i.iova])).toEqual([['UNMAP', IOVA - 2 * PAGE_SIZE], ['UNMAP', IOVA - PAGE_SIZE]]);
    expect(stats(r)).toMatchObject({ iotlbDsi: 1, shadowPages: 1 });
    expect((stats(r)['walkReads'] ?? 0) - readsBefore).toBe(4 * 512);
  });

  it('leaves address spaces of other domains alone', async () => {
    const r = setup();
    r.table.map(IOVA, GPA, 1);
    expect(await r.qi.submit(r.ctx(), [psi(IOVA, 1, 9), dsi(9)])).toBe(0);
    expect(r.ioctls).toEqual([]);
    expect(stats(r)).toMatchObject({ walkReads: 0 });
  });

  it('replaces a live mapping whose translation the guest changed in place: UNMAP then MAP', async () => {
    const r = setup();
    r.table.map(IOVA, GPA, 1);
    await r.qi.submit(r.ctx(), [psi(IOVA, 1)]);
    r.table.map(IOVA, GPA + PAGE_SIZE, 1);
    await r.qi.submit(r.ctx(), [psi(IOVA, 1)]);
    expect(r.ioctls.map((i) => [i.kind, i.vaddr])).toEqual([['MAP', VMM_RAM_VADDR + GPA], ['UNMAP', undefined], ['MAP', VMM_RAM_VADDR + GPA + PAGE_SIZE]]);
  });

  it('stops at a descriptor it refuses with FSTS.IQE and IQH on it; the guest recovers Linux-style and the queue runs on', async () => {
    const r = setup();
    const bad: VtdDescriptor = { ...psi(IOVA, 1), am: 19 }; // beyond MAMV
    expect(await r.qi.submit(r.ctx(), [bad])).toBe(-22);
    expect(r.qi.recoveries).toBe(1);
    expect(stats(r)).toMatchObject({ queueErrors: 1, waits: 0 });
    // IQE was cleared by the guest (write 1), and with it the pending fault event.
    expect((await r.read(VTD_REG.FSTS)) & FSTS.IQE).toBe(0);
    expect((await r.read(VTD_REG.FECTL)) & EVENT_CTL.IP).toBe(0);
    expect(iqIndexOf(await r.read(VTD_REG.IQH))).toBe(0);
    // The next batch also runs the wait descriptor copied over the refused one.
    r.table.map(IOVA, GPA, 1);
    expect(await r.qi.submit(r.ctx(), [psi(IOVA, 1)])).toBe(0);
    expect(stats(r)).toMatchObject({ waits: 3, mapDma: 1 });
    expect(iqIndexOf(await r.read(VTD_REG.IQH))).toBe(4);
  });

  it('refuses a wait whose status address is not guest RAM, and a tail beyond the queue, without processing anything else', async () => {
    const r = setup();
    const wait = encodeDescriptors([{ type: DescType.WAIT, interrupt: false, statusWrite: true, fence: false, pageDrain: false, statusData: 2, statusAddr: 2 ** 44 }]);
    const rep = await r.mmio(VTD_REG.IQT, iqRegisterOf(1), true, [{ gpa: vtdIqSlotGpa(0), data: wait }]);
    expect(rep.status).toBe(0);
    expect(rep.guestMemory).toEqual([]);
    expect((await r.read(VTD_REG.FSTS)) & FSTS.IQE).toBe(FSTS.IQE);
    // Masked fault event: pending stays set until IQE is cleared.
    expect((await r.read(VTD_REG.FECTL)) & EVENT_CTL.IP).toBe(EVENT_CTL.IP);
    expect(iqIndexOf(await r.read(VTD_REG.IQH))).toBe(0);
    await r.mmio(VTD_REG.FSTS, FSTS.IQE, true);
    expect(await r.read(VTD_REG.FSTS)).toBe(0);
    // QT 4096 is beyond a 256-entry queue.
    await r.mmio(VTD_REG.IQT, iqRegisterOf(4096), true);
    expect((await r.read(VTD_REG.FSTS)) & FSTS.IQE).toBe(FSTS.IQE);
    expect(stats(r)).toMatchObject({ queueErrors: 2, descriptors: 1 });
  });

  it('answers the capability and queue registers as the probed unit reports them, and ignores accesses outside its page', async () => {
    const r = setup();
    expect(await r.read(VTD_REG.CAP)).toBe(Number(VTD_CAP & 0xffff_ffffn));
    expect(await r.read(VTD_REG.CAP + 4)).toBe(Number(VTD_CAP >> 32n));
    expect(await r.read(VTD_REG.IQA)).toBe(0x5800_0000);
    expect(await r.read(VTD_REG.RTADDR)).toBe(VTD_ROOT_TABLE_GPA);
    const outside = await r.mmio(0x1000, 0x1234, true);
    expect(outside.status).toBe(0);
    expect(stats(r)).toMatchObject({ descriptors: 0 });
    expect(DESC_SIZE).toBe(16);
  });
});
