import { describe, expect, it } from 'vitest';
import {
  CMD_SIZE, Opcode, atcInv, cfgiAll, cfgiCd, cfgiSteRange, cmdSync, encodeCommand, priResp, tlbiNhVa, tlbiNhVaa, tlbiNsnhAll, tlbiS2Ipa,
  type SmmuCommand,
} from '../../services/formats/smmu/commands.js';
import { HOST_OWNER, executeCommand, type QueueOwner, type TlbInvalidator } from '../../services/machine/smmu-executor.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { ALL_SIDS, CommandScope, OPCODE_SEMANTICS, Scope, readScope } from '../../services/formats/smmu/semantics.js';

function scopeOf(cmd: SmmuCommand): CommandScope {
  const b = Buffer.alloc(CMD_SIZE);
  encodeCommand(cmd, b, 0);
  const s = new CommandScope();
  readScope(b, 0, s);
  return s;
}

describe('command scopes decoded from the raw words', () => {
  it('CFGI_STE_RANGE covers 2^(RANGE+1) StreamIDs from the SID aligned down; CFGI_ALL every StreamID', () => {
    expect(scopeOf(cfgiSteRange({ sid: 0x10a, range: 2 }))).toMatchObject({ sid: 0x108, sids: 8, vmid: -1, asid: -1 });
    expect(scopeOf(cfgiSteRange({ sid: 0xffff_ffff, range: 30 }))).toMatchObject({ sid: 0x8000_0000, sids: 2 ** 31 });
    expect(scopeOf(cfgiAll())).toMatchObject({ sid: 0, sids: ALL_SIDS });
  });

  it('TLBI ranges: TG=0 is one page, else (NUM+1) << SCALE granules; IPA bits above 51 are not part of it', () => {
    expect(scopeOf(tlbiNhVa({ vmid: 1, asid: 2, va: 0x5000n, num: 31, scale: 31 }))).toMatchObject({ vmid: 1, asid: 2, firstPage: 5, pages: 1 });
    expect(scopeOf(tlbiNhVa({ vmid: 1, asid: 2, va: 0xffff_ffff_ffff_f000n, tg: 3, num: 31, scale: 31 }))).toMatchObject({ firstPage: 2 ** 52 - 1, pages: 32 * 2 ** 31 * 16 });
    expect(scopeOf(tlbiNhVaa({ vmid: 1, va: 0x10000n, tg: 2, num: 1 }))).toMatchObject({ asid: -1, firstPage: 0x10, pages: 8 });
    const b = Buffer.alloc(CMD_SIZE);
    encodeCommand(tlbiS2Ipa({ vmid: 3, ipa: 0xf_ffff_f000n, tg: 1 }), b, 0);
    b.writeUInt32LE((b.readUInt32LE(12) | 0xfff0_0000) >>> 0, 12); // bits [63:52] of w1: not the IPA's
    const s = new CommandScope();
    readScope(b, 0, s);
    expect(s).toMatchObject({ vmid: 3, firstPage: 0xff_ffff, pages: 1 });
  });

  it('ATC_INV: 2^SIZE pages from ADDR aligned down, SIZE 52 everything; the SSID only with SSV', () => {
    expect(scopeOf(atcInv({ sid: 7, size: 2, addr: 0x7000n }))).toMatchObject({ sid: 7, sids: 1, ssid: -1, firstPage: 4, pages: 4 });
    expect(scopeOf(atcInv({ sid: 7, ssid: 9, size: 52, addr: 0x7000n }))).toMatchObject({ ssid: 9, firstPage: 0, pages: 2 ** 52 });
    expect(scopeOf(priResp({ sid: 7, ssid: 9, ssv: 0, grpid: 0, resp: 0 })).ssid).toBe(-1);
    expect(scopeOf(cfgiCd({ sid: 7, ssid: 9 })).ssid).toBe(9);
  });

  it('EL2 TLBIs carry an ASID and no VMID; TLBI_NSNH_ALL and CMD_SYNC name no ID', () => {
    expect(scopeOf({ opcode: Opcode.TLBI_EL2_ASID, fields: { asid: 4 } })).toMatchObject({ flags: Scope.EL2 | Scope.ASID, asid: 4, vmid: -1 });
    expect(scopeOf(tlbiNsnhAll())).toMatchObject({ flags: Scope.ALL, sids: 0, vmid: -1 });
    expect(scopeOf(cmdSync()).flags).toBe(0);
  });

  it('has a row for every opcode, and the same decoder reused leaves nothing of the previous command', () => {
    expect(Object.keys(OPCODE_SEMANTICS).sort()).toEqual(Object.keys(Opcode).sort());
    const s = new CommandScope();
    const b = Buffer.alloc(CMD_SIZE);
    encodeCommand(tlbiNhVa({ vmid: 1, asid: 2, va: 0x5000n }), b, 0);
    readScope(b, 0, s);
    encodeCommand(cfgiAll(), b, 0);
    readScope(b, 0, s);
    expect(s).toMatchObject({ opcode: Opcode.CFGI_ALL, vmid: -1, asid: -1, firstPage: 0, pages: 0, ssid: -1 });
  });
});

describe('the command executor', () => {
  const calls: string[] = [];
  const tlb: TlbInvalidator = {
    invalidateVaPages: (vmid, asid, first, pages) => (calls.push(`va ${vmid} ${asid} ${first} ${pages}`), 1),
    invalidateAsid: (vmid, asid) => (calls.push(`asid ${vmid} ${asid}`), 1),
    invalidateStage1: (vmid) => (calls.push(`stage1 ${vmid}`), 1),
    invalidateVmid: (vmid) => (calls.push(`vmid ${vmid}`), 1),
    invalidateIpaPages: (vmid, first, pages) => (calls.push(`ipa ${vmid} ${first} ${pages}`), 1),
    invalidateAll: () => (calls.push('all'), 1),
  };
  const config = { invalidateConfig: (first: number, count: number) => void calls.push(`cfg ${first} ${count}`) };
  const guest: QueueOwner = { guest: true, vmid: 0x21, replaceSid: (vsid) => (vsid === 8 ? 0x108 : -1) };
  const run = (cmd: SmmuCommand | Buffer, owner: QueueOwner = HOST_OWNER): number => {
    const b = Buffer.alloc(CMD_SIZE);
    if (Buffer.isBuffer(cmd)) cmd.copy(b);
    else encodeCommand(cmd, b, 0);
    calls.length = 0;
    return executeCommand(b.readInt32LE(0), b.readInt32LE(4), b.readInt32LE(8), b.readInt32LE(12), owner, tlb, config, new CommandScope());
  };

  it('gives CERROR_ILL for an illegal opcode and CMD_SYNC CS=3, touching nothing', () => {
    expect(run(Buffer.from([0x7f]))).toBe(-Q.CERROR.ILL);
    expect(run(cmdSync({ cs: 3 }))).toBe(-Q.CERROR.ILL);
    expect(run(cmdSync())).toBe(0);
    expect(calls).toEqual([]);
  });

  it('a guest queue: refuses what it may not run, stamps its VMID, replaces its vSIDs, refuses an unknown one', () => {
    expect(run(tlbiNhVaa({ vmid: 1, va: 0n }), guest)).toBe(-Q.CERROR.ILL);
    expect(run(cfgiAll(), guest)).toBe(-Q.CERROR.ILL);
    expect(run(tlbiNhVa({ vmid: 1, asid: 2, va: 0x3000n }), guest)).toBe(1);
    expect(calls).toEqual(['va 33 2 3 1']);
    const scope = new CommandScope();
    const b = Buffer.alloc(CMD_SIZE);
    encodeCommand(atcInv({ sid: 8, size: 0, addr: 0n }), b, 0);
    expect(executeCommand(b.readInt32LE(0), b.readInt32LE(4), b.readInt32LE(8), b.readInt32LE(12), guest, tlb, config, scope)).toBe(0);
    expect(scope.sid).toBe(0x108);
    expect(run(atcInv({ sid: 9, size: 0, addr: 0n }), guest)).toBe(-Q.CERROR.ILL);
  });

  it('a host queue: CFGIs reach the configuration cache by StreamID range', () => {
    run(cfgiSteRange({ sid: 0x10a, range: 2 }));
    expect(calls).toEqual([`cfg ${0x108} 8`]);
    run(cfgiAll());
    expect(calls).toEqual([`cfg 0 ${ALL_SIDS}`]);
  });
});
