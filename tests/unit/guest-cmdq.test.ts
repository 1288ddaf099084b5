import { describe, expect, it } from 'vitest';
import { CostTable, COST_STEPS } from '../../services/cost/steps.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { CMD_SIZE, Opcode, decodeCommand, tlbiNhAsid } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import type { LinkClient, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { GuestCmdq, type QueuePort } from '../../services/designs/nested-smmuv3/guest-cmdq.js';

const port: QueuePort = { gpa: 0x4000_0000, log2: 3, prodRegister: 0x98, consRegister: 0x9c, gerrorRegister: 0x60, gerrornRegister: 0x64, peer: 'dev', kind: 'MMIO_WRITE', completion: 'msi' };
/** The same queue on an SMMU without MSI (QEMU's vSMMU): CS=SEV and CONS polling. */
const polled: QueuePort = { ...port, readKind: 'MMIO_READ', completion: 'sev' };

/**
 * A command queue device in a few lines: it consumes the slots it is given, halts with CERROR_ILL
 * on TLBI_NH_ALL (standing in for any command the host refuses), answers register reads, and
 * resumes on GERRORN = GERROR, completing CMD_SYNCs with their MSI write.
 */
function fakeDevice(log2 = 3): { link: LinkClient; writes: string[]; syncs: number[] } {
  const ram = new Map<number, Buffer>();
  let cons = 0;
  let prod = 0;
  let gerror = 0;
  let gerrorn = 0;
  const writes: string[] = [];
  /** The CS field of every CMD_SYNC consumed. */
  const syncs: number[] = [];
  const run = (): { gpa: number; data: Buffer }[] => {
    const msi: { gpa: number; data: Buffer }[] = [];
    while (!((gerror ^ gerrorn) & 1) && Q.ptr(cons, log2) !== Q.ptr(prod, log2)) {
      const slot = ram.get(port.gpa + Q.index(cons, log2) * CMD_SIZE) as Buffer;
      const cmd = decodeCommand(slot, 0);
      if (cmd.opcode === Opcode.TLBI_NH_ALL) {
        cons = Q.withConsErr(cons, Q.CERROR.ILL);
        gerror ^= 1;
        break;
      }
      if (cmd.opcode === Opcode.CMD_SYNC) syncs.push(cmd.fields.cs ?? -1);
      if (cmd.opcode === Opcode.CMD_SYNC && cmd.fields.msiaddr) msi.push({ gpa: Number(cmd.fields.msiaddr), data: Buffer.alloc(4) });
      cons = Q.inc(cons, log2);
    }
    return msi;
  };
  const link = {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      const m = decodeMmio(req.payload);
      if (!m) throw new Error('bad mmio');
      for (const r of req.guestMemory ?? []) {
        const data = r.data as Buffer;
        for (let o = 0; o < data.length; o += CMD_SIZE) ram.set(Number(r.gpa) + o, Buffer.from(data.subarray(o, o + CMD_SIZE)));
      }
      let value = 0;
      let msi: { gpa: number; data: Buffer }[] = [];
      if (m.isWrite) {
        writes.push(m.physAddr === port.prodRegister ? 'PROD' : 'GERRORN');
        if (m.physAddr === port.prodRegister) prod = m.data;
        if (m.physAddr === port.gerrornRegister) {
          gerrorn = m.data;
          if (!((gerror ^ gerrorn) & 1)) cons = Q.withConsErr(cons, 0);
        }
        msi = run();
      } else {
        writes.push(m.physAddr === port.consRegister ? 'CONS?' : 'GERROR?');
        value = m.physAddr === port.consRegister ? cons : m.physAddr === port.gerrorRegister ? gerror : 0;
      }
      return { correlationId: 0, opId: 0, kind: 'MMIO_WRITE', reply: true, status: 0, payload: encodeMmio({ ...m, data: value }), guestMemory: msi, modeledNs: req.modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [] };
    },
  } as unknown as LinkClient;
  return { link, writes, syncs };
}

function context(link: LinkClient): OpContext {
  return new OpContext(1, 0, new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1]))), new Map([['dev', link]]));
}

describe('guest command queue', () => {
  it('completes a batch when the CMD_SYNC slot receives its MSI write', async () => {
    const dev = fakeDevice();
    const q = new GuestCmdq(port, new PhysMemory());
    expect(await q.issue(context(dev.link), [tlbiNhAsid({ vmid: 0, asid: 1 })])).toBe(0);
  });

  it('recovers a queue stopped on a refused command the Linux way, reports that batch failed, and keeps working', async () => {
    const dev = fakeDevice();
    const q = new GuestCmdq(port, new PhysMemory());
    const ctx = context(dev.link);
    // TLBI_NH_ALL stands in for a command the host refuses.
    expect(await q.issue(ctx, [{ opcode: Opcode.TLBI_NH_ALL, fields: { vmid: 0 } }])).toBeLessThan(0);
    expect(q.recoveries).toBe(1);
    expect(dev.writes).toEqual(['PROD', 'CONS?', 'GERROR?', 'GERRORN']);
    // The ring (8 slots) wraps several times after the recovery with no CPU left waiting.
    for (let i = 0; i < 10; i++) expect(await q.issue(ctx, [tlbiNhAsid({ vmid: 0, asid: i })])).toBe(0);
  });

  it('counts only the refused command of a recovered batch as not run: those around it ran', async () => {
    const dev = fakeDevice();
    const q = new GuestCmdq(port, new PhysMemory());
    const ctx = context(dev.link);
    const outcome = { failed: -1 };
    const batch = [tlbiNhAsid({ vmid: 0, asid: 1 }), { opcode: Opcode.TLBI_NH_ALL, fields: { vmid: 0 } }, tlbiNhAsid({ vmid: 0, asid: 2 })];
    expect(await q.issue(ctx, batch, outcome)).toBeLessThan(0);
    expect(outcome.failed).toBe(1);
    expect(await q.issue(ctx, [tlbiNhAsid({ vmid: 0, asid: 3 })], outcome)).toBe(0);
    expect(outcome.failed).toBe(0);
  });

  it('on an SMMU without MSI: CS=SEV, and one CONS read per sync when the queue was consumed in the PROD write', async () => {
    const dev = fakeDevice();
    const q = new GuestCmdq(polled, new PhysMemory());
    const ctx = context(dev.link);
    expect(await q.issue(ctx, [tlbiNhAsid({ vmid: 0, asid: 1 })])).toBe(0);
    expect(await q.issue(ctx, [tlbiNhAsid({ vmid: 0, asid: 2 })])).toBe(0);
    expect(dev.writes).toEqual(['PROD', 'CONS?', 'PROD', 'CONS?']);
    expect(dev.syncs).toEqual([2, 2]);
    expect(q.accesses).toEqual({ prodWrites: 2, consReads: 2, gathered: 0 });
  });

  it('on an SMMU without MSI: a stopped queue shows in CONS.ERR, is recovered, and the sync is seen consumed after', async () => {
    const dev = fakeDevice();
    const q = new GuestCmdq(polled, new PhysMemory());
    const ctx = context(dev.link);
    const outcome = { failed: -1 };
    expect(await q.issue(ctx, [tlbiNhAsid({ vmid: 0, asid: 1 }), { opcode: Opcode.TLBI_NH_ALL, fields: { vmid: 0 } }], outcome)).toBeLessThan(0);
    expect(outcome.failed).toBe(1);
    expect(dev.writes).toEqual(['PROD', 'CONS?', 'CONS?', 'GERROR?', 'GERRORN', 'CONS?']);
    expect(await q.issue(ctx, [tlbiNhAsid({ vmid: 0, asid: 3 })], outcome)).toBe(0);
  });

  it('on a VCMDQ (CS=NONE, a CONS read with no trap): the read that sees the sync is priced with it, a recovery\'s reads are not', async () => {
    const vcmdq: QueuePort = { ...polled, completion: 'none', readCost: 'cpu.mmio_read_device', syncReadInSync: true };
    // Every step costs 1 ns here: the difference is the reads charged as cpu.mmio_read_device.
    const charged = async (p: QueuePort, cmds: Parameters<GuestCmdq['issue']>[1]): Promise<number> => {
      const ctx = context(fakeDevice().link);
      await new GuestCmdq(p, new PhysMemory()).issue(ctx, cmds);
      return ctx.modeledNs;
    };
    const ok = [tlbiNhAsid({ vmid: 0, asid: 1 })];
    expect((await charged({ ...vcmdq, syncReadInSync: false }, ok)) - (await charged(vcmdq, ok))).toBe(1);
    // Stopped and recovered: CONS (the sync's poll), CONS and GERROR (the recovery), CONS (the sync's poll again).
    const refused = [tlbiNhAsid({ vmid: 0, asid: 1 }), { opcode: Opcode.TLBI_NH_ALL, fields: { vmid: 0 } }];
    expect((await charged({ ...vcmdq, syncReadInSync: false }, refused)) - (await charged(vcmdq, refused))).toBe(2);
    expect(await charged(vcmdq, refused)).toBeGreaterThan(await charged(vcmdq, ok));
  });

  it('a list longer than a batch goes out 64 commands at a time without a sync, the rest with one (arm_smmu_cmdq_batch_add)', async () => {
    const dev = fakeDevice(8);
    const big = new GuestCmdq({ ...polled, log2: 8 }, new PhysMemory());
    const cmds = Array.from({ length: 130 }, (_, i) => tlbiNhAsid({ vmid: 0, asid: i }));
    expect(await big.issue(context(dev.link), cmds)).toBe(0);
    expect(dev.writes).toEqual(['PROD', 'PROD', 'PROD', 'CONS?']);
    expect(dev.syncs).toEqual([2]);
  });
});
