import { describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE, GUEST_TABLE_BASE, HOST_TABLE_BASE, cdIpa, steAddr, vmRamBase } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { IOAS_MAP_SIZE, IOAS_UNMAP_SIZE, IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE, type IoasMap } from '../../services/formats/iommufd-ioas.js';
import { viommuVmid } from '../../services/machine/iommufd-objects.js';
import { FrameAllocator, PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { PageTable } from '../../services/machine/pagetable.js';
import { CMD_SIZE, Opcode, decodeCommand } from '../../services/formats/smmu/commands.js';
import { STE_CONFIG, encodeCd, encodeSte } from '../../services/formats/smmu/structures.js';
import { VMM_RAM_VADDR } from '../../services/formats/vfio-type1.js';
import { VIRTIO_MEM_BLOCK_SIZE, VIRTIO_MEM_REGION_BASE, virtioMemBlockGpa } from '../../services/machine/virtio-mem.js';
import { PhysicalCmdq } from '../../services/psmmu/cmdq.js';
import { EventQueue } from '../../services/psmmu/events.js';
import { Iotlb } from '../../worker-pool/iotlb.js';
import { Translator } from '../../services/psmmu/translate.js';
import { IOAS_COUNTERS, VmIoas, type IoasCounters } from '../../services/vfio/ioas.js';
import { GuestView } from '../helpers/smmu-fixture.js';
import { iommufdLayoutOf } from '../../services/designs/registry.js';

const ASID = 3;
const IOVA = 0x1000_0000;

/**
 * VM 0 with one device behind each of two physical SMMUs, its stage 2 laid out as vfio lays it out
 * (boot RAM in 1 GiB blocks, the virtio-mem region in 2 MiB blocks), and each pSMMU a real
 * translator and command queue, so the test sees what the pSMMUs still translate after an unmap.
 */
function rig(model: 'nested-smmuv3' | 'none', vmid: 'per-s2-parent' | 'per-vsmmu' = 'per-s2-parent') {
  const t = {
    model, vmids: [7], vmidPolicy: vmid, vsmmu: 'per-psmmu', vcmdqsPerVsmmu: 0,
    devices: [{ vm: 0, psmmu: 0, vsid: 8, psid: 0x100 }, { vm: 0, psmmu: 1, vsid: 16, psid: 0x200 }],
  } as unknown as Topology__Output;
  const host = new PhysMemory();
  const s2 = new PageTable(host, new FrameAllocator(HOST_TABLE_BASE));
  s2.mapBlocks(0, vmRamBase(0), VIRTIO_MEM_REGION_BASE, 1);
  s2.mapBlocks(VIRTIO_MEM_REGION_BASE, vmRamBase(0) + VIRTIO_MEM_REGION_BASE, GUEST_RAM_SIZE - VIRTIO_MEM_REGION_BASE, 2);
  const guest = new GuestView(host, vmRamBase(0));
  const stage1 = new PageTable(guest, new FrameAllocator(GUEST_TABLE_BASE));
  const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
  const smmus = t.devices.map((d, i) => {
    const nested = model === 'nested-smmuv3';
    host.write(steAddr(d.psmmu, d.psid), encodeSte({ valid: true, config: nested ? STE_CONFIG.NESTED : STE_CONFIG.S2, s1ContextPtr: nested ? cdIpa(i) : 0, vmid: viommuVmid(t, 0, d.psmmu), s2ttb: s2.root }));
    if (nested) guest.write(cdIpa(i), encodeCd({ valid: true, asid: ASID, ttb0: stage1.root }));
    const iotlb = Iotlb.create(64);
    const translator = new Translator(d.psmmu, host, iotlb, new EventQueue(), costs);
    return { sid: d.psid, translator, cmdq: new PhysicalCmdq(8, iotlb, translator), got: [] as { opcode: number; vmid: number; ttl?: number; tg?: number; num?: number; scale?: number }[] };
  });
  const counters = Object.fromEntries(IOAS_COUNTERS.map((k) => [k, 0])) as IoasCounters;
  const ioas = new VmIoas(0, s2, t, async (_ctx, psmmu, cmds) => {
    const smmu = smmus[psmmu];
    if (!smmu) return -Errno.ENODEV;
    for (let o = 0; o < cmds.length; o += CMD_SIZE) {
      const d = decodeCommand(cmds, o);
      smmu.got.push({ opcode: d.opcode, vmid: d.fields.vmid ?? -1, ttl: d.fields.ttl, tg: d.fields.tg, num: d.fields.num, scale: d.fields.scale });
    }
    expect(smmu.cmdq.write(cmds)).toBe(true);
    return smmu.cmdq.consume().error === 0 ? 0 : -Errno.EIO;
  }, counters);
  const ctx = (): OpContext => new OpContext(1, 0, costs, new Map());
  const ioasId = iommufdLayoutOf(t).ioasId;
  const map = (iova: number, length: number, over: Partial<IoasMap> = {}): IoasMap => ({
    size: IOAS_MAP_SIZE, flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, ioasId, reserved: 0, userVa: VMM_RAM_VADDR + iova, length, iova, ...over,
  });
  const unmap = (iova: number, length: number) => ({ size: IOAS_UNMAP_SIZE, ioasId, iova, length });
  return { s2, stage1, smmus, ioas, counters, ctx, map, unmap, ioasId };
}

const BLOCK = virtioMemBlockGpa(5);

describe('a VM\'s IOAS: host-side stage-2 changes', () => {
  it('an unplugged block leaves no translation through it on any pSMMU, cached or not', async () => {
    const r = rig('nested-smmuv3');
    // The device's stage 1 points an IOVA into the block; both pSMMUs cache the combined entry.
    r.stage1.map(IOVA, BLOCK + 0x3000, 1);
    for (const s of r.smmus) expect(s.translator.translate(s.sid, IOVA, false).pa).toBe(vmRamBase(0) + BLOCK + 0x3000);
    for (const s of r.smmus) expect(s.translator.translate(s.sid, IOVA, false).hit).toBe(true);
    expect(await r.ioas.unmap(r.ctx(), r.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE))).toBe(VIRTIO_MEM_BLOCK_SIZE);
    for (const s of r.smmus) expect(s.translator.translate(s.sid, IOVA, false)).toMatchObject({ pa: -1, stale: false });
    // Its neighbours, in the region and in boot RAM, still translate.
    expect(r.s2.walk(BLOCK - 1).pa).toBe(vmRamBase(0) + BLOCK - 1);
    expect(r.s2.walk(BLOCK + VIRTIO_MEM_BLOCK_SIZE).pa).toBe(vmRamBase(0) + BLOCK + VIRTIO_MEM_BLOCK_SIZE);
    expect(r.s2.walk(0x1234_5000).pa).toBe(vmRamBase(0) + 0x1234_5000);
    // Each pSMMU: TLBI_S2_IPA over the block and its sync, then TLBI_NH_ALL (the nested entries
    // built on it) with a sync of its own (arm_smmu_tlb_inv_range_domain for a nest parent).
    for (const s of r.smmus) expect(s.got.map((g) => g.opcode)).toEqual([Opcode.TLBI_S2_IPA, Opcode.CMD_SYNC, Opcode.TLBI_NH_ALL, Opcode.CMD_SYNC]);
    // The block's TLBI carries its level's TTL (2 MiB: 2) and covers the block's 512 pages.
    for (const s of r.smmus) expect(s.got[0]).toMatchObject({ ttl: 2, tg: 1, num: 0, scale: 9 });
    expect(r.counters).toMatchObject({ ioasUnmaps: 1, stage2Flushes: 2, ioasErrors: 0 });
    expect([...r.ioas.delivered]).toEqual([[0, 2], [1, 2]]);
  });

  it('tags each pSMMU\'s invalidation with the VMID that pSMMU uses for the VM', async () => {
    const shared = rig('nested-smmuv3');
    await shared.ioas.unmap(shared.ctx(), shared.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE));
    expect(shared.smmus.map((s) => s.got[0]?.vmid)).toEqual([7, 7]);
    const own = rig('nested-smmuv3', 'per-vsmmu');
    await own.ioas.unmap(own.ctx(), own.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE));
    expect(own.smmus.map((s) => s.got[0]?.vmid)).toEqual([1, 2]);
  });

  it('with a stage-2-only domain (no vIOMMU) invalidates the IPA range alone', async () => {
    const r = rig('none');
    const s = r.smmus[0];
    expect(s?.translator.translate(s.sid, BLOCK + 0x1000, false).pa).toBe(vmRamBase(0) + BLOCK + 0x1000);
    await r.ioas.unmap(r.ctx(), r.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE));
    expect(s?.got.map((g) => g.opcode)).toEqual([Opcode.TLBI_S2_IPA, Opcode.CMD_SYNC]);
    expect(s?.translator.translate(s.sid, BLOCK + 0x1000, false)).toMatchObject({ pa: -1, stale: false });
  });

  it('maps a block back with no invalidation, and refuses what iommufd refuses', async () => {
    const r = rig('nested-smmuv3');
    const ctx = r.ctx();
    // A range that cuts an area (boot RAM is one), or holds none, is ENOENT.
    expect(await r.ioas.unmap(ctx, r.unmap(0x4000_0000, 0x4000_0000))).toBe(-Errno.ENOENT);
    expect(await r.ioas.unmap(ctx, r.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE / 2))).toBe(-Errno.ENOENT);
    expect(await r.ioas.unmap(ctx, r.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE))).toBe(VIRTIO_MEM_BLOCK_SIZE);
    expect(await r.ioas.unmap(ctx, r.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE))).toBe(-Errno.ENOENT);
    // Zero or unaligned lengths and short structs are EINVAL; another IOAS is ENOENT.
    expect(await r.ioas.unmap(ctx, r.unmap(BLOCK, 0))).toBe(-Errno.EINVAL);
    expect(await r.ioas.unmap(ctx, r.unmap(BLOCK + 1, VIRTIO_MEM_BLOCK_SIZE))).toBe(-Errno.EINVAL);
    expect(await r.ioas.unmap(ctx, { ...r.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE), size: 8 })).toBe(-Errno.EINVAL);
    expect(await r.ioas.unmap(ctx, { ...r.unmap(BLOCK, VIRTIO_MEM_BLOCK_SIZE), ioasId: r.ioasId + 100 })).toBe(-Errno.ENOENT);
    const sent = r.smmus.map((s) => s.got.length);
    expect(await r.ioas.map(ctx, r.map(BLOCK, VIRTIO_MEM_BLOCK_SIZE, { flags: 1 << 7 }))).toBe(-Errno.EINVAL);
    expect(await r.ioas.map(ctx, r.map(BLOCK, VIRTIO_MEM_BLOCK_SIZE, { flags: IOMMU_IOAS_MAP_FIXED_IOVA }))).toBe(-Errno.EINVAL);
    expect(await r.ioas.map(ctx, r.map(BLOCK, VIRTIO_MEM_BLOCK_SIZE, { userVa: 0x1000 }))).toBe(-Errno.EFAULT);
    expect(await r.ioas.map(ctx, r.map(BLOCK, VIRTIO_MEM_BLOCK_SIZE))).toBe(0);
    expect(r.s2.walk(BLOCK + 0x10).pa).toBe(vmRamBase(0) + BLOCK + 0x10);
    expect(await r.ioas.map(ctx, r.map(BLOCK, VIRTIO_MEM_BLOCK_SIZE))).toBe(-Errno.EEXIST);
    expect(r.smmus.map((s) => s.got.length)).toEqual(sent);
    expect(r.counters).toMatchObject({ ioasMaps: 1, ioasUnmaps: 1 });
  });
});
