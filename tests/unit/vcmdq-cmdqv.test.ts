import { describe, expect, it } from 'vitest';
import { Cmdqv, MAX_VCMDQS } from '../../worker-pool/cmdqv.js';
import { VcmdqError, type Result } from '../../worker-pool/errors.js';
import { V_CONFIG, V_PAIR_BASE, V_VMID, VINTF_EN, VINTF_HYP_OWN, replaceSid } from '../../worker-pool/vintf.js';

function code<T>(r: Result<T>): string {
  return r.ok ? 'ok' : r.error.code;
}

describe('CMDQV shape', () => {
  it('accepts up to 128 VCMDQs and refuses an impossible shape with a coded error', () => {
    expect(new Cmdqv({ vintfs: 4, vcmdqs: MAX_VCMDQS }).lvcmdqsPerVintf).toBe(32);
    for (const bad of [{ vintfs: 2, vcmdqs: 129 }, { vintfs: 0, vcmdqs: 8 }, { vintfs: 4, vcmdqs: 2 }, { vintfs: 2, vcmdqs: 4, sidPairs: 0 }]) {
      let caught: unknown;
      try {
        new Cmdqv(bad);
      } catch (err) {
        caught = err;
      }
      expect(caught, JSON.stringify(bad)).toBeInstanceOf(VcmdqError);
      expect((caught as VcmdqError).code).toBe('E_CMDQV_CONFIG');
      expect((caught as VcmdqError).fix).toMatch(/128/);
    }
  });
});

describe('VINTF ownership', () => {
  it('VINTF0 is the host\'s (HYP_OWN=1), enabled from the start, and cannot be given to a VM', () => {
    const c = new Cmdqv({ vintfs: 4, vcmdqs: 8 });
    expect(c.vintf(0)).toMatchObject({ hypOwn: true, enabled: true, vmid: undefined });
    expect(new Int32Array(c.vintfTable)[c.vintfBase(0) + V_CONFIG]).toBe(VINTF_EN | VINTF_HYP_OWN);
    expect(code(c.assignVintf(0, 1))).toBe('E_VINTF_HOST');
    expect(code(c.setSidPair(0, 0, 1, 2))).toBe('E_VINTF_HOST');
    expect(code(c.allocate(0, 0, 4))).toBe('ok');
  });

  it('a guest VINTF needs a VM (VMID) before queues or SID pairs, one VMID per VINTF', () => {
    const c = new Cmdqv({ vintfs: 4, vcmdqs: 8 });
    expect(c.vintf(1)).toMatchObject({ hypOwn: false, enabled: false });
    expect(code(c.allocate(1, 0, 4))).toBe('E_VINTF_STATE');
    expect(code(c.setSidPair(1, 0, 1, 2))).toBe('E_VINTF_STATE');
    expect(code(c.assignVintf(1, 0x10000))).toBe('E_VINTF_VMID');
    expect(code(c.assignVintf(1, 0x42))).toBe('ok');
    expect(new Int32Array(c.vintfTable)[c.vintfBase(1) + V_VMID]).toBe(0x42);
    expect(code(c.assignVintf(1, 0x43))).toBe('E_VINTF_STATE');
    expect(code(c.assignVintf(2, 0x42))).toBe('E_VINTF_VMID');
    expect(code(c.assignVintf(9, 1))).toBe('E_VINTF_INDEX');
  });

  it('a VINTF is released only once its queues are freed, and loses its VMID and SID pairs', () => {
    const c = new Cmdqv({ vintfs: 2, vcmdqs: 4 });
    c.assignVintf(1, 7);
    c.setSidPair(1, 0, 8, 0x108);
    expect(code(c.allocate(1, 0, 2))).toBe('ok');
    expect(code(c.releaseVintf(1))).toBe('E_VINTF_STATE');
    expect(code(c.free(1, 0))).toBe('ok');
    expect(code(c.releaseVintf(1))).toBe('ok');
    expect(c.vintf(1)).toMatchObject({ enabled: false, vmid: undefined });
    expect(c.translateSid(1, 8)).toBeUndefined();
    expect(replaceSid(new Int32Array(c.vintfTable), c.vintfBase(1), 8)).toBe(-1);
    expect(code(c.releaseVintf(1))).toBe('E_VINTF_STATE');
  });
});

describe('LVCMDQ allocation', () => {
  it('allocates a VINTF\'s logical queues in ascending order onto the lowest free global VCMDQs', () => {
    const c = new Cmdqv({ vintfs: 2, vcmdqs: 8 });
    c.assignVintf(1, 3);
    expect(code(c.allocate(1, 1, 4))).toBe('E_LVCMDQ_ORDER'); // 0 first
    expect(c.allocate(1, 0, 4)).toEqual({ ok: true, value: { queue: 0 } });
    expect(code(c.allocate(1, 0, 4))).toBe('E_LVCMDQ_ORDER'); // already there
    expect(c.allocate(0, 0, 4)).toEqual({ ok: true, value: { queue: 1 } });
    expect(c.allocate(1, 1, 4)).toEqual({ ok: true, value: { queue: 2 } });
    expect(c.vintf(1)?.queues).toEqual([0, 2]);
    expect(c.queueOwner(2)).toEqual({ vintf: 1, lidx: 1 });
  });

  it('frees in descending order only', () => {
    const c = new Cmdqv({ vintfs: 2, vcmdqs: 8 });
    c.assignVintf(1, 3);
    for (const l of [0, 1, 2]) expect(code(c.allocate(1, l, 3))).toBe('ok');
    expect(code(c.free(1, 0))).toBe('E_LVCMDQ_ORDER');
    expect(code(c.free(1, 1))).toBe('E_LVCMDQ_ORDER');
    expect(code(c.free(1, 3))).toBe('E_LVCMDQ_ORDER'); // never allocated
    expect(code(c.free(1, 2))).toBe('ok');
    expect(code(c.free(1, 1))).toBe('ok');
    expect(code(c.free(1, 0))).toBe('ok');
    expect(c.vintf(1)?.queues).toEqual([]);
    expect(c.queueOwner(0)).toBeUndefined();
    // A freed index can be allocated again, in order.
    expect(code(c.allocate(1, 0, 3))).toBe('ok');
  });

  it('needs a power-of-two queue of at least 32 bytes (2 entries), at most 2^19 entries', () => {
    const c = new Cmdqv({ vintfs: 1, vcmdqs: 4 });
    for (const log2 of [0, -1, 1.5, 20, Number.NaN]) {
      const r = c.allocate(0, 0, log2);
      expect(code(r), String(log2)).toBe('E_LVCMDQ_SIZE');
      if (!r.ok) expect(r.error.fix).toMatch(/32 bytes/);
    }
    expect(code(c.allocate(0, 0, 1))).toBe('ok');
    expect(code(c.allocate(0, 1, 19))).toBe('ok');
  });

  it('gives each VINTF at most vcmdqs / vintfs logical queues, and no more queues than the CMDQV has', () => {
    const c = new Cmdqv({ vintfs: 4, vcmdqs: 8 });
    c.assignVintf(1, 1);
    expect(code(c.allocate(1, 0, 2))).toBe('ok');
    expect(code(c.allocate(1, 1, 2))).toBe('ok');
    expect(code(c.allocate(1, 2, 2))).toBe('E_VCMDQ_EXHAUSTED');
    const d = new Cmdqv({ vintfs: 1, vcmdqs: 2 });
    expect(code(d.allocate(0, 0, 2))).toBe('ok');
    expect(code(d.allocate(0, 1, 2))).toBe('ok');
    expect(code(d.allocate(0, 2, 2))).toBe('E_VCMDQ_EXHAUSTED');
  });
});

describe('SID_MATCH / SID_REPLACE pairs', () => {
  it('programs SID_MATCH = (vSID << 1) | 1 and SID_REPLACE = pSID in the shared VINTF registers', () => {
    const c = new Cmdqv({ vintfs: 2, vcmdqs: 2 });
    c.assignVintf(1, 9);
    expect(code(c.setSidPair(1, 15, 0x10, 0x2010))).toBe('ok');
    const t = new Int32Array(c.vintfTable);
    const w = c.vintfBase(1) + V_PAIR_BASE + 2 * 15;
    expect(t[w]).toBe((0x10 << 1) | 1);
    expect(t[w + 1]).toBe(0x2010);
    expect(replaceSid(t, c.vintfBase(1), 0x10)).toBe(0x2010);
    expect(replaceSid(t, c.vintfBase(1), 0x11)).toBe(-1);
    expect(c.translateSid(1, 0x10)).toBe(0x2010);
    expect(code(c.clearSidPair(1, 15))).toBe('ok');
    expect(replaceSid(t, c.vintfBase(1), 0x10)).toBe(-1);
  });

  it('has 16 pairs per VINTF by default (what QEMU exposes) and refuses slots, SIDs and duplicates out of bounds', () => {
    const c = new Cmdqv({ vintfs: 3, vcmdqs: 4 });
    expect(c.numSidPairs).toBe(16);
    c.assignVintf(1, 1);
    c.assignVintf(2, 2);
    expect(code(c.setSidPair(1, 16, 1, 1))).toBe('E_SID_PAIR');
    expect(code(c.setSidPair(1, 0, 2 ** 31, 1))).toBe('E_SID_PAIR');
    expect(code(c.setSidPair(1, 0, 1, 2 ** 32))).toBe('E_SID_PAIR');
    expect(code(c.setSidPair(1, 0, 1, 0x100))).toBe('ok');
    expect(code(c.setSidPair(1, 1, 1, 0x101))).toBe('E_SID_PAIR'); // vSID 1 already matched
    expect(code(c.setSidPair(2, 0, 1, 0x100))).toBe('E_SID_PAIR'); // pSID 0x100 is VINTF1's device
    expect(code(c.setSidPair(2, 0, 1, 0x200))).toBe('ok'); // same vSID in another VM is fine
    expect(code(c.setSidPair(1, 0, 3, 0x100))).toBe('ok'); // reprogramming a slot replaces it
    expect(c.translateSid(1, 1)).toBeUndefined();
    expect(c.vintf(1)?.sidPairs[0]).toEqual({ vsid: 3, psid: 0x100 });
  });
});
