import { describe, expect, it } from 'vitest';
import {
  CMD_SIZE, SyncCs, atcInv, cfgiSte, cmdSync, encodeCommand, tlbiNhAll, tlbiNhAsid, tlbiNhVa, tlbiNhVaa, tlbiS12Vmall,
  tlbiS2Ipa, type SmmuCommand,
} from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { Iotlb, type IotlbEntry } from '../../worker-pool/iotlb.js';
import { Cmdqv } from '../../worker-pool/cmdqv.js';
import { C_EVENT_SEQ, controlBytes, queueErrorBit } from '../../worker-pool/control.js';
import { ConfigInvalidations } from '../../worker-pool/config-invalidations.js';
import { consumerQueue, drain, type ConsumerEnv, type ConsumerQueue } from '../../worker-pool/engine.js';
import {
  CONFIG_EN, F_LAST_ATC_PSID, F_LAST_ATC_VSID, F_TLBI_VA, GERROR_CMDQ_ERR, R_CONFIG, R_CONS, R_GERROR, R_GERRORN, RingProducer, createRing, isHalted, slotByte,
} from '../../worker-pool/ring.js';

const PAGE = 4096;
const GUEST_VMID = 0x21;
const OTHER_VMID = 0x22;

function encode(cmds: SmmuCommand[]): Buffer {
  const b = Buffer.alloc(cmds.length * CMD_SIZE);
  cmds.forEach((c, i) => encodeCommand(c, b, i * CMD_SIZE));
  return b;
}

function entry(vmid: number, asid: number, pageNo: number): IotlbEntry {
  return { vmid, asid, stage2Only: asid < 0, page: pageNo * PAGE, pa: pageNo * PAGE, writable: true, ipa: (0x1000 + pageNo) * PAGE, leafDescAddr: 0 };
}

/** One guest queue (VINTF1, VMID 0x21, vSID 8 -> pSID 0x108) and one host queue (VINTF0), consumed in this thread. */
function rig(): {
  iotlb: Iotlb;
  ctl: Int32Array;
  guest: { q: ConsumerQueue; p: RingProducer; run: (cmds: SmmuCommand[]) => number };
  host: { q: ConsumerQueue; p: RingProducer; run: (cmds: SmmuCommand[]) => number };
} {
  const cmdqv = new Cmdqv({ vintfs: 2, vcmdqs: 4 });
  expect(cmdqv.assignVintf(1, GUEST_VMID).ok).toBe(true);
  expect(cmdqv.setSidPair(1, 3, 8, 0x108).ok).toBe(true);
  const iotlb = Iotlb.create(1024);
  const ctl = new Int32Array(new SharedArrayBuffer(controlBytes(1)));
  const vintfTable = new Int32Array(cmdqv.vintfTable);
  const env: ConsumerEnv = { iotlb, config: ConfigInvalidations.create(), ctl };
  const make = (queue: number, vintf: number): { q: ConsumerQueue; p: RingProducer; run: (cmds: SmmuCommand[]) => number } => {
    const view = createRing(4, { queue, vintf, lidx: 0 });
    view.i32[R_CONFIG] = CONFIG_EN;
    const q: ConsumerQueue = consumerQueue(view.buffer, queue, vintf, vintfTable, cmdqv.vintfBase(vintf), vintf === 0);
    const p = new RingProducer(view);
    return {
      q,
      p,
      run: (cmds) => {
        const b = encode(cmds);
        expect(p.write(b, 0, cmds.length)).toBe(cmds.length);
        return drain(q, env);
      },
    };
  };
  return { iotlb, ctl, guest: make(1, 1), host: make(0, 0) };
}

describe('guest VCMDQ (HYP_OWN=0)', () => {
  it('stamps the VINTF VMID into TLBIs: the VMID the guest wrote is ignored, another VM keeps its entries', () => {
    const { iotlb, guest } = rig();
    for (const vmid of [GUEST_VMID, OTHER_VMID]) for (let p = 0; p < 8; p++) iotlb.insert(entry(vmid, 1, p));
    // The guest names the other VM's VMID: hardware replaces it with its own.
    expect(guest.run([tlbiNhVa({ vmid: OTHER_VMID, asid: 1, va: 0n, tg: 1, num: 3 }), cmdSync()])).toBe(2);
    for (let p = 0; p < 8; p++) {
      expect(iotlb.lookup(GUEST_VMID, 1, p * PAGE) === undefined, `guest page ${p}`).toBe(p < 4);
      expect(iotlb.lookup(OTHER_VMID, 1, p * PAGE), `other VM page ${p}`).toBeDefined();
    }
    expect(guest.run([tlbiNhAsid({ vmid: OTHER_VMID, asid: 1 })])).toBe(1);
    expect(iotlb.entries().filter((e) => e.vmid === GUEST_VMID)).toHaveLength(0);
    expect(iotlb.entries().filter((e) => e.vmid === OTHER_VMID)).toHaveLength(8);
    expect(guest.q.view.f64[F_TLBI_VA]).toBe(1);
  });

  it('decodes NH_VA ranges: TG=0 is one address, else (NUM+1) << SCALE granules of TG', () => {
    const { iotlb, guest } = rig();
    const fill = (): void => {
      iotlb.invalidateAll();
      for (let p = 0; p < 200; p++) iotlb.insert(entry(GUEST_VMID, 2, p));
    };
    const left = (): number => iotlb.entries().length;
    fill();
    guest.run([tlbiNhVa({ vmid: 0, asid: 2, va: BigInt(10 * PAGE), tg: 0, num: 31, scale: 5 })]);
    expect(left()).toBe(199); // NUM/SCALE ignored without TG
    fill();
    guest.run([tlbiNhVa({ vmid: 0, asid: 2, va: BigInt(10 * PAGE), tg: 1, num: 2, scale: 1 })]);
    expect(left()).toBe(194); // (2+1) << 1 = 6 pages of 4K
    fill();
    guest.run([tlbiNhVa({ vmid: 0, asid: 2, va: BigInt(16 * PAGE), tg: 2, num: 1 })]);
    expect(left()).toBe(192); // 2 x 16K = 8 pages
    fill();
    guest.run([tlbiNhVa({ vmid: 0, asid: 2, va: 0n, tg: 3, num: 31, scale: 31 })]);
    expect(left()).toBe(0); // 2^36 64K granules: scanned, not looped
  });

  it('refuses everything outside its allow-list by halting at that command: CONS stays, ERR=ILL, GERROR toggles, vEVENT bit set', () => {
    for (const bad of [tlbiNhAll({ vmid: 0 }), cfgiSte({ sid: 8 }), tlbiS12Vmall({ vmid: 0 }), tlbiNhVaa({ vmid: 0, va: 0n }), { opcode: 0x7f, fields: {} }, cmdSync({ cs: 3 })]) {
      const { iotlb, ctl, guest } = rig();
      iotlb.insert(entry(GUEST_VMID, 1, 0));
      iotlb.insert(entry(GUEST_VMID, 1, 1));
      const seq = Atomics.load(ctl, C_EVENT_SEQ);
      const consumed = guest.run([tlbiNhVa({ vmid: 0, asid: 1, va: 0n }), bad, tlbiNhVa({ vmid: 0, asid: 1, va: BigInt(PAGE) }), cmdSync()]);
      const name = `opcode 0x${bad.opcode.toString(16)}`;
      expect(consumed, name).toBe(1);
      const cons = Atomics.load(guest.q.view.i32, R_CONS);
      expect(Q.index(cons, 4), name).toBe(1);
      expect(Q.consErr(cons), name).toBe(Q.CERROR.ILL);
      expect(Atomics.load(guest.q.view.i32, R_GERROR) & GERROR_CMDQ_ERR, name).toBe(1);
      expect(isHalted(guest.q.view), name).toBe(true);
      expect(queueErrorBit(ctl, guest.q.queue), name).toBe(true);
      expect(Atomics.load(ctl, C_EVENT_SEQ), name).toBe(seq + 1);
      expect(iotlb.lookup(GUEST_VMID, 1, 0), name).toBeUndefined(); // ran before the bad one
      expect(iotlb.lookup(GUEST_VMID, 1, PAGE), name).toBeDefined(); // behind it: not run
    }
  });

  it('stays halted until GERRORN = GERROR, then resumes at CONS (Linux: bad slot replaced by CMD_SYNC)', () => {
    const { iotlb, guest } = rig();
    iotlb.insert(entry(GUEST_VMID, 1, 1));
    guest.run([tlbiNhAll({ vmid: 0 }), tlbiNhVa({ vmid: 0, asid: 1, va: BigInt(PAGE) }), cmdSync()]);
    const v = guest.q.view;
    expect(isHalted(v)).toBe(true);
    expect(guest.run([cmdSync()])).toBe(0); // more commands queue up behind the halt
    const cons = Atomics.load(v.i32, R_CONS);
    v.u8.set(encode([cmdSync()]), slotByte(v, cons));
    Atomics.store(v.i32, R_GERRORN, Atomics.load(v.i32, R_GERROR));
    expect(guest.run([])).toBe(4);
    expect(Q.consErr(Atomics.load(v.i32, R_CONS))).toBe(0);
    expect(guest.p.consumedTotal()).toBe(guest.p.total);
    expect(iotlb.size).toBe(0);
  });

  it('rewrites the vSID of ATC_INV through SID_MATCH/SID_REPLACE and refuses an unknown vSID', () => {
    const { guest } = rig();
    expect(guest.run([atcInv({ sid: 8, size: 0, addr: 0n }), cmdSync()])).toBe(2);
    expect(guest.q.view.f64[F_LAST_ATC_VSID]).toBe(8);
    expect(guest.q.view.f64[F_LAST_ATC_PSID]).toBe(0x108);
    expect(guest.run([atcInv({ sid: 9, size: 0, addr: 0n }), cmdSync()])).toBe(0);
    expect(Q.consErr(Atomics.load(guest.q.view.i32, R_CONS))).toBe(Q.CERROR.ILL);
    // The pSID itself is not a vSID either.
    const other = rig();
    other.guest.run([atcInv({ sid: 0x108, size: 0, addr: 0n })]);
    expect(isHalted(other.guest.q.view)).toBe(true);
  });

  it('records CMD_SYNC CS=IRQ completions (MSIADDR, MSIDATA) for the VMM; CS=NONE and SEV record nothing', () => {
    const { guest } = rig();
    guest.run([cmdSync({ cs: SyncCs.IRQ, msiaddr: 0xf_1234_5670n, msidata: 0xabcdef01 }), cmdSync(), cmdSync({ cs: SyncCs.SEV })]);
    expect(guest.p.takeMsiWrites()).toEqual({ writes: [{ addr: 0xf_1234_5670, data: 0xabcdef01 }], lost: 0 });
  });
});

describe('host VCMDQ (VINTF0, HYP_OWN=1)', () => {
  it('takes every legal command with the VMID and SID the command carries', () => {
    const { iotlb, host } = rig();
    for (let p = 0; p < 4; p++) {
      iotlb.insert(entry(5, 1, p));
      iotlb.insert(entry(6, 1, p));
      iotlb.insert(entry(6, -1, p));
    }
    expect(host.run([tlbiNhVaa({ vmid: 5, va: 0n, tg: 1, num: 1 }), tlbiNhAll({ vmid: 6 }), cfgiSte({ sid: 3 }), atcInv({ sid: 0x999, size: 52, addr: 0n }), cmdSync()])).toBe(5);
    expect(iotlb.entries().map((e) => `${e.vmid}/${e.asid}/${e.page / PAGE}`).sort()).toEqual(['5/1/2', '5/1/3', '6/-1/0', '6/-1/1', '6/-1/2', '6/-1/3']);
    expect(host.run([tlbiS2Ipa({ vmid: 6, ipa: BigInt(2 * PAGE), tg: 1, num: 0 }), tlbiS12Vmall({ vmid: 5 })])).toBe(2);
    expect(iotlb.entries().map((e) => `${e.vmid}/${e.asid}/${e.page / PAGE}`).sort()).toEqual(['6/-1/0', '6/-1/1', '6/-1/3']);
    expect(host.q.view.f64[F_LAST_ATC_PSID]).toBe(0x999); // no SID rewrite on the host's queue
  });

  it('still halts on an illegal opcode', () => {
    const { host } = rig();
    expect(host.run([{ opcode: 0x18, fields: {} }])).toBe(0);
    expect(isHalted(host.q.view)).toBe(true);
    expect(host.q.view.u8[slotByte(host.q.view, Atomics.load(host.q.view.i32, R_CONS))]).toBe(0x18);
  });
});
