import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, tlbiNhVa, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG, vsmmuCmdqGpa, vsmmuMmioBase } from '../../services/formats/smmu/registers.js';
import { LinkClient, type Envelope__Output } from '../../services/runtime/transport/link.js';
import { Control } from '../../services/controller/control-client.js';
import { processesWithMarker } from '../helpers/processes.js';
import { HAND_GUEST_ID, configureWithoutGuest, testProfile, useProcessTree, withSession } from '../helpers/tree.js';

const scenario = resolveScenario({ name: 'it', workload: { ops: 50 } });
const fx = useProcessTree(scenario);

describe('the nested-SMMUv3 path through real processes', () => {
  it('starts one OS process per role, each naming its role and index on its command line', () => {
    const procs = processesWithMarker(fx.marker);
    for (const name of ['guest 0', 'kvm 0', 'qemu 0', 'vfio 0', 'psmmu 0']) {
      const [role, index] = name.split(' ');
      expect(procs.some((p) => p.cmdline.includes(`--role ${role} --index ${index}`)), name).toBe(true);
    }
    expect(new Set(fx.tree.processes.map((p) => p.pid)).size).toBe(5);
  });

  it('times every hop of a strict unmap and counts two exits and user exits (PROD write, CONS read), one ioctl and one hw submission per unmap', async () => {
    await withSession(fx, async (session) => {
    const run = await session.run(scenario, 'nested-smmuv3', testProfile);
    const unmap = run.ops.find((o) => o.op === 'unmap');
    const map = run.ops.find((o) => o.op === 'map');
    expect(unmap?.count).toBe(50);
    expect(unmap?.transitions).toEqual({ exit: 2, user: 2, ioctl: 1, hw: 1, direct: 0 });
    expect(map?.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
    const hops = run.hops.map((h) => `${h.from}>${h.to}`).sort();
    expect(hops).toEqual(
      ['guest-0>kvm', 'kvm>qemu-0', 'qemu-0>vfio', 'vfio>psmmu-0', 'psmmu-0>vfio', 'vfio>qemu-0', 'qemu-0>kvm', 'kvm>guest-0'].sort(),
    );
    // The guest-kvm-qemu hops carry each unmap's PROD write and CONS read; the rest its one ioctl.
    for (const h of run.hops) {
      expect(h.count, `${h.from}>${h.to}`).toBe(/qemu-0>vfio|vfio>|psmmu-0>vfio/.test(`${h.from}>${h.to}`) ? 50 : 100);
      expect(h.measuredUs.p50).toBeGreaterThan(0);
    }
    // The kernel adds its own CMD_SYNC to every chunk; the guest's CMD_SYNC never leaves the VMM.
    expect(run.counters['qemu-0']).toMatchObject({ ioctls: 50, syncs: 50, commands: 50 });
    expect(run.counters['vfio']).toMatchObject({ hwptInvalidate: 50, chunks: 50, commands: 50 });
    expect(run.counters['psmmu-0']).toMatchObject({ commands: 50, syncs: 50, errors: 0 });
    expect(run.invalidations).toEqual({ guestCommands: 50, guestCommandsFailed: 0, deliveredPerPsmmu: { 'psmmu-0': 50 }, fanout: 1, wasted: 0, hostStage2: { unmaps: 0, deliveredPerPsmmu: { 'psmmu-0': 0 } } });
    // Modeled: every unmap pays the same steps, so its distribution is a single value.
    expect(unmap?.modeledNs.min).toBe(unmap?.modeledNs.max);
    expect(unmap?.modeledNs.mean).toBeGreaterThan(map?.modeledNs.mean ?? Infinity);
    });
  });

  it('gives identical modeled results run after run, with several vCPUs and lazy flushes', async () => {
    const lazy = resolveScenario({ name: 'it', dma: 'lazy', workload: { ops: 700, threads: 3 } });
    await withSession(fx, async (session) => {
    const a = await session.run(lazy, 'nested-smmuv3', testProfile);
    const b = await session.run(lazy, 'nested-smmuv3', testProfile);
    expect(b.ops.map((o) => [o.op, o.count, o.modeledNs])).toEqual(a.ops.map((o) => [o.op, o.count, o.modeledNs]));
    expect(b.modeledElapsedNs).toBe(a.modeledElapsedNs);
    expect(b.throughput.opsPerSecModeled).toBe(a.throughput.opsPerSecModeled);
    // 700 unmaps over 3 CPUs is 233 or 234 per CPU's ring: none fills (255), and the domain's one
    // timer (10 ms after its first entry, later than the run) flushes every ring once at the end.
    expect(a.invalidations.guestCommands).toBe(1);
    expect(a.ops.find((o) => o.op === 'flush')?.count).toBe(1);
    });
  });

  it('invalidates once per unmap in strict mode and once per flush in lazy mode', async () => {
    await withSession(fx, async (session) => {
    const strict = await session.run(resolveScenario({ workload: { ops: 300 } }), 'nested-smmuv3', testProfile);
    expect(strict.invalidations.guestCommands).toBe(300);
    const lazy = await session.run(resolveScenario({ dma: 'lazy', workload: { ops: 1000 } }), 'nested-smmuv3', testProfile);
    // One CPU: its ring holds 255, so unmaps 256, 511 and 766 find it full and pay a flush (each
    // keeps its own entry queued); the domain's timer flushes the rest at the end.
    expect(lazy.invalidations.guestCommands).toBe(4);
    const unmap = lazy.ops.find((o) => o.op === 'unmap');
    expect(unmap?.transitions.exit).toBeCloseTo(6 / 1000, 6);
    expect(lazy.ops.find((o) => o.op === 'flush')?.count).toBe(1);
    });
  });

  it('static and bounce modes make no per-I/O invalidation; static unmaps its buffers once at the end', async () => {
    await withSession(fx, async (session) => {
    const quiet = { workload: { ops: 200 }, device: { ringBuffers: 0 } };
    const stat = await session.run(resolveScenario({ ...quiet, dma: 'static' }), 'nested-smmuv3', testProfile);
    for (const op of stat.ops) expect(op.transitions, op.op).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
    expect(stat.invalidations.guestCommands).toBe(1); // the one buffer, unmapped when the workload ends
    const bounce = await session.run(resolveScenario({ ...quiet, dma: 'bounce' }), 'nested-smmuv3', testProfile);
    for (const op of bounce.ops) expect(op.transitions, op.op).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
    expect(bounce.invalidations.guestCommands).toBe(0);
    // Each bounced map and unmap copies its page (the first map also maps the pool itself).
    const copy = testProfile.steps['guest.bounce_copy']?.ns;
    expect(bounce.ops.find((o) => o.op === 'map')?.modeledNs.p50).toBe(copy);
    expect(bounce.ops.find((o) => o.op === 'unmap')?.modeledNs.max).toBe(copy);
    });
  });

  it('none pays no transition at all', async () => {
    await withSession(fx, async (session) => {
    const run = await session.run(scenario, 'none', testProfile);
    for (const op of run.ops) expect(op.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
    expect(run.hops).toEqual([]);
    expect(run.counters['psmmu-0']?.['commands']).toBe(0);
    });
  });
});

describe('the guest side of the link, driven by hand', () => {
  let kvm: LinkClient;
  let psmmuControl: Control;

  beforeAll(async () => {
    const eps = await configureWithoutGuest(fx, scenario, 'nested-smmuv3');
    const psmmuEp = eps.get('psmmu-0');
    psmmuControl = new Control('psmmu-0', psmmuEp?.address ?? '', fx.security);
    const kvmEp = eps.get('kvm');
    kvm = new LinkClient({ selfId: HAND_GUEST_ID, selfName: 'guest-0', peerId: kvmEp?.id ?? 0, peerName: 'kvm' }, kvmEp?.address ?? '', 5000, fx.security);
    await kvm.open();
  });

  afterAll(() => {
    kvm?.close();
    psmmuControl?.close();
  });

  let prod = 0;
  function slots(cmds: SmmuCommand[]): { gpa: number; data: Buffer }[] {
    const out: { gpa: number; data: Buffer }[] = [];
    for (const c of cmds) {
      const data = Buffer.alloc(CMD_SIZE);
      encodeCommand(c, data, 0);
      out.push({ gpa: vsmmuCmdqGpa(0) + Q.index(prod, 8) * CMD_SIZE, data });
      prod = Q.inc(prod, 8);
    }
    return out;
  }

  function mmio(offset: number, data: number, isWrite: boolean, ranges: { gpa: number; data: Buffer }[] = []): Promise<Envelope__Output> {
    return kvm.request({ kind: 'MMIO_WRITE', opId: 1, payload: encodeMmio({ physAddr: vsmmuMmioBase(0) + offset, data, len: 4, isWrite }), guestMemory: ranges, modeledNs: 0 });
  }

  it('returns only after the CMD_SYNC completed: hops in path order, and the MSI write lands in the sync slot', async () => {
    const before = (await psmmuControl.stats()).counters['commands'] ?? 0;
    const syncGpa = vsmmuCmdqGpa(0) + Q.index(Q.inc(prod, 8, 1), 8) * CMD_SIZE;
    const ranges = slots([tlbiNhVa({ vmid: 0, asid: 1, va: 0x5000n, tg: 1 }), cmdSync({ cs: SyncCs.IRQ, msiaddr: BigInt(syncGpa) })]);
    const reply = await mmio(SMMU_REG.CMDQ_PROD, prod, true, ranges);
    expect(reply.status).toBe(0);
    expect(reply.guestMemory).toHaveLength(1);
    expect(Number(reply.guestMemory[0]?.gpa)).toBe(syncGpa);
    expect(reply.guestMemory[0]?.data.readUInt32LE(0)).toBe(0);
    const names = new Map(fx.tree.processes.map((p, i) => [i + 1, p.name]));
    names.set(HAND_GUEST_ID, 'guest-0');
    const path = reply.hops.map((h) => `${names.get(h.from)}>${names.get(h.to)}`);
    expect(path).toEqual(['guest-0>kvm', 'kvm>qemu-0', 'qemu-0>vfio', 'vfio>psmmu-0', 'psmmu-0>vfio', 'vfio>qemu-0', 'qemu-0>kvm', 'kvm>guest-0']);
    // Each hop is received after it was sent, and the next hop leaves after the previous arrived.
    for (let i = 0; i < reply.hops.length; i++) {
      const h = reply.hops[i] as Envelope__Output['hops'][number];
      expect(h.receivedNs).toBeGreaterThanOrEqual(h.sentNs);
      if (i > 0) expect(h.sentNs).toBeGreaterThanOrEqual((reply.hops[i - 1] as typeof h).receivedNs);
    }
    expect(reply.modeledNs).toBeGreaterThan(0);
    expect((await psmmuControl.stats()).counters['commands']).toBe(before + 1);
  });

  it('stops the vSMMU queue at an illegal command with CERROR_ILL, and resumes after Linux-style recovery', async () => {
    const bad = Buffer.alloc(CMD_SIZE);
    bad.writeUInt8(0xff, 0);
    const badGpa = vsmmuCmdqGpa(0) + Q.index(prod, 8) * CMD_SIZE;
    prod = Q.inc(prod, 8);
    const syncGpa = vsmmuCmdqGpa(0) + Q.index(Q.inc(prod, 8, 1), 8) * CMD_SIZE;
    const ranges = [{ gpa: badGpa, data: bad }, ...slots([tlbiNhVa({ vmid: 0, asid: 1, va: 0x6000n, tg: 1 }), cmdSync({ cs: SyncCs.IRQ, msiaddr: BigInt(syncGpa) })])];
    const reply = await mmio(SMMU_REG.CMDQ_PROD, prod, true, ranges);
    expect(reply.status).toBe(0);
    expect(reply.guestMemory).toHaveLength(0); // the sync never ran
    const cons = decodeMmio((await mmio(SMMU_REG.CMDQ_CONS, 0, false)).payload)?.data ?? 0;
    expect(Q.consErr(cons)).toBe(Q.CERROR.ILL);
    expect(vsmmuCmdqGpa(0) + Q.index(cons, 8) * CMD_SIZE).toBe(badGpa);
    const gerror = decodeMmio((await mmio(SMMU_REG.GERROR, 0, false)).payload)?.data ?? 0;
    expect(gerror & GERROR_CMDQ_ERR).toBe(GERROR_CMDQ_ERR);
    // Linux: overwrite the bad slot with a CMD_SYNC, then acknowledge by writing GERRORN = GERROR.
    const sync = Buffer.alloc(CMD_SIZE);
    encodeCommand(cmdSync(), sync, 0);
    const resumed = await mmio(SMMU_REG.GERRORN, gerror, true, [{ gpa: badGpa, data: sync }]);
    expect(resumed.status).toBe(0);
    expect(resumed.guestMemory.map((w) => Number(w.gpa))).toEqual([syncGpa]);
    const after = decodeMmio((await mmio(SMMU_REG.CMDQ_CONS, 0, false)).payload)?.data ?? 0;
    expect(Q.consErr(after)).toBe(0);
    expect(Q.ptr(after, 8)).toBe(Q.ptr(prod, 8));
  });
});
