import { describe, expect, it } from 'vitest';
import { Errno } from '../../services/runtime/errors.js';
import {
  HWPT_INVALIDATE_SIZE, HWPT_QUEUE_DATA_SIZE, IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, decodeHwptQueueData,
  encodeHwptQueueData, type HwptInvalidate,
} from '../../services/formats/iommufd.js';
import type { VdeviceObject, ViommuObject } from '../../services/machine/iommufd-objects.js';
import {
  CMD_SIZE, Opcode, atcInv, cfgiCd, cfgiSte, cmdSync, decodeCommand, encodeCommand, tlbiNhAsid, tlbiNhVa, tlbiNsnhAll,
  type SmmuCommand,
} from '../../services/formats/smmu/commands.js';
import { HWPT_INVALIDATE_OPCODES, KVM_CMDQ_OPCODES } from '../../services/formats/smmu/allow-lists.js';
import { checkHwptInvalidate, invalidateEntries, invalidateQueue } from '../../services/vfio/hwpt-invalidate.js';

const viommu: ViommuObject = { id: 7, vm: 0, psmmu: 0, vmid: 0x2a, hwptId: 6 };
const vdevs = new Map<number, VdeviceObject>([[0x8, { id: 9, viommuId: 7, devId: 2, vsid: 0x8, psid: 0x108 }]]);

function entries(cmds: SmmuCommand[]): Buffer {
  const b = Buffer.alloc(cmds.length * CMD_SIZE);
  cmds.forEach((c, i) => encodeCommand(c, b, i * CMD_SIZE));
  return b;
}

function head(entryNum: number, over: Partial<HwptInvalidate> = {}): HwptInvalidate {
  return { size: HWPT_INVALIDATE_SIZE, hwptId: 7, dataUptr: 0x7f0000000000, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: CMD_SIZE, entryNum, reserved: 0, ...over };
}

/** A physical CMDQ stand-in that records chunks and can fail the n-th one. */
function sink(failChunk = -1): { chunks: Buffer[]; converted: number; sink: Parameters<typeof invalidateEntries>[4] } {
  const state = { chunks: [] as Buffer[], converted: 0, sink: undefined as never as Parameters<typeof invalidateEntries>[4] };
  state.sink = {
    converted: () => {
      state.converted += 1;
    },
    submit: async (chunk) => {
      state.chunks.push(chunk);
      return state.chunks.length - 1 === failChunk ? -Errno.EIO : 0;
    },
  };
  return state;
}

describe('IOMMU_HWPT_INVALIDATE core checks', () => {
  it('refuses a non-zero __reserved with EOPNOTSUPP before anything else', () => {
    expect(checkHwptInvalidate(head(1, { reserved: 1, dataUptr: 0 }), 16)).toBe(-Errno.EOPNOTSUPP);
  });
  it('allows entry_num 0 as a probe of the data type, even with a null pointer', () => {
    expect(checkHwptInvalidate(head(0, { dataUptr: 0, entryLen: 0 }), 0)).toBe(0);
  });
  it('fails a probe of a data type the vIOMMU does not take with EINVAL', () => {
    expect(checkHwptInvalidate(head(0, { dataType: 2 }), 0)).toBe(-Errno.EINVAL);
  });
  it('gives EFAULT when the user array is shorter than entry_num x entry_len', () => {
    expect(checkHwptInvalidate(head(2), 16)).toBe(-Errno.EFAULT);
  });
  it.each([
    ['a null data pointer', { dataUptr: 0 }],
    ['entry_len 0', { entryLen: 0 }],
    ['entry_len above a page', { entryLen: 4097 }],
    ['entry_num above 2^19', { entryNum: 2 ** 19 + 1 }],
  ])('gives EINVAL for %s', (_what, over) => {
    expect(checkHwptInvalidate(head(1, over), 1 << 30)).toBe(-Errno.EINVAL);
  });
});

describe('HWPT_INVALIDATE conversion and chunking', () => {
  it('stamps the vIOMMU VMID into TLBIs whatever VMID the guest wrote, and rewrites NSNH_ALL to NH_ALL', async () => {
    const s = sink();
    const r = await invalidateEntries(head(3), entries([tlbiNhVa({ vmid: 0x99, asid: 3, va: 0x1000n }), tlbiNhAsid({ vmid: 1, asid: 4 }), tlbiNsnhAll()]), viommu, vdevs, s.sink);
    expect(r).toEqual({ status: 0, entryNum: 3 });
    expect(s.chunks).toHaveLength(1);
    const chunk = s.chunks[0] as Buffer;
    expect(chunk.length).toBe(4 * CMD_SIZE);
    const cmds = [0, 1, 2, 3].map((i) => decodeCommand(chunk, i * CMD_SIZE));
    expect(cmds.map((c) => c.fields.vmid)).toEqual([0x2a, 0x2a, 0x2a, undefined]);
    expect(cmds[2]?.opcode).toBe(Opcode.TLBI_NH_ALL);
    expect(cmds[3]?.opcode).toBe(Opcode.CMD_SYNC);
  });

  it('replaces a known vSID with its pSID in ATC_INV and CFGI_CD', async () => {
    const s = sink();
    await invalidateEntries(head(2), entries([atcInv({ sid: 0x8, size: 0, addr: 0x2000n }), cfgiCd({ sid: 0x8, ssid: 0 })]), viommu, vdevs, s.sink);
    const chunk = s.chunks[0] as Buffer;
    expect(decodeCommand(chunk, 0).fields.sid).toBe(0x108);
    expect(decodeCommand(chunk, CMD_SIZE).fields.sid).toBe(0x108);
  });

  it('fails an unknown vSID with EIO and entry_num at that entry; nothing converted after the last chunk is sent', async () => {
    const s = sink();
    const r = await invalidateEntries(head(3), entries([tlbiNhAsid({ vmid: 0, asid: 1 }), atcInv({ sid: 0x10, size: 0, addr: 0n }), tlbiNhAsid({ vmid: 0, asid: 2 })]), viommu, vdevs, s.sink);
    expect(r).toEqual({ status: -Errno.EIO, entryNum: 1 });
    expect(s.chunks).toHaveLength(0);
  });

  it.each([
    ['CMD_SYNC', cmdSync()],
    ['CFGI_STE', cfgiSte({ sid: 8 })],
  ])('refuses %s with EIO', async (_n, cmd) => {
    const r = await invalidateEntries(head(1), entries([cmd]), viommu, vdevs, sink().sink);
    expect(r).toEqual({ status: -Errno.EIO, entryNum: 0 });
  });

  it('zero-extends entries shorter than a command, and refuses longer ones with a non-zero tail (E2BIG)', async () => {
    const full = entries([tlbiNhAsid({ vmid: 0, asid: 7 })]);
    const short = await invalidateEntries(head(1, { entryLen: 8 }), full.subarray(0, 8), viommu, vdevs, sink().sink);
    expect(short.status).toBe(0);
    const s1 = sink();
    const long = Buffer.concat([full, Buffer.alloc(8)]);
    expect(await invalidateEntries(head(1, { entryLen: 24 }), long, viommu, vdevs, s1.sink)).toEqual({ status: 0, entryNum: 1 });
    expect(decodeCommand(s1.chunks[0] as Buffer, 0).fields.asid).toBe(7);
    long.writeUInt8(1, 20);
    expect(await invalidateEntries(head(1, { entryLen: 24 }), long, viommu, vdevs, sink().sink)).toEqual({ status: -Errno.E2BIG, entryNum: 0 });
  });

  it('accepts exactly the commands of the shared allow-list, for every opcode byte', async () => {
    for (let op = 0; op < 256; op++) {
      const b = Buffer.alloc(CMD_SIZE);
      b.writeUInt8(op, 0);
      b.writeUInt32LE(0x8, 4); // a known vSID, for the commands that carry one
      const r = await invalidateEntries(head(1), b, viommu, vdevs, sink().sink);
      expect(r.status === 0, `opcode 0x${op.toString(16)}`).toBe(HWPT_INVALIDATE_OPCODES.has(op));
    }
  });

  it('issues chunks of at most 63 commands, each closed by its own CMD_SYNC', async () => {
    const s = sink();
    const n = 130;
    const r = await invalidateEntries(head(n), entries(Array.from({ length: n }, (_, i) => tlbiNhAsid({ vmid: 0, asid: i }))), viommu, vdevs, s.sink);
    expect(r).toEqual({ status: 0, entryNum: n });
    expect(s.chunks.map((c) => c.length / CMD_SIZE)).toEqual([64, 64, 5]);
    for (const c of s.chunks) expect(decodeCommand(c, c.length - CMD_SIZE).opcode).toBe(Opcode.CMD_SYNC);
    expect(s.converted).toBe(n);
  });

  it('reports a chunk that failed on the hardware with EIO and entry_num at the chunk end minus one', async () => {
    const s = sink(1);
    const r = await invalidateEntries(head(100), entries(Array.from({ length: 100 }, (_, i) => tlbiNhAsid({ vmid: 0, asid: i }))), viommu, vdevs, s.sink);
    expect(r).toEqual({ status: -Errno.EIO, entryNum: 99 });
  });
});

describe('the in-kernel vSMMU queue\'s allow-list (nested-smmuv3-kvm)', () => {
  it('takes the TLBIs and ATC_INV the HWPT_INVALIDATE allow-list takes, and no CFGI, CMD_SYNC or anything else', () => {
    for (let op = 0; op < 256; op++) {
      const want = HWPT_INVALIDATE_OPCODES.has(op) && op !== Opcode.CFGI_CD && op !== Opcode.CFGI_CD_ALL;
      expect(KVM_CMDQ_OPCODES.has(op), `opcode 0x${op.toString(16)}`).toBe(want);
    }
    expect([...KVM_CMDQ_OPCODES].sort((a, b) => a - b)).toEqual(
      [Opcode.TLBI_NH_ALL, Opcode.TLBI_NH_ASID, Opcode.TLBI_NH_VA, Opcode.TLBI_NH_VAA, Opcode.TLBI_NSNH_ALL, Opcode.ATC_INV].sort((a, b) => a - b),
    );
    for (const op of [Opcode.CFGI_STE, Opcode.CFGI_CD, Opcode.CMD_SYNC]) expect(KVM_CMDQ_OPCODES.has(op)).toBe(false);
  });
});

describe('the queue uAPI proposal (vmm.hwptInvalidate=queue)', () => {
  const slots = (cmds: SmmuCommand[]): ((i: number) => Buffer) => {
    const b = entries(cmds);
    return (i) => b.subarray(i * CMD_SIZE, (i + 1) * CMD_SIZE);
  };

  it('struct iommu_hwpt_invalidate_arm_smmuv3 round-trips; a set __reserved or a short struct is refused', () => {
    const d = { cmdqGpa: 0x4000_0000, cons: 0x1ff, prod: 0x102, entrySize: 16, log2size: 8 };
    const b = encodeHwptQueueData(d);
    expect(b).toHaveLength(HWPT_QUEUE_DATA_SIZE);
    expect(decodeHwptQueueData(b)).toEqual(d);
    const bad = Buffer.from(b);
    bad.writeUInt32LE(1, 28);
    expect(decodeHwptQueueData(bad)).toBeUndefined();
    expect(decodeHwptQueueData(b.subarray(0, 31))).toBeUndefined();
    expect(checkHwptInvalidate(head(1, { dataType: IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE, entryLen: HWPT_QUEUE_DATA_SIZE }), HWPT_QUEUE_DATA_SIZE)).toBe(0);
  });

  it('reads every entry, skips what it does not convert, and issues the rest as one list with one CMD_SYNC (no 63-chunks)', async () => {
    const s = sink();
    const cmds = [...Array.from({ length: 70 }, (_, i) => tlbiNhVa({ vmid: 1, asid: 3, va: BigInt(0x1000 * (i + 1)) })), cfgiSte({ sid: 0x8 }), atcInv({ sid: 0x8, size: 0, addr: 0x2000n })];
    const r = await invalidateQueue(cmds.length, slots(cmds), viommu, vdevs, s.sink);
    expect(r).toEqual({ status: 0, entryNum: 72, converted: 71 });
    expect(s.converted).toBe(72);
    expect(s.chunks).toHaveLength(1);
    const list = s.chunks[0] as Buffer;
    expect(list.length).toBe(72 * CMD_SIZE);
    expect(decodeCommand(list, 0).fields.vmid).toBe(0x2a);
    expect(decodeCommand(list, 70 * CMD_SIZE).fields.sid).toBe(0x108);
    expect(decodeCommand(list, 71 * CMD_SIZE).opcode).toBe(Opcode.CMD_SYNC);
  });

  it('a vSID with no vDEVICE: EIO with entry_num at that entry, and nothing issued', async () => {
    const s = sink();
    const r = await invalidateQueue(3, slots([tlbiNhVa({ vmid: 0, asid: 1, va: 0x1000n }), atcInv({ sid: 0x999, size: 0, addr: 0n }), tlbiNhVa({ vmid: 0, asid: 1, va: 0x2000n })]), viommu, vdevs, s.sink);
    expect(r.status).toBe(-Errno.EIO);
    expect(r.entryNum).toBe(1);
    expect(s.chunks).toHaveLength(0);
  });

  it('nothing to convert: nothing issued; a failed list: EIO at the last entry', async () => {
    const s = sink();
    expect(await invalidateQueue(1, slots([cmdSync()]), viommu, vdevs, s.sink)).toEqual({ status: 0, entryNum: 1, converted: 0 });
    expect(s.chunks).toHaveLength(0);
    const f = sink(0);
    expect((await invalidateQueue(2, slots([tlbiNhAsid({ vmid: 0, asid: 1 }), tlbiNhAsid({ vmid: 0, asid: 2 })]), viommu, vdevs, f.sink)).entryNum).toBe(1);
  });
});
