import { describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE, vmRamBase } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import { FrameAllocator, PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { PageTable } from '../../services/machine/pagetable.js';
import { DDW_WINDOW, DDW_WINDOW_OFFSET, DMA32_WINDOW, DMA32_WINDOW_SIZE } from '../../services/formats/spapr-tce.js';
import { HOST_IOMMU_COUNTERS, type HostIommuDomain } from '../../services/vfio/host-iommu.js';
import { TceTableDomain, type TablePe } from '../../services/vfio/tce-table.js';

const PAGE = 0x1000;

/** VM 0's PHB table programmed into two PEs (one on each of two PHBs), recording every kill. */
function rig() {
  const table = new PageTable(new PhysMemory(), new FrameAllocator(0x1000_0000));
  const kills: string[] = [];
  const counters = Object.fromEntries(HOST_IOMMU_COUNTERS.map((k) => [k, 0])) as HostIommuDomain['counters'];
  const pes: TablePe[] = [{ psmmu: 0, sid: 0x100 }, { psmmu: 1, sid: 0x200 }];
  const domain = new TceTableDomain(0, table, pes, async (_ctx, pe, ioba, npages, shift) => {
    kills.push(`${pe.psmmu}/${pe.sid.toString(16)} ${ioba.toString(16)}+${npages}${shift === 12 ? '' : `x${shift}`}`);
    return 0;
  }, counters);
  const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, k === 'kernel.tce_put' ? 1 : 0])));
  const ctx = (): OpContext => new OpContext(1, 0, costs, new Map());
  return { domain, table, kills, counters, ctx };
}

describe('an sPAPR TCE table on a POWER host (tce-table.ts)', () => {
  it('VFIO MAP_DMA (tce_iommu_build_v2): one exchange per TCE and one kill per PE for the call, replacing what an entry held; UNMAP_DMA the same', async () => {
    const r = rig();
    const c = r.ctx();
    expect(await r.domain.build(c, 0x3000, 0x5000, 2 * PAGE, true)).toBe(0);
    expect(c.modeledNs).toBe(2); // kernel.tce_put per TCE, nothing pinned
    expect(r.table.walk(0x4000).pa).toBe(vmRamBase(0) + 0x6000);
    expect(r.kills).toEqual(['0/100 3000+2', '1/200 3000+2']);
    // A map over a valid entry exchanges it: no unmap first, no EEXIST (no vfio_dma tree).
    expect(await r.domain.build(r.ctx(), 0x3000, 0x9000, PAGE, false)).toBe(0);
    expect(r.table.walk(0x3000)).toMatchObject({ pa: vmRamBase(0) + 0x9000, writable: false });
    expect(await r.domain.clear(r.ctx(), 0x3000, 2 * PAGE)).toBe(0);
    expect(r.table.walk(0x3000).pa).toBe(-1);
    expect(r.table.walk(0x4000).pa).toBe(-1);
    expect(r.kills).toHaveLength(6);
    expect(r.counters).toMatchObject({ maps: 2, unmaps: 1, pagesMapped: 3, pagesUnmapped: 3, flushes: 6, mapErrors: 0 });
  });

  it('KVM (kvmppc_tce_iommu_map / unmap): a kill per TCE on each PE, after each TCE', async () => {
    const r = rig();
    expect(await r.domain.putEach(r.ctx(), DMA32_WINDOW, 0x10_0000, [0x1000, undefined, 0x3000], [true, true, false])).toBe(0);
    expect(r.kills).toEqual(['0/100 100000+1', '1/200 100000+1', '0/100 101000+1', '1/200 101000+1', '0/100 102000+1', '1/200 102000+1']);
    expect(r.table.walk(0x10_2000)).toMatchObject({ pa: vmRamBase(0) + 0x3000, writable: false });
    expect(r.table.walk(0x10_1000).pa).toBe(-1);
  });

  it('the dynamic DMA window: 16 MiB TCEs, each mapped as 2 MiB blocks, killed with their page size', async () => {
    const r = rig();
    const big = 16 * 1024 * 1024;
    expect(await r.domain.putEach(r.ctx(), DDW_WINDOW, DDW_WINDOW_OFFSET, [0, big], [true, true])).toBe(0);
    expect(r.table.walk(DDW_WINDOW_OFFSET + big + 0x12_3000).pa).toBe(vmRamBase(0) + big + 0x12_3000);
    expect(r.kills).toEqual([`0/100 ${DDW_WINDOW_OFFSET.toString(16)}+1x24`, `1/200 ${DDW_WINDOW_OFFSET.toString(16)}+1x24`, `0/100 ${(DDW_WINDOW_OFFSET + big).toString(16)}+1x24`, `1/200 ${(DDW_WINDOW_OFFSET + big).toString(16)}+1x24`]);
    // VFIO's MAP_DMA finds the window by IOVA; a 4 KiB size there is not a whole TCE.
    expect(await r.domain.build(r.ctx(), DDW_WINDOW_OFFSET + 2 * big, 2 * big, PAGE, true)).toBe(-Errno.EINVAL);
    expect(await r.domain.build(r.ctx(), DDW_WINDOW_OFFSET + 2 * big, 2 * big, big, true)).toBe(0);
    expect(await r.domain.clear(r.ctx(), DDW_WINDOW_OFFSET, big)).toBe(0);
    expect(r.table.walk(DDW_WINDOW_OFFSET).pa).toBe(-1);
    // An IOVA between the windows is in none (tce_iommu_find_table): ENXIO.
    expect(await r.domain.build(r.ctx(), 2 ** 39, 0, PAGE, true)).toBe(-Errno.ENXIO);
  });

  it('refuses a range past the window (EINVAL) and memory outside the preregistered RAM before changing any entry', async () => {
    const r = rig();
    expect(await r.domain.build(r.ctx(), DMA32_WINDOW_SIZE - PAGE, 0, 2 * PAGE, true)).toBe(-Errno.EINVAL);
    expect(await r.domain.build(r.ctx(), 0, GUEST_RAM_SIZE - PAGE, 2 * PAGE, true)).toBe(-Errno.EINVAL);
    expect(await r.domain.putEach(r.ctx(), DMA32_WINDOW, 0, [0x1000, GUEST_RAM_SIZE], [true, true])).toBe(-Errno.EFAULT);
    expect(r.table.walk(0).pa).toBe(-1);
    expect(r.kills).toEqual([]);
    expect(r.counters.mapErrors).toBe(3);
  });
});
