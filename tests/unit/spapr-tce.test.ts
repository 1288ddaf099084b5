import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE } from '../../services/machine/board.js';
import { DMA32_WINDOW, DDW_WINDOW, DDW_WINDOW_OFFSET,
  DMA32_WINDOW_SIZE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_RC, H_STUFF_TCE, HCALL_SIZE, decodeHcall, decodeTceList, decodeTceUpdate, encodeHcall,
  encodeTceList, encodeTceUpdate, iobaInWindow, liobnOf, liobnParts, tceGpa, tceListGpa, tceOf, tcePerms, vmOfLiobn, type Hcall,
} from '../../services/formats/spapr-tce.js';
import { readGuestRam } from '../../services/machine/guest-ram.js';
import { TceTable } from '../../services/machine/tce-table.js';
import { planClearHcalls, planMapHcalls } from '../../services/designs/spapr-tce/tce-hcalls.js';
import { decideTce } from '../../services/designs/spapr-tce-kvm/kvm.js';

const LIOBN = liobnOf(0);
const PAGE = 4096;

describe('sPAPR TCE codecs', () => {
  it('lays a hypercall out as r3 (number) then r4..r7, little-endian u64 each', () => {
    const b = encodeHcall({ nr: H_PUT_TCE_INDIRECT, args: [BigInt(LIOBN), 0x5000n, 0x7000_0000n, 8n] });
    expect(b.length).toBe(HCALL_SIZE);
    expect(b.readBigUInt64LE(0)).toBe(0x13cn);
    expect(b.readBigUInt64LE(8)).toBe(0x8000_0000n);
    expect(b.readBigUInt64LE(16)).toBe(0x5000n);
    expect(b.readBigUInt64LE(24)).toBe(0x7000_0000n);
    expect(b.readBigUInt64LE(32)).toBe(8n);
    expect(decodeHcall(b)).toEqual({ nr: H_PUT_TCE_INDIRECT, args: [0x8000_0000n, 0x5000n, 0x7000_0000n, 8n] });
    expect(decodeHcall(b.subarray(0, HCALL_SIZE - 1))).toBeUndefined();
  });

  it('builds TCEs as Linux does (real page number | TCE_PCI_READ | TCE_PCI_WRITE) and reads them back', () => {
    const tce = tceOf(0x1_2345_6000, true, true);
    expect(tce).toBe(0x1_2345_6003n);
    expect(tceGpa(tce)).toBe(0x1_2345_6000);
    expect(tcePerms(tce)).toEqual({ read: true, write: true });
    expect(tcePerms(tceOf(0x1000, true, false))).toEqual({ read: true, write: false });
  });

  it('writes a TCE list big-endian, as the guest fills its TCE page with cpu_to_be64', () => {
    const b = encodeTceList([0x1000_0003n, 0x2000_0001n]);
    expect([...b]).toEqual([0, 0, 0, 0, 0x10, 0, 0, 3, 0, 0, 0, 0, 0x20, 0, 0, 1]);
    expect(decodeTceList(b, 2)).toEqual([0x1000_0003n, 0x2000_0001n]);
    // A list shorter than npages: what is not there reads as zero (a clear TCE).
    expect(decodeTceList(b, 3)).toEqual([0x1000_0003n, 0x2000_0001n, 0n]);
  });

  it('round-trips a TceUpdate and refuses one longer than a TCE page', () => {
    const u = { liobn: LIOBN, ioba: 0x10_0000, tces: [3n, 0n, 0x5003n] };
    const b = encodeTceUpdate(u);
    expect(b.readUInt32LE(0)).toBe(LIOBN);
    expect(b.readUInt32LE(4)).toBe(3);
    expect(decodeTceUpdate(b)).toEqual(u);
    const big = encodeTceUpdate({ liobn: LIOBN, ioba: 0, tces: Array.from({ length: 513 }, () => 0n) });
    expect(decodeTceUpdate(big)).toBeUndefined();
  });

  it('numbers one liobn per VM and checks IOBA ranges against the 1 GiB window', () => {
    expect(vmOfLiobn(liobnOf(3))).toBe(3);
    expect(vmOfLiobn(liobnOf(0))).toBe(0);
    expect(vmOfLiobn(0x1234)).toBeUndefined();
    expect(vmOfLiobn(0x9000_0001)).toBeUndefined();
    // The DDW covers the whole guest RAM of the board.
    expect(DDW_WINDOW.entries * 2 ** DDW_WINDOW.pageShift).toBe(GUEST_RAM_SIZE);
    // The DDW is window 1 of the same PHB.
    expect(liobnParts(liobnOf(3, 1))).toEqual({ vm: 3, window: DDW_WINDOW });
    expect(liobnParts(liobnOf(3))).toEqual({ vm: 3, window: DMA32_WINDOW });
    expect(vmOfLiobn(liobnOf(3, 1))).toBeUndefined();
    expect(liobnParts(liobnOf(3, 2))).toBeUndefined();
    expect(iobaInWindow(0x1000n, 1n)).toBe(true);
    expect(iobaInWindow(0x1008n, 1n)).toBe(false);
    expect(iobaInWindow(BigInt(DMA32_WINDOW_SIZE - PAGE), 1n)).toBe(true);
    expect(iobaInWindow(BigInt(DMA32_WINDOW_SIZE - PAGE), 2n)).toBe(false);
    expect(iobaInWindow(BigInt(DMA32_WINDOW_SIZE), 0n)).toBe(true);
    expect(iobaInWindow(BigInt(DMA32_WINDOW_SIZE), 1n)).toBe(false);
  });

  it('reads guest bytes from the exit\'s guest memory, and zeroes where there is no RAM file', () => {
    const data = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]);
    expect([...readGuestRam([{ gpa: 0x7000_0000, data }], '/nonexistent', 0, 0x7000_0004, 4)]).toEqual([5, 6, 7, 8]);
    expect([...readGuestRam([{ gpa: 0x7000_0000, data }], '/nonexistent', 0, 0x7000_0004, 8)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  });
});

describe('the TCE table a window keeps', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmmsim-tce-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('stores one 64-bit TCE per entry and ignores entries outside the window', () => {
    const t = TceTable.private(16);
    t.set(3, 0x5003n);
    expect(t.get(3)).toBe(0x5003n);
    expect(t.get(4)).toBe(0n);
    t.set(16, 7n);
    expect(t.get(16)).toBe(0n);
  });

  it('is one table for KVM and the VMM when shared, and a new one (zeroed) when created again', () => {
    const path = join(dir, 'spapr-tce-0.table');
    expect(TceTable.open(path)).toBeUndefined(); // KVM finds no table until the VMM created one
    const vmm = TceTable.create(path);
    vmm.set(10, 0xabc003n);
    const kvm = TceTable.open(path) as TceTable;
    expect(kvm.get(10)).toBe(0xabc003n);
    kvm.set(11, 0x1001n);
    expect(vmm.get(11)).toBe(0x1001n);
    TceTable.create(path);
    expect(kvm.get(10)).toBe(0n);
  });
});

describe('the pseries guest\'s hypercall planning', () => {
  const ioba = 0x10_0000;
  const tces = (n: number): bigint[] => Array.from({ length: n }, (_, i) => tceOf(0x1_0000_0000 + i * PAGE, true, true));
  const list = tceListGpa(2);

  it('sets a single page with one H_PUT_TCE, even when multi-TCE is there', () => {
    const calls = planMapHcalls(LIOBN, ioba, tces(1), 'indirect', list);
    expect(calls.map((c) => c.hcall)).toEqual([{ nr: H_PUT_TCE, args: [BigInt(LIOBN), BigInt(ioba), 0x1_0000_0003n] }]);
  });

  it('sets 8 pages with one H_PUT_TCE_INDIRECT whose list holds the 8 TCEs', () => {
    const calls = planMapHcalls(LIOBN, ioba, tces(8), 'indirect', list);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.hcall).toEqual({ nr: H_PUT_TCE_INDIRECT, args: [BigInt(LIOBN), BigInt(ioba), BigInt(list), 8n] });
    expect(calls[0]?.list).toEqual(tces(8));
  });

  it('splits 600 pages into lists of 512 and 88', () => {
    const calls = planMapHcalls(LIOBN, ioba, tces(600), 'indirect', list);
    expect(calls.map((c) => [c.hcall.nr, c.ioba, c.pages])).toEqual([
      [H_PUT_TCE_INDIRECT, ioba, 512],
      [H_PUT_TCE_INDIRECT, ioba + 512 * PAGE, 88],
    ]);
    expect(calls[1]?.list?.[0]).toBe(tces(600)[512]);
  });

  it('without multi-TCE makes one H_PUT_TCE per page', () => {
    const calls = planMapHcalls(LIOBN, ioba, tces(5), 'per-entry', list);
    expect(calls.map((c) => c.hcall.nr)).toEqual(Array(5).fill(H_PUT_TCE));
    expect(calls.map((c) => c.hcall.args[1])).toEqual([0, 1, 2, 3, 4].map((i) => BigInt(ioba + i * PAGE)));
    expect(calls.map((c) => c.hcall.args[2])).toEqual(tces(5));
  });

  it('clears with H_STUFF_TCE of TCE 0 per up to 512 pages, or H_PUT_TCE(0) per page', () => {
    expect(planClearHcalls(LIOBN, ioba, 1, 'indirect').map((c) => c.hcall)).toEqual([{ nr: H_STUFF_TCE, args: [BigInt(LIOBN), BigInt(ioba), 0n, 1n] }]);
    expect(planClearHcalls(LIOBN, ioba, 600, 'indirect').map((c) => [c.hcall.nr, c.hcall.args[3]])).toEqual([[H_STUFF_TCE, 512n], [H_STUFF_TCE, 88n]]);
    const each = planClearHcalls(LIOBN, ioba, 3, 'per-entry');
    expect(each.map((c) => [c.hcall.nr, c.hcall.args[1], c.hcall.args[2]])).toEqual([0, 1, 2].map((i) => [H_PUT_TCE, BigInt(ioba + i * PAGE), 0n]));
  });
});

describe('KVM\'s in-kernel TCE checks', () => {
  const put = (ioba: bigint, tce: bigint): Hcall => ({ nr: H_PUT_TCE, args: [BigInt(LIOBN), ioba, tce] });
  const indirect = (ioba: bigint, list: bigint, n: bigint): Hcall => ({ nr: H_PUT_TCE_INDIRECT, args: [BigInt(LIOBN), ioba, list, n] });
  const stuff = (ioba: bigint, value: bigint, n: bigint): Hcall => ({ nr: H_STUFF_TCE, args: [BigInt(LIOBN), ioba, value, n] });
  const good = 0x1_0000_0003n;
  const list = (tces: bigint[]) => (): bigint[] => tces;

  it('writes a valid TCE, a clear, and a stuff of zeroes', () => {
    expect(decideTce(put(0x3000n, good), DMA32_WINDOW, list([]))).toEqual({ kind: 'update', ioba: 0x3000, tces: [good] });
    expect(decideTce(put(0x3000n, 0n), DMA32_WINDOW, list([]))).toEqual({ kind: 'update', ioba: 0x3000, tces: [0n] });
    expect(decideTce(indirect(0x3000n, 0x7000_0000n, 2n), DMA32_WINDOW, list([good, good + 0x1000n]))).toEqual({ kind: 'update', ioba: 0x3000, tces: [good, good + 0x1000n] });
    expect(decideTce(stuff(0x3000n, 0n, 3n), DMA32_WINDOW, list([]))).toEqual({ kind: 'update', ioba: 0x3000, tces: [0n, 0n, 0n] });
  });

  it('checks a DDW\'s 16 MiB TCEs against its own page: address bits below it punt, an IOBA off its page is refused', () => {
    const big = 0x100_0000n;
    const tce = big | 3n;
    const ioba = BigInt(DDW_WINDOW_OFFSET);
    expect(decideTce(put(ioba + big, tce), DDW_WINDOW, list([]))).toEqual({ kind: 'update', ioba: DDW_WINDOW_OFFSET + 0x100_0000, tces: [tce] });
    expect(decideTce(put(ioba, tce | 0x1000n), DDW_WINDOW, list([])).kind).toBe('punt');
    expect(decideTce(put(ioba + 0x1000n, tce), DDW_WINDOW, list([]))).toEqual({ kind: 'reject', status: H_RC.PARAMETER });
    // The 32-bit window's IOBAs are not the DDW's.
    expect(decideTce(put(0x3000n, tce), DDW_WINDOW, list([]))).toEqual({ kind: 'reject', status: H_RC.PARAMETER });
  });

  it('refuses bad IOBAs, oversized lists, unaligned lists and stuffing a mapping with H_PARAMETER', () => {
    const parameter = { kind: 'reject', status: H_RC.PARAMETER };
    expect(decideTce(put(0x3008n, good), DMA32_WINDOW, list([]))).toEqual(parameter);
    expect(decideTce(put(BigInt(DMA32_WINDOW_SIZE), good), DMA32_WINDOW, list([]))).toEqual(parameter);
    expect(decideTce(indirect(0x3000n, 0x7000_0000n, 513n), DMA32_WINDOW, list([]))).toEqual(parameter);
    expect(decideTce(indirect(0x3000n, 0x7000_0008n, 2n), DMA32_WINDOW, list([]))).toEqual(parameter);
    expect(decideTce(indirect(BigInt(DMA32_WINDOW_SIZE - PAGE), 0x7000_0000n, 2n), DMA32_WINDOW, list([good, good]))).toEqual(parameter);
    expect(decideTce(stuff(0x3000n, good, 1n), DMA32_WINDOW, list([]))).toEqual(parameter);
  });

  it('punts (H_TOO_HARD) what the kernel cannot finish: unknown liobn, memory not preregistered, stray address bits', () => {
    expect(decideTce(put(0x3000n, good), undefined, list([]))).toEqual({ kind: 'punt', why: 'liobn' });
    expect(decideTce(put(0x3000n, BigInt(GUEST_RAM_SIZE) | 3n), DMA32_WINDOW, list([]))).toEqual({ kind: 'punt', why: 'tce' });
    expect(decideTce(put(0x3000n, good | 0x10n), DMA32_WINDOW, list([]))).toEqual({ kind: 'punt', why: 'tce' });
    expect(decideTce(indirect(0x3000n, BigInt(GUEST_RAM_SIZE), 1n), DMA32_WINDOW, list([good]))).toEqual({ kind: 'punt', why: 'list' });
    expect(decideTce(indirect(0x3000n, 0x7000_0000n, 2n), DMA32_WINDOW, list([good, BigInt(GUEST_RAM_SIZE) | 1n]))).toEqual({ kind: 'punt', why: 'tce' });
    // A TCE with no permission is a clear whatever its address: the kernel takes it.
    expect(decideTce(put(0x3000n, BigInt(GUEST_RAM_SIZE) | 0x10n), DMA32_WINDOW, list([])).kind).toBe('update');
  });
});
