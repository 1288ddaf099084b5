import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  CMD_SIZE,
  Opcode,
  atcInv,
  cfgiAll,
  cfgiCd,
  cfgiCdAll,
  cfgiSte,
  cmdSync,
  decodeCommand,
  encodeCommand,
  formatCommand,
  isLegalOpcode,
  opcodeFields,
  opcodeName,
  parseHexWord,
  prefetchConfig,
  priResp,
  readAsid,
  readOpcode,
  readSid,
  readSsid,
  readVmid,
  resume,
  tlbiNhAll,
  tlbiNhAsid,
  tlbiNhVa,
  tlbiNhVaRange,
  tlbiNhVaa,
  tlbiNsnhAll,
  tlbiRangePages,
  tlbiS12Vmall,
  tlbiS2Ipa,
  tlbiS2IpaRange,
  writeSid,
  writeVmid,
  type CommandFields,
  type SmmuCommand,
} from '../../services/formats/smmu/commands.js';

// Independent of the implementation's table: [field, width in bits] for numbers,
// [field, hi, lo] for addresses (bits of w1), written from smmuv3.md (PRI_RESP/RESUME from Linux).
type NumSpec = readonly [name: keyof CommandFields, width: number];
type AddrSpec = readonly [name: 'va' | 'ipa' | 'addr' | 'msiaddr', hi: number, lo: number];
interface OpSpec {
  nums: readonly NumSpec[];
  addrs: readonly AddrSpec[];
}

const TLBI_RANGE: readonly NumSpec[] = [['num', 5], ['scale', 5], ['leaf', 1], ['ttl', 2], ['tg', 2]];

const SPEC: Record<keyof typeof Opcode, OpSpec> = {
  PREFETCH_CONFIG: { nums: [['sid', 32]], addrs: [] },
  PREFETCH_ADDR: { nums: [['sid', 32], ['ssid', 20], ['ssv', 1], ['size', 5]], addrs: [['addr', 63, 12]] },
  CFGI_STE: { nums: [['sid', 32], ['leaf', 1]], addrs: [] },
  CFGI_ALL: { nums: [['sid', 32], ['range', 5]], addrs: [] },
  CFGI_CD: { nums: [['sid', 32], ['ssid', 20], ['leaf', 1]], addrs: [] },
  CFGI_CD_ALL: { nums: [['sid', 32]], addrs: [] },
  TLBI_NH_ALL: { nums: [['vmid', 16]], addrs: [] },
  TLBI_NH_ASID: { nums: [['vmid', 16], ['asid', 16]], addrs: [] },
  TLBI_NH_VA: { nums: [['vmid', 16], ['asid', 16], ...TLBI_RANGE], addrs: [['va', 63, 12]] },
  TLBI_NH_VAA: { nums: [['vmid', 16], ...TLBI_RANGE], addrs: [['va', 63, 12]] },
  TLBI_EL2_ALL: { nums: [], addrs: [] },
  TLBI_EL2_ASID: { nums: [['asid', 16]], addrs: [] },
  TLBI_EL2_VA: { nums: [['asid', 16], ...TLBI_RANGE], addrs: [['va', 63, 12]] },
  TLBI_EL2_VAA: { nums: [...TLBI_RANGE], addrs: [['va', 63, 12]] },
  TLBI_S12_VMALL: { nums: [['vmid', 16]], addrs: [] },
  TLBI_S2_IPA: { nums: [['vmid', 16], ...TLBI_RANGE], addrs: [['ipa', 51, 12]] },
  TLBI_NSNH_ALL: { nums: [], addrs: [] },
  ATC_INV: { nums: [['sid', 32], ['ssid', 20], ['ssv', 1], ['global', 1], ['size', 6]], addrs: [['addr', 63, 12]] },
  PRI_RESP: { nums: [['sid', 32], ['ssid', 20], ['ssv', 1], ['grpid', 9], ['resp', 2]], addrs: [] },
  RESUME: { nums: [['sid', 32], ['resp', 2], ['stag', 16]], addrs: [] },
  STALL_TERM: { nums: [['sid', 32]], addrs: [] },
  CMD_SYNC: {
    nums: [['cs', 2], ['msh', 2], ['msiattr', 4], ['msidata', 32]],
    addrs: [['msiaddr', 51, 2]],
  },
};

const OPS = Object.keys(Opcode) as (keyof typeof Opcode)[];

function addrMask(hi: number, lo: number): bigint {
  return ((1n << BigInt(hi + 1)) - 1n) & ~((1n << BigInt(lo)) - 1n);
}

function fieldsWith(spec: OpSpec, num: (width: number) => number, addr: (hi: number, lo: number) => bigint): CommandFields {
  const f: Record<string, number | bigint> = {};
  for (const [name, width] of spec.nums) f[name] = num(width);
  for (const [name, hi, lo] of spec.addrs) f[name] = addr(hi, lo);
  return f as CommandFields;
}

function roundTrip(cmd: SmmuCommand): ReturnType<typeof decodeCommand> {
  const buf = Buffer.alloc(CMD_SIZE);
  encodeCommand(cmd, buf);
  return decodeCommand(buf);
}

function words(cmd: SmmuCommand): [bigint, bigint] {
  const buf = Buffer.alloc(CMD_SIZE);
  encodeCommand(cmd, buf);
  return [buf.readBigUInt64LE(0), buf.readBigUInt64LE(8)];
}

function bufOf(w0: bigint, w1: bigint): Buffer {
  const buf = Buffer.alloc(CMD_SIZE);
  buf.writeBigUInt64LE(w0, 0);
  buf.writeBigUInt64LE(w1, 8);
  return buf;
}

describe('opcodes', () => {
  it('names every opcode in the table and nothing else', () => {
    const legal = new Set<number>(Object.values(Opcode));
    for (let op = 0; op < 256; op++) {
      const name = opcodeName(op);
      if (legal.has(op)) {
        expect(name).not.toBe('ILLEGAL');
        expect(Opcode[name as keyof typeof Opcode]).toBe(op);
        expect(isLegalOpcode(op)).toBe(true);
      } else {
        expect(name).toBe('ILLEGAL');
        expect(isLegalOpcode(op)).toBe(false);
      }
    }
  });

  it('keeps the EL3 opcodes illegal and rejects non-byte values', () => {
    expect(opcodeName(0x18)).toBe('ILLEGAL');
    expect(opcodeName(0x1a)).toBe('ILLEGAL');
    expect(opcodeName(0x146)).toBe('ILLEGAL');
    expect(opcodeName(-1)).toBe('ILLEGAL');
    expect(opcodeName(1.5)).toBe('ILLEGAL');
  });

  it('lists exactly the fields smmuv3.md gives each opcode', () => {
    for (const name of OPS) {
      const expected = [...SPEC[name].nums.map((n) => n[0]), ...SPEC[name].addrs.map((a) => a[0])].sort();
      expect(opcodeFields(Opcode[name]).map((f) => f.name).sort(), name).toEqual(expected);
    }
    expect(opcodeFields(0x18)).toEqual([]);
  });
});

describe('encode/decode round trip', () => {
  for (const name of OPS) {
    const spec = SPEC[name];
    const op = Opcode[name];

    it(`${name}: all fields zero, all fields at maximum`, () => {
      for (const fields of [
        fieldsWith(spec, () => 0, () => 0n),
        fieldsWith(spec, (w) => 2 ** w - 1, addrMask),
      ]) {
        const d = roundTrip({ opcode: op, fields });
        expect(d.opcode).toBe(op);
        expect(d.name).toBe(name);
        expect(d.fields).toEqual(fields);
        // CMD_SYNC at maximum has CS=3, which is the one illegal value.
        if (name === 'CMD_SYNC' && fields.cs === 3) expect(d.error).toBe('CERROR_ILL');
        else expect(d.error).toBeUndefined();
      }
    });

    it(`${name}: random values`, () => {
      const arbs: Record<string, fc.Arbitrary<number | bigint>> = {};
      for (const [n, w] of spec.nums) arbs[n] = fc.integer({ min: 0, max: 2 ** w - 1 });
      for (const [n, hi, lo] of spec.addrs) {
        arbs[n] = fc.bigInt({ min: 0n, max: (1n << BigInt(hi - lo + 1)) - 1n }).map((v) => v << BigInt(lo));
      }
      fc.assert(
        fc.property(fc.record(arbs), (fields) => {
          const d = roundTrip({ opcode: op, fields: fields as CommandFields });
          expect(d.name).toBe(name);
          expect(d.fields).toEqual(fields);
          // Decoding bytes we encoded, then encoding again, gives the same bytes.
          const a = Buffer.alloc(CMD_SIZE);
          const b = Buffer.alloc(CMD_SIZE);
          encodeCommand({ opcode: op, fields: fields as CommandFields }, a);
          encodeCommand({ opcode: d.opcode, fields: d.fields }, b);
          expect(b.equals(a)).toBe(true);
        }),
        { numRuns: 200 },
      );
    });
  }

  it('encodes a missing field as 0', () => {
    const d = roundTrip({ opcode: Opcode.TLBI_NH_VA, fields: { vmid: 5 } });
    expect(d.fields).toEqual({ vmid: 5, asid: 0, num: 0, scale: 0, leaf: 0, ttl: 0, tg: 0, va: 0n });
  });

  it('writes at an offset and leaves neighbouring slots alone', () => {
    const buf = Buffer.alloc(CMD_SIZE * 3, 0xaa);
    encodeCommand(tlbiNhAll({ vmid: 7 }), buf, CMD_SIZE);
    expect(buf.subarray(0, CMD_SIZE).every((b) => b === 0xaa)).toBe(true);
    expect(buf.subarray(2 * CMD_SIZE).every((b) => b === 0xaa)).toBe(true);
    expect(decodeCommand(buf, CMD_SIZE).fields).toEqual({ vmid: 7 });
  });
});

describe('hand-computed words (bit positions from smmuv3.md)', () => {
  it('TLBI_NH_VA', () => {
    // w0: op 0x12 | NUM 3<<12 | SCALE 2<<20 | VMID 0x1234<<32 | ASID 0xabcd<<48
    // w1: LEAF 1 | TTL 3<<8 | TG 1<<10 | VA 0x7fffdeadb000
    const cmd = tlbiNhVa({ vmid: 0x1234, asid: 0xabcd, num: 3, scale: 2, leaf: 1, ttl: 3, tg: 1, va: 0x7fffdeadb000n });
    expect(words(cmd)).toEqual([0xabcd123400203012n, 0x00007fffdeadb701n]);
    const d = decodeCommand(bufOf(0xabcd123400203012n, 0x00007fffdeadb701n));
    expect(d.fields).toEqual(cmd.fields);
  });

  it('CFGI_CD', () => {
    // w0: op 0x05 | SSID 0x12345<<12 | SID 0x00c0ffee<<32; w1: LEAF 1
    const cmd = cfgiCd({ sid: 0x00c0ffee, ssid: 0x12345, leaf: 1 });
    expect(words(cmd)).toEqual([0x00c0ffee12345005n, 0x1n]);
    expect(decodeCommand(bufOf(0x00c0ffee12345005n, 1n)).fields).toEqual({ sid: 0xc0ffee, ssid: 0x12345, leaf: 1 });
  });

  it('ATC_INV', () => {
    // w0: op 0x40 | GLOBAL 1<<9 | SSV 1<<11 | SSID 7<<12 | SID 0x42<<32; w1: SIZE 52 | ADDR 0xfffffffffffff000
    const cmd = atcInv({ sid: 0x42, ssid: 7, global: 1, size: 52, addr: 0xfffffffffffff000n });
    expect(cmd.fields.ssv).toBe(1);
    expect(words(cmd)).toEqual([0x0000004200007a40n, 0xfffffffffffff034n]);
  });

  it('CMD_SYNC', () => {
    // w0: op 0x46 | CS 1<<12 | MSH 3<<22 | MSIATTR 0xf<<24 | MSIDATA 0xdeadbeef<<32; w1: MSIADDR
    const cmd = cmdSync({ cs: 1, msh: 3, msiattr: 0xf, msidata: 0xdeadbeef, msiaddr: 0x000ffffffffffffcn });
    expect(words(cmd)).toEqual([0xdeadbeef0fc01046n, 0x000ffffffffffffcn]);
    expect(words(cmdSync())).toEqual([0x46n, 0n]);
  });

  it('TLBI_S2_IPA masks the IPA to [51:12]', () => {
    const cmd = tlbiS2Ipa({ vmid: 1, ipa: 0x000ffffffffff000n, tg: 3 });
    expect(words(cmd)).toEqual([0x000000010000002an, 0x000ffffffffffc00n]);
    // Bits 63:52 of w1 are not part of the IPA and are ignored on decode.
    expect(decodeCommand(bufOf(0x2an, 0xfff0000000001000n)).fields.ipa).toBe(0x1000n);
  });

  it('PRI_RESP and RESUME (positions from Linux arm-smmu-v3.h)', () => {
    expect(words(priResp({ sid: 2, ssid: 3, grpid: 0x1ff, resp: 2 }))).toEqual([0x0000000200003841n, 0x21ffn]);
    expect(words(resume({ sid: 9, stag: 0xbeef, resp: 1 }))).toEqual([0x0000000900001044n, 0xbeefn]);
  });
});

describe('encode rejects what does not fit', () => {
  const cases: [string, SmmuCommand, RegExp][] = [
    ['vmid', { opcode: Opcode.TLBI_NH_ALL, fields: { vmid: 0x10000 } }, /vmid.*limit 65535/],
    ['asid', { opcode: Opcode.TLBI_NH_ASID, fields: { asid: -1 } }, /asid.*limit 65535/],
    ['num', { opcode: Opcode.TLBI_NH_VA, fields: { num: 32 } }, /num.*limit 31/],
    ['tg', { opcode: Opcode.TLBI_NH_VA, fields: { tg: 4 } }, /tg.*limit 3/],
    ['ssid', { opcode: Opcode.CFGI_CD, fields: { ssid: 0x100000 } }, /ssid.*limit 1048575/],
    ['sid', { opcode: Opcode.CFGI_STE, fields: { sid: 2 ** 32 } }, /sid.*limit 4294967295/],
    ['fraction', { opcode: Opcode.CFGI_STE, fields: { sid: 1.5 } }, /sid/],
    ['size', { opcode: Opcode.ATC_INV, fields: { size: 64 } }, /size.*limit 63/],
    ['cs', { opcode: Opcode.CMD_SYNC, fields: { cs: 4 } }, /cs.*limit 3/],
    ['msidata', { opcode: Opcode.CMD_SYNC, fields: { msidata: 2 ** 32 } }, /msidata/],
    ['unaligned va', { opcode: Opcode.TLBI_NH_VA, fields: { va: 0x1001n } }, /va.*limit/],
    ['va above 64 bits', { opcode: Opcode.TLBI_NH_VA, fields: { va: 1n << 64n } }, /va.*limit/],
    ['ipa above 52 bits', { opcode: Opcode.TLBI_S2_IPA, fields: { ipa: 1n << 52n } }, /ipa.*limit/],
    ['negative addr', { opcode: Opcode.ATC_INV, fields: { addr: -4096n } }, /addr.*limit/],
    ['unaligned msiaddr', { opcode: Opcode.CMD_SYNC, fields: { msiaddr: 0x1002n } }, /msiaddr.*limit/],
    ['opcode', { opcode: 0x100, fields: {} }, /opcode.*limit 0xff/],
  ];
  for (const [what, cmd, msg] of cases) {
    it(what, () => {
      const buf = Buffer.alloc(CMD_SIZE, 0x5a);
      expect(() => encodeCommand(cmd, buf)).toThrow(RangeError);
      expect(() => encodeCommand(cmd, buf)).toThrow(msg);
      // Nothing is written on failure.
      expect(buf.every((b) => b === 0x5a)).toBe(true);
    });
  }

  it('rejects a field the opcode does not use', () => {
    expect(() => encodeCommand({ opcode: Opcode.TLBI_NH_VAA, fields: { asid: 1 } }, Buffer.alloc(16))).toThrow(
      /asid is not used by TLBI_NH_VAA/,
    );
    expect(() => encodeCommand({ opcode: 0x18, fields: { sid: 1 } }, Buffer.alloc(16))).toThrow(/illegal opcode 0x18/);
    // undefined counts as absent
    expect(() => encodeCommand({ opcode: Opcode.TLBI_NH_VAA, fields: { asid: undefined } }, Buffer.alloc(16))).not.toThrow();
  });

  it('rejects a slot that does not fit the buffer', () => {
    expect(() => encodeCommand(cmdSync(), Buffer.alloc(31), 16)).toThrow(RangeError);
    expect(() => decodeCommand(Buffer.alloc(15))).toThrow(RangeError);
  });

  it('still encodes illegal opcodes and CS=3 for fault injection', () => {
    expect(words({ opcode: 0x18, fields: {} })).toEqual([0x18n, 0n]);
    expect(roundTrip({ opcode: Opcode.CMD_SYNC, fields: { cs: 3 } }).error).toBe('CERROR_ILL');
  });
});

describe('decode never throws', () => {
  it('all-zero and all-ones words', () => {
    const zero = decodeCommand(Buffer.alloc(CMD_SIZE));
    expect(zero).toEqual({ opcode: 0, name: 'ILLEGAL', fields: {}, error: 'CERROR_ILL' });
    const ones = decodeCommand(Buffer.alloc(CMD_SIZE, 0xff));
    expect(ones).toEqual({ opcode: 0xff, name: 'ILLEGAL', fields: {}, error: 'CERROR_ILL' });
  });

  it('every legal opcode with all other bits set decodes to field maxima', () => {
    for (const name of OPS) {
      const op = Opcode[name];
      const d = decodeCommand(bufOf(0xffffffffffffff00n | BigInt(op), 0xffffffffffffffffn));
      expect(d.name).toBe(name);
      expect(d.fields).toEqual(fieldsWith(SPEC[name], (w) => 2 ** w - 1, addrMask));
    }
  });

  it('random garbage', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: CMD_SIZE, maxLength: CMD_SIZE }), (bytes) => {
        const buf = Buffer.from(bytes);
        const d = decodeCommand(buf);
        expect(d.opcode).toBe(bytes[0]);
        expect(d.name).toBe(opcodeName(d.opcode));
        if (d.name === 'ILLEGAL') {
          expect(d.error).toBe('CERROR_ILL');
          expect(d.fields).toEqual({});
        } else {
          // What decode returns can always be encoded again, and decodes to the same thing.
          expect(roundTrip({ opcode: d.opcode, fields: d.fields })).toEqual(d);
        }
        expect(() => JSON.stringify(formatCommand(d))).not.toThrow();
      }),
      { numRuns: 2000 },
    );
  });

  it('unknown opcode -> ILLEGAL / CERROR_ILL', () => {
    for (const op of [0x00, 0x07, 0x18, 0x1a, 0x29, 0x47, 0x80, 0xff]) {
      const d = decodeCommand(bufOf(0xffffffff00000000n | BigInt(op), 0x1234n));
      expect(d.name).toBe('ILLEGAL');
      expect(d.error).toBe('CERROR_ILL');
      expect(d.opcode).toBe(op);
    }
  });

  it('CMD_SYNC with CS=3 -> CERROR_ILL, name stays CMD_SYNC; CS 0..2 legal', () => {
    const d = decodeCommand(bufOf(0x3046n, 0n));
    expect(d.name).toBe('CMD_SYNC');
    expect(d.error).toBe('CERROR_ILL');
    expect(d.fields.cs).toBe(3);
    for (const cs of [0, 1, 2]) expect(decodeCommand(bufOf(0x46n | (BigInt(cs) << 12n), 0n)).error).toBeUndefined();
  });
});

describe('in-place field access', () => {
  it('reads opcode, VMID, ASID, SID, SSID without decoding', () => {
    const buf = Buffer.alloc(CMD_SIZE * 2);
    encodeCommand(tlbiNhVa({ vmid: 0xbeef, asid: 0x1234, va: 0x1000n }), buf, 0);
    encodeCommand(cfgiCd({ sid: 0xfedcba98, ssid: 0xabcde }), buf, CMD_SIZE);
    expect(readOpcode(buf, 0)).toBe(Opcode.TLBI_NH_VA);
    expect(readVmid(buf, 0)).toBe(0xbeef);
    expect(readAsid(buf, 0)).toBe(0x1234);
    expect(readOpcode(buf, CMD_SIZE)).toBe(Opcode.CFGI_CD);
    expect(readSid(buf, CMD_SIZE)).toBe(0xfedcba98);
    expect(readSsid(buf, CMD_SIZE)).toBe(0xabcde);
  });

  it('stamps a VMID into TLBI commands and changes nothing else', () => {
    const cmds = [
      tlbiNhVa({ vmid: 0, asid: 0xffff, va: 0xfffffffffffff000n, num: 31, scale: 31, tg: 3, ttl: 3, leaf: 1 }),
      tlbiNhAsid({ vmid: 0, asid: 0xffff }),
      tlbiNhVaa({ vmid: 0, va: 0x4000n }),
      tlbiNhAll({ vmid: 0 }),
      tlbiS12Vmall({ vmid: 0 }),
      tlbiS2Ipa({ vmid: 0, ipa: 0x8000n }),
    ];
    const buf = Buffer.alloc(CMD_SIZE * cmds.length);
    cmds.forEach((c, i) => encodeCommand(c, buf, i * CMD_SIZE));
    cmds.forEach((_, i) => writeVmid(buf, i * CMD_SIZE, 0x9abc));
    cmds.forEach((c, i) => {
      const d = decodeCommand(buf, i * CMD_SIZE);
      expect(d.fields).toEqual({ ...c.fields, vmid: 0x9abc });
    });
    expect(() => writeVmid(buf, 0, 0x10000)).toThrow(/vmid.*limit 65535/);
  });

  it('replaces vSID with pSID in ATC_INV and CFGI_CD and changes nothing else', () => {
    const cmds = [
      atcInv({ sid: 0x10, ssid: 0xfffff, global: 1, size: 52, addr: 0xfffffffffffff000n }),
      cfgiCd({ sid: 0x10, ssid: 0xfffff, leaf: 1 }),
    ];
    const buf = Buffer.alloc(CMD_SIZE * 2);
    cmds.forEach((c, i) => encodeCommand(c, buf, i * CMD_SIZE));
    cmds.forEach((_, i) => writeSid(buf, i * CMD_SIZE, 0xffffffff));
    cmds.forEach((c, i) => {
      expect(decodeCommand(buf, i * CMD_SIZE).fields).toEqual({ ...c.fields, sid: 0xffffffff });
      expect(readSid(buf, i * CMD_SIZE)).toBe(0xffffffff);
    });
    expect(() => writeSid(buf, 0, -1)).toThrow(RangeError);
  });
});

describe('tlbiRangePages', () => {
  it('TG=0 is a single address', () => {
    expect(tlbiRangePages({ tg: 0, num: 31, scale: 31 })).toEqual({ granule: 0, pages: 1 });
    expect(tlbiRangePages({})).toEqual({ granule: 0, pages: 1 });
  });

  it('(NUM+1) << SCALE pages of the TG granule', () => {
    expect(tlbiRangePages({ tg: 1, num: 0, scale: 0 })).toEqual({ granule: 4096, pages: 1 });
    expect(tlbiRangePages({ tg: 1, num: 3, scale: 2 })).toEqual({ granule: 4096, pages: 16 });
    expect(tlbiRangePages({ tg: 2, num: 1, scale: 0 })).toEqual({ granule: 16384, pages: 2 });
    expect(tlbiRangePages({ tg: 3, num: 7, scale: 1 })).toEqual({ granule: 65536, pages: 16 });
    // Largest range: 32 << 31 = 2^36 pages; must not overflow 32-bit shifts.
    expect(tlbiRangePages({ tg: 1, num: 31, scale: 31 })).toEqual({ granule: 4096, pages: 2 ** 36 });
  });
});

describe('formatCommand', () => {
  it('prints addresses as lower-case hex and only the fields the opcode uses', () => {
    const buf = Buffer.alloc(CMD_SIZE);
    encodeCommand(tlbiNhVa({ vmid: 1, asid: 2, va: 0xabcdef000n, tg: 1 }), buf);
    expect(formatCommand(decodeCommand(buf))).toEqual({
      opcode: 0x12,
      name: 'TLBI_NH_VA',
      fields: { vmid: 1, asid: 2, num: 0, scale: 0, leaf: 0, ttl: 0, tg: 1, va: '0xabcdef000' },
    });
    encodeCommand(cmdSync({ cs: 1, msiaddr: 0xff00n }), buf);
    expect(formatCommand(decodeCommand(buf)).fields).toEqual({ cs: 1, msh: 0, msiattr: 0, msidata: 0, msiaddr: '0xff00' });
  });

  it('shows the error of an illegal command', () => {
    expect(formatCommand(decodeCommand(bufOf(0x3046n, 0n))).error).toBe('CERROR_ILL');
    expect(formatCommand(decodeCommand(Buffer.alloc(16)))).toEqual({
      opcode: 0,
      name: 'ILLEGAL',
      fields: {},
      error: 'CERROR_ILL',
    });
  });
});

describe('builders', () => {
  it('produce the documented opcodes and defaults', () => {
    expect(prefetchConfig({ sid: 1 })).toEqual({ opcode: 0x01, fields: { sid: 1 } });
    expect(cfgiSte({ sid: 1, leaf: 1 })).toEqual({ opcode: 0x03, fields: { sid: 1, leaf: 1 } });
    expect(cfgiAll()).toEqual({ opcode: 0x04, fields: { range: 31 } });
    expect(cfgiCdAll({ sid: 4 })).toEqual({ opcode: 0x06, fields: { sid: 4 } });
    expect(tlbiNsnhAll()).toEqual({ opcode: 0x30, fields: {} });
    expect(atcInv({ sid: 1, size: 0, addr: 0n }).fields.ssv).toBe(0);
    expect(priResp({ sid: 1, grpid: 0, resp: 0 }).fields.ssv).toBe(0);
    expect(cmdSync().fields).toEqual({ cs: 0, msh: 0, msiattr: 0, msidata: 0, msiaddr: 0n });
  });
});

describe('parseHexWord', () => {
  it('accepts 0x hex up to 64 bits', () => {
    expect(parseHexWord('0x0')).toBe(0n);
    expect(parseHexWord('0xDEADbeef')).toBe(0xdeadbeefn);
    expect(parseHexWord('0xffffffffffffffff')).toBe(0xffffffffffffffffn);
    expect(parseHexWord(' 0x00000000000000000001 ')).toBe(1n);
  });

  it('rejects everything else with a clear message', () => {
    expect(() => parseHexWord('0x10000000000000000')).toThrow(/does not fit 64 bits/);
    for (const bad of ['', '0x', '12', 'deadbeef', '0xg', '-0x1', '0x1 2', '0x1n']) {
      expect(() => parseHexWord(bad)).toThrow(/not a 0x-prefixed hex number/);
    }
  });
});

describe('range TLBIs as __arm_smmu_tlb_inv_range builds them', () => {
  it('a leaf 4 KiB page carries TTL 3, a 2 MiB block TTL 2, a 1 GiB block TTL 1 (TG 1, 4 KiB leaf pages)', () => {
    expect(tlbiNhVaRange(1, 0x5000, 1)).toEqual([tlbiNhVa({ vmid: 0, asid: 1, va: 0x5000n, tg: 1, ttl: 3, leaf: 1, num: 0, scale: 0 })]);
    expect(tlbiS2IpaRange(2, 0x20_0000, 512, { granuleLog2: 21 })[0]?.fields).toMatchObject({ tg: 1, ttl: 2, leaf: 1, num: 0, scale: 9 });
    expect(tlbiS2IpaRange(2, 0x4000_0000, 2 ** 18, { granuleLog2: 30 })[0]?.fields).toMatchObject({ ttl: 1, num: 0, scale: 18 });
  });

  it('a non-leaf invalidation (SVA) has TTL 0 and never both NUM and SCALE 0', () => {
    expect(tlbiNhVaRange(1, 0x5000, 1, 0, { leaf: false }).map((c) => c.fields)).toEqual([{ vmid: 0, asid: 1, tg: 1, ttl: 0, leaf: 0, num: 0, scale: 1, va: 0x5000n }]);
    expect(tlbiNhVaRange(1, 0x5000, 2, 0, { leaf: false }).map((c) => c.fields)).toEqual([{ vmid: 0, asid: 1, tg: 1, ttl: 0, leaf: 0, num: 0, scale: 1, va: 0x5000n }]);
  });

  it('without RIL: one command per granule, the address alone (TG, TTL, NUM, SCALE 0)', () => {
    const cmds = tlbiNhVaRange(1, 0x5000, 3, 0, { ril: false });
    expect(cmds.map((c) => c.fields)).toEqual([0x5000n, 0x6000n, 0x7000n].map((va) => ({ vmid: 0, asid: 1, tg: 0, ttl: 0, leaf: 1, num: 0, scale: 0, va })));
    expect(tlbiS2IpaRange(2, 0x20_0000, 1024, { ril: false, granuleLog2: 21 })).toHaveLength(2);
  });
});
