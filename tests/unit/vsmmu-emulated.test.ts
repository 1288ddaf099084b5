import { beforeEach, describe, expect, it } from 'vitest';
import { GUEST_TABLE_BASE, cdIpa } from '../../services/machine/board.js';
import { FrameAllocator, PhysMemory } from '../../services/machine/memory.js';
import { PageTable, levelSpan } from '../../services/machine/pagetable.js';
import {
  CMD_SIZE, atcInv, cfgiAll, cfgiCd, cfgiSte, decodeCommand, encodeCommand, tlbiNhAll, tlbiNhAsid, tlbiNhVa, tlbiNhVaa, tlbiNhVaRange,
  tlbiNsnhAll, tlbiS12Vmall, tlbiS2Ipa, type SmmuCommand,
} from '../../services/formats/smmu/commands.js';
import { EVENT, encodeCd } from '../../services/formats/smmu/structures.js';
import { NO_VMID, SOFT_IOTLB_MAX_ENTRIES, SoftIotlb } from '../../services/designs/emulated-smmuv3/soft-iotlb.js';
import { EmulatedSmmu } from '../../services/designs/emulated-smmuv3/vmm.js';

const PAGE = 4096;

describe('the software IOTLB (QEMU SMMUTLBEntry hash)', () => {
  it('finds an entry at whatever level it was cached, and only under its ASID and VMID', () => {
    const tlb = new SoftIotlb();
    tlb.insert({ asid: 1, vmid: NO_VMID, iova: 0x4000_0000, level: 2, pa: 0x8000_0000, writable: true });
    tlb.insert({ asid: 1, vmid: NO_VMID, iova: 0x1000, level: 3, pa: 0x9000, writable: false });
    expect(tlb.lookup(1, NO_VMID, 0x4000_0000 + 0x12_3456)?.pa).toBe(0x8000_0000);
    expect(tlb.lookup(1, NO_VMID, 0x1fff)?.writable).toBe(false);
    expect(tlb.lookup(2, NO_VMID, 0x1000)).toBeUndefined();
    expect(tlb.lookup(1, 7, 0x1000)).toBeUndefined();
    expect(tlb.lookup(1, NO_VMID, 0x2000)).toBeUndefined();
  });

  it('empties itself when an insert finds it full, as QEMU does, instead of evicting one entry', () => {
    const tlb = new SoftIotlb();
    for (let i = 0; i < SOFT_IOTLB_MAX_ENTRIES; i++) tlb.insert({ asid: 1, vmid: NO_VMID, iova: i * PAGE, level: 3, pa: i * PAGE, writable: true });
    expect(tlb.size).toBe(SOFT_IOTLB_MAX_ENTRIES);
    tlb.insert({ asid: 1, vmid: NO_VMID, iova: 0x100_0000, level: 3, pa: 0, writable: true });
    expect(tlb.size).toBe(1);
    expect(tlb.counters.overflows).toBe(1);
    expect(tlb.lookup(1, NO_VMID, 0)).toBeUndefined();
  });

  it('drops by range every entry whose span overlaps it, a block included', () => {
    const tlb = new SoftIotlb();
    tlb.insert({ asid: 1, vmid: NO_VMID, iova: 0, level: 2, pa: 0, writable: true });
    tlb.insert({ asid: 1, vmid: NO_VMID, iova: levelSpan(2), level: 3, pa: 0, writable: true });
    tlb.insert({ asid: 2, vmid: NO_VMID, iova: 0x5000, level: 3, pa: 0, writable: true });
    // One page inside the 2 MiB block of ASID 1.
    expect(tlb.invalidateRange(1, -1, 0x5000, PAGE)).toBe(1);
    expect(tlb.lookup(2, NO_VMID, 0x5000)).toBeDefined();
    expect(tlb.invalidateRange(-1, -1, 0, 2 * levelSpan(2))).toBe(2);
    expect(tlb.size).toBe(0);
    expect(tlb.counters.invalidated).toBe(3);
  });
});

/** A guest with one device (vSID 8, ASID 3) whose driver mapped pages in its stage-1 table. */
function guest(): { ram: PhysMemory; stage1: PageTable; smmu: EmulatedSmmu } {
  const ram = new PhysMemory();
  const stage1 = new PageTable(ram, new FrameAllocator(GUEST_TABLE_BASE));
  ram.write(cdIpa(0), encodeCd({ valid: true, asid: 3, ttb0: stage1.root }));
  // A second device (vSID 16, ASID 4) shares the table, so ASID scopes can be told apart.
  ram.write(cdIpa(1), encodeCd({ valid: true, asid: 4, ttb0: stage1.root }));
  return { ram, stage1, smmu: new EmulatedSmmu(ram, new Map([[8, cdIpa(0)], [16, cdIpa(1)]]), 10) };
}

function run(smmu: EmulatedSmmu, cmd: SmmuCommand): string {
  const b = Buffer.alloc(CMD_SIZE);
  encodeCommand(cmd, b, 0);
  return smmu.execute(decodeCommand(b, 0), b);
}

const IOVA = 0x1_0000_0000;
const PA = 0x1_2000_0000;

describe('the emulated SMMUv3: translations through the guest table and its caches', () => {
  let g: ReturnType<typeof guest>;
  beforeEach(() => {
    g = guest();
    g.stage1.map(IOVA, PA, 4);
  });

  it('walks the guest table on a miss (CD and four levels), then serves the page from its IOTLB', () => {
    expect(g.smmu.translate(8, IOVA + 0x123, false)).toEqual({ pa: PA + 0x123, hit: false, stale: false });
    expect(g.smmu.counters.walkAccesses).toBe(1 + 4);
    expect(g.smmu.translate(8, IOVA + 0x456, true)).toEqual({ pa: PA + 0x456, hit: true, stale: false });
    // Only the descriptor reads cost modeled time (10 ns each here); the oracle's check of a hit does not.
    expect(g.smmu.counters).toMatchObject({ translations: 2, iotlbHits: 1, iotlbMisses: 1, walkAccesses: 5, configMisses: 1, faults: 0, modeledNs: 50 });
  });

  it('serves an unmapped page from its IOTLB, marked stale, until a TLBI_NH_VA over it; then faults', () => {
    g.smmu.translate(8, IOVA + PAGE, false);
    g.stage1.unmap(IOVA, 4);
    expect(g.smmu.translate(8, IOVA + PAGE, false)).toMatchObject({ hit: true, stale: true });
    expect(g.smmu.counters.staleHits).toBe(1);
    for (const c of tlbiNhVaRange(3, IOVA, 4)) expect(run(g.smmu, c)).toBe('tlbi');
    expect(g.smmu.translate(8, IOVA + PAGE, false)).toMatchObject({ pa: -1, event: EVENT.F_TRANSLATION });
    expect(g.smmu.counters.faults).toBe(1);
  });

  it('scopes each TLBI: VA by ASID and range, VAA by range, ASID by ASID, NH_ALL and NSNH_ALL everything', () => {
    const cached = (): number => g.smmu.iotlb.size;
    const fill = (): void => {
      for (const sid of [8, 16]) for (let p = 0; p < 4; p++) g.smmu.translate(sid, IOVA + p * PAGE, false);
    };
    fill();
    expect(cached()).toBe(8);
    run(g.smmu, tlbiNhVa({ vmid: 0, asid: 4, va: BigInt(IOVA), tg: 1, num: 1 })); // 2 pages of ASID 4
    expect(cached()).toBe(6);
    run(g.smmu, tlbiNhVa({ vmid: 0, asid: 3, va: BigInt(IOVA + 3 * PAGE) })); // TG 0: one address
    expect(cached()).toBe(5);
    run(g.smmu, tlbiNhVa({ vmid: 0, asid: 3, va: BigInt(IOVA + 64 * PAGE), tg: 1, num: 7 })); // elsewhere
    expect(cached()).toBe(5);
    run(g.smmu, tlbiNhVaa({ vmid: 0, va: BigInt(IOVA + 2 * PAGE), tg: 1 })); // page 2 of both ASIDs
    expect(cached()).toBe(3);
    run(g.smmu, tlbiNhAsid({ vmid: 0, asid: 3 }));
    expect(cached()).toBe(1);
    expect(g.smmu.translate(16, IOVA + 3 * PAGE, false).hit).toBe(true);
    run(g.smmu, tlbiNhAll({ vmid: 0 }));
    expect(cached()).toBe(0);
    fill();
    run(g.smmu, tlbiNsnhAll());
    expect(cached()).toBe(0);
    expect(g.smmu.iotlb.counters.invalidated).toBe(16);
  });

  it('keeps a StreamID\'s CD in its config cache until a CFGI drops it', () => {
    g.smmu.translate(8, IOVA, false);
    // The guest gives the device a new ASID; the SMMU does not see it before CFGI_CD.
    g.ram.write(cdIpa(0), encodeCd({ valid: true, asid: 9, ttb0: g.stage1.root }));
    g.smmu.translate(8, IOVA + PAGE, false);
    expect(g.smmu.counters.configMisses).toBe(1);
    expect(run(g.smmu, cfgiCd({ sid: 8, ssid: 0 }))).toBe('cfgi');
    g.smmu.translate(8, IOVA + PAGE, false);
    expect(g.smmu.counters.configMisses).toBe(2);
    run(g.smmu, tlbiNhAsid({ vmid: 0, asid: 3 }));
    expect(g.smmu.translate(8, IOVA + PAGE, false).hit).toBe(true); // cached under ASID 9 now
    for (const cmd of [cfgiSte({ sid: 8 }), cfgiAll()]) {
      run(g.smmu, cmd);
      g.smmu.translate(8, IOVA, false);
    }
    expect(g.smmu.counters.configMisses).toBe(4);
  });

  it('CFGI_STE_RANGE drops the 2^(RANGE+1) StreamIDs around its SID and no others', () => {
    g.smmu.translate(8, IOVA, false);
    g.smmu.translate(16, IOVA, false);
    const b = Buffer.alloc(CMD_SIZE);
    encodeCommand({ opcode: 0x04, fields: { range: 3 } }, b, 0); // SIDs 0..15
    b.writeUInt32LE(9, 4);
    expect(g.smmu.execute(decodeCommand(b, 0), b)).toBe('cfgi');
    g.smmu.translate(8, IOVA, false);
    g.smmu.translate(16, IOVA, false);
    expect(g.smmu.counters.configMisses).toBe(3);
  });

  it('faults on what the guest set up wrong: no STE, an invalid CD, a write to a read-only page', () => {
    expect(g.smmu.translate(24, IOVA, false).event).toBe(EVENT.C_BAD_STE);
    g.ram.write(cdIpa(1), encodeCd({ valid: false, asid: 4, ttb0: g.stage1.root }));
    expect(g.smmu.translate(16, IOVA, false).event).toBe(EVENT.C_BAD_CD);
    g.stage1.map(IOVA + 0x10_0000, PA, 1, { read: true, write: false });
    expect(g.smmu.translate(8, IOVA + 0x10_0000, true).event).toBe(EVENT.F_PERMISSION);
    expect(g.smmu.translate(8, IOVA + 0x10_0000, false).pa).toBe(PA);
    expect(g.smmu.translate(8, IOVA + 0x10_0000, true).event).toBe(EVENT.F_PERMISSION); // also on a hit
    expect(g.smmu.counters.faults).toBe(4);
  });

  it('refuses stage-2 TLBIs (a stage-1-only SMMU) and has nothing to do for ATC_INV', () => {
    expect(run(g.smmu, tlbiS12Vmall({ vmid: 1 }))).toBe('illegal');
    expect(run(g.smmu, tlbiS2Ipa({ vmid: 1, ipa: 0x1000n }))).toBe('illegal');
    expect(run(g.smmu, atcInv({ sid: 8, size: 52, addr: 0n }))).toBe('none');
  });
});
