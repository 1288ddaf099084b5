/**
 * `vmmsim decode-cmd` end to end. Expected fields are computed here from the bit positions of
 * /work/shared/reference/smmuv3.md, not from the product's codec:
 * TLBI w0 NUM[16:12] SCALE[24:20] VMID[47:32] ASID[63:48]; w1 LEAF bit 0, TTL[9:8], TG[11:10], VA[63:12].
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Runs, STACK_LINE, lines, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

/** Bits [hi:lo] of a 64-bit word. */
function bits(w: bigint, hi: number, lo: number): bigint {
  return (w >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n);
}

/** The fields of a TLBI_NH_VA, as the reference places them. */
function tlbiNhVa(w0: bigint, w1: bigint): Record<string, number | string> {
  return {
    vmid: Number(bits(w0, 47, 32)),
    asid: Number(bits(w0, 63, 48)),
    num: Number(bits(w0, 16, 12)),
    scale: Number(bits(w0, 24, 20)),
    leaf: Number(bits(w1, 0, 0)),
    ttl: Number(bits(w1, 9, 8)),
    tg: Number(bits(w1, 11, 10)),
    va: `0x${(bits(w1, 63, 12) << 12n).toString(16)}`,
  };
}

interface Decoded {
  opcode: number;
  name: string;
  fields: Record<string, number | string>;
  error?: string;
}

async function decode(words: string[]): Promise<{ code: number | null; out: unknown; stderr: string }> {
  const r = await runWatched(runs, ['decode-cmd', ...words, '--json']);
  expect(r.spawned).toEqual([]);
  return { code: r.code, out: r.code === 0 ? (JSON.parse(r.stdout) as unknown) : undefined, stderr: r.stderr };
}

describe('vmmsim decode-cmd', () => {
  it('decodes 0x0000000100010012 0x0000000000001001 as TLBI_NH_VA with the reference fields', async () => {
    const w0 = 0x0000000100010012n;
    const w1 = 0x0000000000001001n;
    const r = await decode(['0x0000000100010012', '0x0000000000001001']);
    expect(r.code, r.stderr).toBe(0);
    const expected = tlbiNhVa(w0, w1);
    // The same values worked by hand: VMID 1, NUM 0b10000, LEAF 1, VA 0x1000, the rest 0.
    expect(expected).toEqual({ vmid: 1, asid: 0, num: 16, scale: 0, leaf: 1, ttl: 0, tg: 0, va: '0x1000' });
    expect(r.out).toEqual({ opcode: 0x12, name: 'TLBI_NH_VA', fields: expected });
  });

  it('places every TLBI_NH_VA field at its own bits', async () => {
    // NUM 5, SCALE 3, VMID 0xabcd, ASID 0x1234; LEAF 1, TTL 2, TG 1, VA 0xffff800012345000.
    const w0 = 0x1234abcd00305012n;
    const w1 = 0xffff800012345601n;
    const r = await decode([`0x${w0.toString(16)}`, `0x${w1.toString(16).toUpperCase()}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(tlbiNhVa(w0, w1)).toEqual({ vmid: 0xabcd, asid: 0x1234, num: 5, scale: 3, leaf: 1, ttl: 2, tg: 1, va: '0xffff800012345000' });
    expect(r.out).toEqual({ opcode: 0x12, name: 'TLBI_NH_VA', fields: tlbiNhVa(w0, w1) });
  });

  it('decodes an unknown opcode (0xff) as ILLEGAL with CERROR_ILL', async () => {
    const r = await decode(['0x00000000000000ff', '0x0000000000000000']);
    expect(r.code, r.stderr).toBe(0);
    const d = r.out as Decoded;
    expect(d.opcode).toBe(0xff);
    expect(d.name).toBe('ILLEGAL');
    expect(d.error).toBe('CERROR_ILL');
    expect(d.fields).toEqual({});
  });

  it('decodes several commands into a list, in order', async () => {
    const r = await decode(['0x0000000100010012', '0x0000000000001001', '0x00000000000000ff', '0x0']);
    expect(r.code, r.stderr).toBe(0);
    expect(Array.isArray(r.out)).toBe(true);
    expect((r.out as Decoded[]).map((d) => d.name)).toEqual(['TLBI_NH_VA', 'ILLEGAL']);
  });

  it('prints one line per command without --json', async () => {
    const r = await runWatched(runs, ['decode-cmd', '0x0000000100010012', '0x0000000000001001', '0xff', '0x0']);
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout);
    expect(out).toHaveLength(2);
    expect(out[0]).toMatch(/^0x12 TLBI_NH_VA /);
    for (const f of ['vmid=1', 'asid=0', 'num=16', 'leaf=1', 'va=0x1000']) expect(out[0]).toContain(f);
    expect(out[1]).toMatch(/^0xff ILLEGAL \(CERROR_ILL\)/);
  });

  for (const [what, words] of [
    ['an odd number of words', ['0x0000000100010012']],
    ['three words', ['0x12', '0x0', '0x46']],
    ['no words', []],
    ['a word that is not 0x-hex', ['0x12', 'zz']],
    ['a word wider than 64 bits', ['0x12', '0x10000000000000000']],
  ] as const) {
    it(`refuses ${what} with exit 2`, async () => {
      const r = await runWatched(runs, ['decode-cmd', ...words, '--json']);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      const err = lines(r.stderr);
      expect(err, r.stderr).toHaveLength(1);
      expect(err[0]).toMatch(/^vmmsim: E_USAGE: .+ \(fix: .+\)$/);
      expect(r.stderr).not.toMatch(STACK_LINE);
    });
  }
});
