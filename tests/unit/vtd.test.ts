import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameAllocator, PAGE_SIZE, PhysMemory } from '../../services/machine/memory.js';
import { DESC_SIZE, DescType, FSTS, Granularity, SL_R, SL_W, VTD_CAP, VTD_LEVELS, VTD_REG, capCachingMode, capMaxAmask, capPsi, decodeContextEntry, decodeDescriptor, decodeRootEntry, descriptorType, encodeContextEntry, encodeDescriptor, encodeRootEntry, iqIndexOf, iqRegisterOf, psiRange, reservedBitsSet, slLevelSpan, type VtdDescriptor } from '../../services/formats/vtd.js';
import { VtdPageTable, walkSecondLevel, type SlWalkEvent } from '../../services/machine/vtd-page-table.js';

function words(d: VtdDescriptor): [bigint, bigint] {
  const b = Buffer.alloc(DESC_SIZE);
  encodeDescriptor(d, b);
  return [b.readBigUInt64LE(0), b.readBigUInt64LE(8)];
}

function raw(qw0: bigint, qw1: bigint): Buffer {
  const b = Buffer.alloc(DESC_SIZE);
  b.writeBigUInt64LE(qw0, 0);
  b.writeBigUInt64LE(qw1, 8);
  return b;
}

describe('VT-d registers', () => {
  it('sits where QEMU and Linux put the queued-invalidation and fault registers', () => {
    expect([VTD_REG.FSTS, VTD_REG.FECTL, VTD_REG.IQH, VTD_REG.IQT, VTD_REG.IQA, VTD_REG.ICS]).toEqual([0x34, 0x38, 0x80, 0x88, 0x90, 0x9c]);
    expect(FSTS.IQE).toBe(0x10);
    // QH/QT in bits 18:4 for 128-bit descriptors.
    expect(iqRegisterOf(3)).toBe(0x30);
    expect(iqIndexOf(0x7fff0 | 0xf)).toBe(0x7fff);
  });

  it('reports caching mode, page-selective invalidation and MAMV 18 as QEMU does', () => {
    expect(capCachingMode(VTD_CAP)).toBe(true);
    expect(capPsi(VTD_CAP)).toBe(true);
    expect(capMaxAmask(VTD_CAP)).toBe(18);
  });
});

describe('VT-d invalidation descriptors', () => {
  it('encodes the wait descriptor Linux queues after every batch (QI_IWD_STATUS_DATA(QI_DONE) | STATUS_WRITE | TYPE)', () => {
    const [qw0, qw1] = words({ type: DescType.WAIT, interrupt: false, statusWrite: true, fence: false, pageDrain: false, statusData: 2, statusAddr: 0x5800_1004 });
    expect(qw0).toBe(0x0000_0002_0000_0025n);
    expect(qw1).toBe(0x5800_1004n);
  });

  it('encodes IOTLB invalidations as qi_flush_iotlb builds them', () => {
    // DID 2, DR and DW (QEMU advertises drain), PSI granularity (DMA_TLB_PSI_FLUSH >> 56 = 0x30).
    const psi = words({ type: DescType.IOTLB, granularity: Granularity.DEVICE_OR_PAGE, dr: true, dw: true, did: 2, addr: 0x1_0fff_f000, ih: true, am: 3 });
    expect(psi).toEqual([0x2_00f2n, 0x1_0fff_f000n | 0x40n | 3n]);
    const dsi = words({ type: DescType.IOTLB, granularity: Granularity.DOMAIN, dr: false, dw: false, did: 0x1234, addr: 0, ih: false, am: 0 });
    expect(dsi).toEqual([0x1234_0022n, 0n]);
  });

  it('encodes context-cache, device-TLB and interrupt-entry-cache invalidations field by field', () => {
    // QI_CC_FM(1) | QI_CC_SID(0x0108) | QI_CC_DID(5) | device granularity | type 1
    expect(words({ type: DescType.CONTEXT_CACHE, granularity: Granularity.DEVICE_OR_PAGE, did: 5, sid: 0x0108, fm: 1 })).toEqual([0x0001_0108_0005_0031n, 0n]);
    // PFSID 0xabc1: bits 15:12 take 0x1, bits 63:52 take 0xabc; QDEP 0x1f in 20:16; SID in 47:32.
    expect(words({ type: DescType.DEVICE_TLB, sid: 0x0010, pfsid: 0xabc1, mip: 0x1f, addr: 0x7000, size: true })).toEqual([0xabc0_0010_001f_1003n, 0x7001n]);
    // QI_IEC_SELECTIVE | QI_IEC_IIDEX(0x42) | QI_IEC_IM(3) | type 4
    expect(words({ type: DescType.IEC, indexSelective: true, index: 0x42, im: 3 })).toEqual([0x0000_0042_1800_0014n, 0n]);
  });

  it('decodes what it encodes, for every descriptor type and field value', () => {
    const u = (bits: number): fc.Arbitrary<number> => fc.integer({ min: 0, max: 2 ** bits - 1 });
    const page = fc.integer({ min: 0, max: 2 ** 40 - 1 }).map((p) => p * PAGE_SIZE);
    const desc: fc.Arbitrary<VtdDescriptor> = fc.oneof(
      fc.record({ type: fc.constant(DescType.CONTEXT_CACHE), granularity: u(2), did: u(16), sid: u(16), fm: u(2) }),
      fc.record({ type: fc.constant(DescType.IOTLB), granularity: u(2), dr: fc.boolean(), dw: fc.boolean(), did: u(16), addr: page, ih: fc.boolean(), am: u(6) }),
      fc.record({ type: fc.constant(DescType.DEVICE_TLB), sid: u(16), pfsid: u(16), mip: u(5), addr: page, size: fc.boolean() }),
      fc.record({ type: fc.constant(DescType.IEC), indexSelective: fc.boolean(), index: u(16), im: u(5) }),
      fc.record({
        type: fc.constant(DescType.WAIT), interrupt: fc.boolean(), statusWrite: fc.boolean(), fence: fc.boolean(), pageDrain: fc.boolean(),
        statusData: u(32), statusAddr: fc.integer({ min: 0, max: 2 ** 46 - 1 }).map((a) => a * 4),
      }),
    );
    fc.assert(fc.property(desc, (d) => {
      const b = Buffer.alloc(DESC_SIZE);
      encodeDescriptor(d, b);
      expect(decodeDescriptor(b)).toEqual(d);
    }));
  });

  it('reads the type from bits 3:0 and 11:9, so unknown and extended types do not decode', () => {
    expect(descriptorType(0x205n)).toBe(0x15);
    expect(decodeDescriptor(raw(0x205n, 0n))).toBeUndefined();
    expect(decodeDescriptor(raw(0x6n, 0n))).toBeUndefined(); // PASID-IOTLB: 256-bit queues only
    expect(decodeDescriptor(raw(0n, 0n))).toBeUndefined();
  });

  it('flags the reserved bits QEMU refuses and nothing a Linux guest sets', () => {
    const ok = (d: VtdDescriptor): boolean => {
      const b = Buffer.alloc(DESC_SIZE);
      encodeDescriptor(d, b);
      return reservedBitsSet(b);
    };
    expect(ok({ type: DescType.IOTLB, granularity: 3, dr: true, dw: true, did: 2, addr: 0x1000, ih: true, am: 18 })).toBe(false);
    expect(ok({ type: DescType.WAIT, interrupt: false, statusWrite: true, fence: true, pageDrain: false, statusData: 2, statusAddr: 0x100 })).toBe(false);
    expect(reservedBitsSet(raw(0x2_0032n, 0x80n))).toBe(true); // IOTLB qw1 bit 7
    expect(reservedBitsSet(raw(0x2_0032n | (1n << 40n), 0n))).toBe(true); // IOTLB qw0 above the DID
    expect(reservedBitsSet(raw(0x25n | 0x80n, 0n))).toBe(true); // wait: page-request drain without page requests
    expect(reservedBitsSet(raw(0x25n, 0x2n))).toBe(true); // wait: status address not 4-byte aligned
    expect(reservedBitsSet(raw(0x1n, 1n))).toBe(true); // context-cache: qw1 is reserved
    // Device-TLB with a PFSID is reserved on a unit without device-TLB throttling.
    expect(reservedBitsSet(raw(0x1003n, 0n))).toBe(true);
  });
});

describe('page-selective invalidation ranges (calculate_psi_aligned_address)', () => {
  it('uses the range itself when it is naturally aligned', () => {
    expect(psiRange(0x1_0fff_f000, 1)).toEqual({ addr: 0x1_0fff_f000, am: 0 });
    expect(psiRange(0x4000, 4)).toEqual({ addr: 0x4000, am: 2 });
    expect(psiRange(0x8000, 3)).toEqual({ addr: 0x8000, am: 2 });
  });

  it('widens an unaligned range to the aligned block both ends share, never splitting it', () => {
    // pfns 3 and 4 differ above bit 0: the block must hold pfns 0..7.
    expect(psiRange(3 * PAGE_SIZE, 2)).toEqual({ addr: 0, am: 3 });
    expect(psiRange(0x1ff * PAGE_SIZE, 2)).toEqual({ addr: 0, am: 10 });
  });

  it('always covers the range with the smallest naturally aligned block', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 30 }), fc.integer({ min: 1, max: 1024 }), (pfn, pages) => {
      const { addr, am } = psiRange(pfn * PAGE_SIZE, pages);
      const span = PAGE_SIZE * 2 ** am;
      expect(addr % span).toBe(0);
      expect(addr).toBeLessThanOrEqual(pfn * PAGE_SIZE);
      expect(addr + span).toBeGreaterThanOrEqual((pfn + pages) * PAGE_SIZE);
      if (am > 0) {
        const half = span / 2;
        expect(Math.floor(pfn * PAGE_SIZE / half)).not.toBe(Math.floor(((pfn + pages) * PAGE_SIZE - 1) / half));
      }
    }));
  });
});

describe('root and context entries', () => {
  it('encode the context-table pointer, the table root, the address width and the domain id where QEMU reads them', () => {
    const root = encodeRootEntry({ present: true, ctp: 0x5800_3000 });
    expect(root.readBigUInt64LE(0)).toBe(0x5800_3001n);
    expect(decodeRootEntry(root)).toEqual({ present: true, ctp: 0x5800_3000, reserved: false });
    const ce = encodeContextEntry({ present: true, fpd: false, tt: 0, slptptr: 0x8000_1000, aw: 2, did: 0x1234 });
    expect(ce.readBigUInt64LE(0)).toBe(0x8000_1001n);
    // VTD_CONTEXT_ENTRY_DID(hi) = (hi >> 8) & 0xffff; AW in bits 2:0.
    expect(ce.readBigUInt64LE(8)).toBe(0x12_3402n);
    expect(decodeContextEntry(ce)).toEqual({ present: true, fpd: false, tt: 0, slptptr: 0x8000_1000, aw: 2, did: 0x1234, reserved: false });
    ce.writeUInt32LE(0x80, 8);
    expect(decodeContextEntry(ce).reserved).toBe(true);
  });
});

describe('second-level I/O page table', () => {
  const IOVA = 0x1_0fff_f000;

  function table(): { mem: PhysMemory; t: VtdPageTable } {
    const mem = new PhysMemory();
    return { mem, t: new VtdPageTable(mem, new FrameAllocator(0x8000_0000)) };
  }

  it('writes 4 levels of R|W table pointers and a leaf of the address with R and W, and translates through them', () => {
    const { mem, t } = table();
    expect(t.map(IOVA, 0x1_2345_6000, 1)).toBe(4); // three new tables' pointers and the leaf
    let at = t.root;
    for (let level = VTD_LEVELS; level >= 1; level--) {
      const e = mem.read(at + (Math.floor(IOVA / slLevelSpan(level)) % 512) * 8, 8).readBigUInt64LE(0);
      expect(e & 3n).toBe(BigInt(SL_R | SL_W));
      at = Number(e & ~0xfffn);
    }
    expect(at).toBe(0x1_2345_6000);
    expect(t.translate(IOVA + 0x123)).toEqual({ pa: 0x1_2345_6123, read: true, write: true, reads: 4 });
    expect(t.map(IOVA - PAGE_SIZE, 0x9000, 1, { read: true, write: false })).toBe(1);
    expect(t.translate(IOVA - PAGE_SIZE)).toMatchObject({ pa: 0x9000, read: true, write: false });
  });

  it('clears leaves and frees only the tables an unmap covers entirely, for reuse after release', () => {
    const { t } = table();
    const base = 0x2_0000_0000; // 2 MiB aligned
    t.map(base, 0x10_0000, 512);
    const partial = t.unmap(base, 511);
    expect(partial).toEqual({ cleared: 511, freed: [] });
    expect(t.translate(base + 511 * PAGE_SIZE).pa).toBe(0x10_0000 + 511 * PAGE_SIZE);
    t.map(base, 0x10_0000, 511);
    const whole = t.unmap(base, 512);
    expect(whole.cleared).toBe(1); // the PDE; its 4 KiB-page table goes on the freelist
    expect(whole.freed).toHaveLength(1);
    expect(t.translate(base)).toMatchObject({ pa: -1, reads: 3 });
    t.release(whole.freed);
    expect(t.map(base + 0x20_0000, 0x5000, 1)).toBe(2); // a new level-1 table: the released frame
    expect(t.translate(base + 0x20_0000).pa).toBe(0x5000);
  });

  it('walks a range as QEMU does: each entry read once, leaves and holes reported with their whole span', async () => {
    const { mem, t } = table();
    const events: SlWalkEvent[] = [];
    const reads = await walkSecondLevel(mem, t.root, VTD_LEVELS, 0, 2 ** 48, (e) => { events.push(e); });
    expect(reads).toBe(512);
    expect(events).toHaveLength(512);
    expect(events.every((e) => !e.present && e.span === 2 ** 39)).toBe(true);

    t.map(IOVA, 0x7000, 1);
    events.length = 0;
    expect(await walkSecondLevel(mem, t.root, VTD_LEVELS, IOVA, IOVA + PAGE_SIZE, (e) => { events.push(e); })).toBe(4);
    expect(events).toEqual([{ iova: IOVA, span: PAGE_SIZE, present: true, pa: 0x7000, read: true, write: true }]);

    t.unmap(IOVA, 1);
    events.length = 0;
    await walkSecondLevel(mem, t.root, VTD_LEVELS, IOVA, IOVA + PAGE_SIZE, (e) => { events.push(e); });
    expect(events).toEqual([{ iova: IOVA, span: PAGE_SIZE, present: false, pa: 0, read: false, write: false }]);

    // Every entry of every reachable table: 512 at each of the 4 levels.
    let reported = 0;
    expect(await walkSecondLevel(mem, t.root, VTD_LEVELS, 0, 2 ** 48, () => {}, (n) => { reported += n; })).toBe(2048);
    expect(reported).toBe(2048);
  });

  it('skips an entry with reserved bits set (SNP without snoop control) instead of reporting it', async () => {
    const { mem, t } = table();
    t.map(IOVA, 0x7000, 1);
    // The leaf's slot, found by hand through the 4 levels.
    let at = t.root;
    for (let level = VTD_LEVELS; level > 1; level--) at = Number(mem.read(at + (Math.floor(IOVA / slLevelSpan(level)) % 512) * 8, 8).readBigUInt64LE(0) & ~0xfffn);
    const slot = at + (Math.floor(IOVA / PAGE_SIZE) % 512) * 8;
    mem.write32(slot, mem.read32(slot) | 0x800);
    const events: SlWalkEvent[] = [];
    await walkSecondLevel(mem, t.root, VTD_LEVELS, IOVA, IOVA + PAGE_SIZE, (e) => { events.push(e); });
    expect(events).toEqual([]);
    expect(t.translate(IOVA).pa).toBe(-1);
  });
});
