import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE, steAddr, vmRamBase } from '../../services/machine/board.js';
import { CMD_SIZE, cfgiSte, cmdSync, encodeCommand, tlbiNhAll, tlbiNhAsid, tlbiNhVa, tlbiNhVaa, tlbiNsnhAll, tlbiS12Vmall, tlbiS2Ipa, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import { STE_CONFIG, decodeSte, encodeSte } from '../../services/formats/smmu/structures.js';
import { ASID, SID, VMID, nestedFixture } from '../helpers/smmu-fixture.js';

function submit(f: ReturnType<typeof nestedFixture>, cmds: SmmuCommand[]): void {
  const b = Buffer.alloc((cmds.length + 1) * CMD_SIZE);
  [...cmds, cmdSync()].forEach((c, i) => encodeCommand(c, b, i * CMD_SIZE));
  expect(f.cmdq.write(b)).toBe(true);
  expect(f.cmdq.consume().error).toBe(0);
}

describe('nested translation', () => {
  it('walks stage 1 through stage 2 on a miss, then hits with no memory access', () => {
    const f = nestedFixture();
    f.stage1.map(0x1000_0000, 0x2_0000_0000, 1);
    const cold = f.translator.translate(SID, 0x1000_0123, false);
    expect(cold.pa).toBe(vmRamBase(0) + 0x2_0000_0123);
    expect(cold.hit).toBe(false);
    // STE 1, CD through stage 2 (2 + 1), four stage-1 levels each through stage 2 (4 x 3),
    // and the output IPA through stage 2 (2): 1 GiB stage-2 blocks take two reads per walk.
    expect(cold.reads).toBe(18);
    const warm = f.translator.translate(SID, 0x1000_0456, true);
    expect(warm).toMatchObject({ pa: vmRamBase(0) + 0x2_0000_0456, hit: true, reads: 0, stale: false });
  });

  it('records F_TRANSLATION for an unmapped IOVA and C_BAD_STE for an unknown StreamID', () => {
    const f = nestedFixture();
    expect(f.translator.translate(SID, 0x5000, false).pa).toBe(-1);
    expect(f.translator.translate(0x9999, 0x5000, false).pa).toBe(-1);
    expect(f.events.byType.get('F_TRANSLATION')).toBe(1);
    expect(f.events.byType.get('C_BAD_STE')).toBe(1);
    expect(f.translator.counters.faults).toBe(2);
  });

  it('serves a stale entry after the PTE is cleared until the TLBI and CMD_SYNC ran, then faults', () => {
    const f = nestedFixture();
    f.stage1.map(0x4000, 0x9000, 1);
    f.translator.translate(SID, 0x4000, false);
    f.stage1.unmap(0x4000, 1);
    expect(f.translator.translate(SID, 0x4000, false)).toMatchObject({ hit: true, stale: true });
    submit(f, [tlbiNhVa({ vmid: VMID, asid: ASID, va: 0x4000n, tg: 1 })]);
    expect(f.translator.translate(SID, 0x4000, false)).toMatchObject({ pa: -1, stale: false });
  });

  it('re-reads the STE only after CFGI_STE', () => {
    const f = nestedFixture();
    f.stage1.map(0x4000, 0x9000, 1);
    f.translator.translate(SID, 0x4000, false);
    f.iotlb.invalidateAll();
    expect(f.translator.translate(SID, 0x4000, false).reads).toBe(14); // config cached: no STE, no CD
    f.iotlb.invalidateAll();
    submit(f, [cfgiSte({ sid: SID })]);
    expect(f.translator.translate(SID, 0x4000, false).reads).toBe(18);
  });

  /**
   * For each invalidation command: once its CMD_SYNC completed, no translation of a page it
   * covers is served from the IOTLB, and pages outside its scope still hit.
   */
  const scopes: [string, (pages: number[]) => SmmuCommand, (page: number, i: number, pages: number[]) => boolean][] = [
    ['TLBI_NH_VA (range)', (p) => tlbiNhVa({ vmid: VMID, asid: ASID, va: BigInt((p[0] as number) * 4096), tg: 1, scale: 0, num: 1, leaf: 1 }), (pg, _i, p) => pg === p[0] || pg === (p[0] as number) + 1],
    ['TLBI_NH_VAA', (p) => tlbiNhVaa({ vmid: VMID, va: BigInt((p[0] as number) * 4096), tg: 1 }), (pg, _i, p) => pg === p[0]],
    ['TLBI_NH_ASID', () => tlbiNhAsid({ vmid: VMID, asid: ASID }), () => true],
    ['TLBI_NH_ASID of another ASID', () => tlbiNhAsid({ vmid: VMID, asid: ASID + 1 }), () => false],
    ['TLBI_NH_ALL', () => tlbiNhAll({ vmid: VMID }), () => true],
    ['TLBI_NH_ALL of another VMID', () => tlbiNhAll({ vmid: VMID + 1 }), () => false],
    ['TLBI_S12_VMALL', () => tlbiS12Vmall({ vmid: VMID }), () => true],
    ['TLBI_NSNH_ALL', () => tlbiNsnhAll(), () => true],
    // Stage-2 invalidation by IPA leaves combined stage-1+2 entries (software follows it with NH_ALL).
    ['TLBI_S2_IPA', (p) => tlbiS2Ipa({ vmid: VMID, ipa: BigInt(0x1_0000_0000 + (p[0] as number) * 4096), tg: 1 }), () => false],
  ];
  for (const [name, command, covers] of scopes) {
    it(`${name}: covered entries are gone after CMD_SYNC, the rest survive`, () => {
      fc.assert(
        fc.property(fc.uniqueArray(fc.integer({ min: 0x100, max: 0x1ff }), { minLength: 2, maxLength: 12 }), (pages) => {
          const f = nestedFixture(1024);
          pages.forEach((pg) => f.stage1.map(pg * 4096, 0x1_0000_0000 + pg * 4096, 1));
          pages.forEach((pg) => f.translator.translate(SID, pg * 4096, false));
          submit(f, [command(pages)]);
          pages.forEach((pg, i) => {
            const r = f.translator.translate(SID, pg * 4096, false);
            expect(r.hit, `page 0x${pg.toString(16)}`).toBe(!covers(pg, i, pages));
          });
        }),
        { numRuns: 30 },
      );
    });
  }

  it('reports C_BAD_CD when the context descriptor IPA is outside stage 2', () => {
    const f = nestedFixture();
    const s2ttb = decodeSte(f.host.read(steAddr(0, SID), 64)).s2ttb;
    f.host.write(steAddr(0, 0x200), encodeSte({ valid: true, config: STE_CONFIG.NESTED, s1ContextPtr: GUEST_RAM_SIZE + 0x1000, vmid: VMID, s2ttb }));
    expect(f.translator.translate(0x200, 0x4000, false).pa).toBe(-1);
    expect(f.events.byType.get('C_BAD_CD')).toBe(1);
  });
});
