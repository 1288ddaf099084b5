import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { encodeMmio } from '../../services/formats/kvm-run.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { CMD_SIZE, SyncCs, cfgiSte, cmdSync, encodeCommand, tlbiNhVa, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { VCMDQ_REG, vcmdqGuestGpa, vcmdqRegister } from '../../services/formats/smmu/registers.js';
import { LinkClient, type Envelope__Output } from '../../services/runtime/transport/link.js';
import { Control } from '../../services/controller/control-client.js';
import { HAND_GUEST_ID, configureWithoutGuest, testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const scenario = resolveScenario({ name: 'vcmdq', model: 'nested-smmuv3-vcmdq', workload: { ops: 60, threads: 2 } });
const fx = useProcessTree(scenario);

describe('nested-smmuv3-vcmdq through real processes', () => {
  it('sends every unmap invalidation straight to the VCMDQ: a direct PROD store and a direct CONS load, no exit, no ioctl', async () => {
    await withSession(fx, async (session) => {
    const run = await session.run(scenario, 'nested-smmuv3-vcmdq', testProfile);
    const unmap = run.ops.find((o) => o.op === 'unmap');
    expect(unmap?.count).toBe(60);
    // CMD_SYNC with CS_NONE on a VCMDQ (arm_smmu_cmdq_needs_busy_polling): the CPU polls the
    // queue's CONS on the mapped VINTF page, one load when the worker is done by then.
    expect(unmap?.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 2 });
    expect(run.hops.map((h) => `${h.from}>${h.to}`).sort()).toEqual(['guest-0>psmmu-0', 'psmmu-0>guest-0']);
    expect(run.counters['psmmu-0']).toMatchObject({ vcmdqCommands: 60, vcmdqRegisterReads: 60, vevents: 0, commands: 0 });
    // Only the driver's probe of the vSMMU's IDR0 and IDR3 reached QEMU.
    expect(run.counters['qemu-0']?.['exits']).toBe(2);
    expect(run.invalidations).toEqual({ guestCommands: 60, guestCommandsFailed: 0, deliveredPerPsmmu: { 'psmmu-0': 60 }, fanout: 1, wasted: 0, hostStage2: { unmaps: 0, deliveredPerPsmmu: { 'psmmu-0': 0 } } });
    expect(run.dma.staleTranslations).toBe(0);
    });
  });
});

describe('a guest VINTF page driven by hand', () => {
  let psmmu: LinkClient;
  const prod = [0, 0];

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, scenario, 'nested-smmuv3-vcmdq');
    const ep = eps.get('psmmu-0');
    psmmu = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: ep?.id ?? 0, peerName: 'psmmu-0' }, ep?.address ?? '', 5000, fx.security);
    await psmmu.open();
  });

  afterAll(() => psmmu?.close());

  function slots(q: number, cmds: (SmmuCommand | Buffer)[]): { gpa: number; data: Buffer }[] {
    return cmds.map((c) => {
      const data = Buffer.alloc(CMD_SIZE);
      if (Buffer.isBuffer(c)) c.copy(data);
      else encodeCommand(c, data, 0);
      const gpa = vcmdqGuestGpa(0, q) + Q.index(prod[q] as number, 8) * CMD_SIZE;
      prod[q] = Q.inc(prod[q] as number, 8);
      return { gpa, data };
    });
  }

  const syncAt = (q: number, ahead: number): bigint => BigInt(vcmdqGuestGpa(0, q) + Q.index(Q.inc(prod[q] as number, 8, ahead), 8) * CMD_SIZE);

  function write(q: number, reg: number, value: number, ranges: { gpa: number; data: Buffer }[]): Promise<Envelope__Output> {
    return psmmu.request({ kind: 'VINTF_MMIO', opId: 1, payload: encodeMmio({ physAddr: vcmdqRegister(0, q, reg), data: value, len: 4, isWrite: true }), guestMemory: ranges, modeledNs: 0 });
  }

  it('halts only the queue that got a command a guest VCMDQ refuses, raises a vEVENT, and resumes it after recovery', async () => {
    const control = new Control('psmmu-0', fx.tree.processes.find((p) => p.name === 'psmmu-0')?.address ?? '', fx.security);
    const vevents = async (): Promise<number> => (await control.stats()).counters['vevents'] ?? 0;
    const before = await vevents();
    const badSync = syncAt(0, 2);
    const bad = slots(0, [tlbiNhVa({ vmid: 0, asid: 1, va: 0x1000n, tg: 1 }), cfgiSte({ sid: 8 }), cmdSync({ cs: SyncCs.IRQ, msiaddr: badSync })]);
    const halted = await write(0, VCMDQ_REG.PROD, prod[0] as number, bad);
    expect(halted.status).toBeLessThan(0);
    expect(halted.guestMemory).toHaveLength(0);
    // The host hears of it as a vEVENT (it comes from the queue's worker thread: wait for it).
    for (let i = 0; i < 100 && (await vevents()) === before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await vevents()).toBe(before + 1);
    control.close();

    // Queue 1 of the same VINTF keeps completing.
    const okSync = syncAt(1, 1);
    const good = await write(1, VCMDQ_REG.PROD, prod[1] as number, slots(1, [tlbiNhVa({ vmid: 0, asid: 1, va: 0x2000n, tg: 1 }), cmdSync({ cs: SyncCs.IRQ, msiaddr: okSync })]));
    expect(good.status).toBe(0);
    expect(good.guestMemory.map((m) => BigInt(m.gpa))).toEqual([okSync]);

    // Linux's recovery: CMD_SYNC over the refused slot, then GERRORN = GERROR.
    const replacement = Buffer.alloc(CMD_SIZE);
    encodeCommand(cmdSync(), replacement, 0);
    const badSlot = bad[1] as { gpa: number; data: Buffer };
    const recovered = await write(0, VCMDQ_REG.GERRORN, 1, [{ gpa: badSlot.gpa, data: replacement }]);
    expect(recovered.status).toBe(0);
    expect(recovered.guestMemory.map((m) => BigInt(m.gpa))).toEqual([badSync]);
  });
});
