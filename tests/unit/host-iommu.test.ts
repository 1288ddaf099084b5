import { describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE, vmRamBase } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import { FrameAllocator, PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { PageTable } from '../../services/machine/pagetable.js';
import { CMD_SIZE, Opcode, decodeCommand } from '../../services/formats/smmu/commands.js';
import { HOST_IOMMU_COUNTERS, HOST_IOVA_LIMIT, HostIommuDomain, stage1DomainInvalidation, type SubmitCommands } from '../../services/vfio/host-iommu.js';

const PAGE = 0x1000;

/** Device 0's own stage-1 host domain (ASID 7, on pSMMU 1), with a submit that records the opcodes each pSMMU got. */
function rig() {
  const mem = new PhysMemory();
  const table = new PageTable(mem, new FrameAllocator(0x1000_0000));
  const submitted: { psmmu: number; opcodes: number[]; asids: number[] }[] = [];
  const counters = Object.fromEntries(HOST_IOMMU_COUNTERS.map((k) => [k, 0])) as HostIommuDomain['counters'];
  const submit: SubmitCommands = async (_ctx, psmmu, cmds) => {
    const opcodes: number[] = [];
    const asids: number[] = [];
    for (let o = 0; o < cmds.length; o += CMD_SIZE) {
      const c = decodeCommand(cmds, o);
      opcodes.push(c.opcode);
      asids.push(c.fields.asid ?? -1);
    }
    submitted.push({ psmmu, opcodes, asids });
    return 0;
  };
  const domain = new HostIommuDomain(0, table, stage1DomainInvalidation(7, 1, submit, counters), counters);
  const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
  const ctx = (): OpContext => new OpContext(1, 0, costs, new Map());
  return { domain, table, submitted, counters, ctx };
}

describe('the host IOMMU domain (a VM\'s shadow table)', () => {
  it('a device\'s stage-1 domain: a map invalidates nothing (no iotlb_sync_map); an unmap is TLBI_NH_VA with its ASID + CMD_SYNC on its one pSMMU', async () => {
    const r = rig();
    expect(await r.domain.map(r.ctx(), { iova: 0x10_0000, gpa: 0x2000, pages: 2, write: false, pin: true })).toBe(0);
    expect(r.table.walk(0x10_1000)).toMatchObject({ pa: vmRamBase(0) + 0x3000, writable: false });
    expect(r.submitted).toEqual([]);
    // Unmapping a range that covers the mapping whole returns its pages.
    expect(await r.domain.unmap(r.ctx(), 0, 0x200, true)).toBe(2);
    expect(r.table.walk(0x10_0000).pa).toBe(-1);
    expect(r.domain.mappings).toBe(0);
    expect(r.submitted.map((s) => s.psmmu)).toEqual([1]);
    expect(r.submitted[0]?.opcodes.at(-1)).toBe(Opcode.CMD_SYNC);
    const tlbis = r.submitted[0]?.opcodes.slice(0, -1) ?? [];
    expect(tlbis.length).toBeGreaterThan(0);
    expect(tlbis.every((op) => op === Opcode.TLBI_NH_VA)).toBe(true);
    expect(r.submitted[0]?.asids.slice(0, -1).every((a) => a === 7)).toBe(true);
    expect(r.counters).toMatchObject({ maps: 1, unmaps: 1, pagesMapped: 2, pagesUnmapped: 2, flushes: 1, mapErrors: 0 });
  });

  it('refuses an overlap, a split, memory outside the VM and IOVAs past its input range, changing nothing', async () => {
    const r = rig();
    expect(await r.domain.map(r.ctx(), { iova: 0x10_0000, gpa: 0, pages: 4, write: true, pin: true })).toBe(0);
    const flushes = r.submitted.length;
    expect(await r.domain.map(r.ctx(), { iova: 0x10_3000, gpa: 0, pages: 1, write: true, pin: true })).toBe(-Errno.EEXIST);
    expect(await r.domain.unmap(r.ctx(), 0x10_1000, 1, true)).toBe(-Errno.EINVAL);
    expect(await r.domain.map(r.ctx(), { iova: 0x20_0000, gpa: GUEST_RAM_SIZE - PAGE, pages: 2, write: true, pin: true })).toBe(-Errno.EFAULT);
    // 2^48 would alias IOVA 0 in a 48-bit table: refused as io-pgtable refuses it.
    expect(await r.domain.map(r.ctx(), { iova: HOST_IOVA_LIMIT, gpa: 0, pages: 1, write: true, pin: true })).toBe(-Errno.ERANGE);
    expect(await r.domain.map(r.ctx(), { iova: HOST_IOVA_LIMIT - PAGE, gpa: 0, pages: 2, write: true, pin: true })).toBe(-Errno.ERANGE);
    expect(r.table.walk(0).pa).toBe(-1);
    expect(r.submitted.length).toBe(flushes);
    expect(r.counters.mapErrors).toBe(5);
    expect(r.domain.mappings).toBe(1);
  });

  it('invalidates what an unmap removed, however large the range asked', async () => {
    const r = rig();
    await r.domain.map(r.ctx(), { iova: 0x1000, gpa: 0, pages: 1, write: true, pin: true });
    await r.domain.map(r.ctx(), { iova: 2 ** 47, gpa: 0, pages: 1, write: true, pin: true });
    r.submitted.length = 0;
    // The whole 48-bit space: the flush covers the span of the two mappings, in a bounded number of commands.
    expect(await r.domain.unmap(r.ctx(), 0, HOST_IOVA_LIMIT / PAGE, true)).toBe(2);
    expect(r.submitted).toHaveLength(1);
    const tlbis = r.submitted[0]?.opcodes.filter((op) => op === Opcode.TLBI_NH_VA).length ?? 0;
    expect(tlbis).toBeGreaterThan(0);
    expect(tlbis).toBeLessThan(200);
  });
});
