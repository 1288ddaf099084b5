import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { emulatedDeviceList } from '../../services/machine/emulated-vsmmu.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { decodeHwptInvalidate } from '../../services/formats/iommufd.js';

import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { OpContext } from '../../services/runtime/op-context.js';
import type { RoleEnv } from '../../services/runtime/role-api.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, tlbiNhVa, tlbiS12Vmall, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { SMMU_REG, VSMMU_CMDQ_LOG2_ENTRIES, vsmmuCmdqGpa, vsmmuMmioBase } from '../../services/formats/smmu/registers.js';
import type { LinkClient, MemoryRange, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { devices } from '../../services/controller/session.js';
import type { VmmDevice } from '../../services/qemu/device.js';
import { nestedVmm } from '../../services/designs/nested-smmuv3/vmm.js';
import { DESIGNS } from '../../services/designs/registry.js';
import '../../services/designs/nested-smmuv3/vmm.js';
import { iommufdLayoutOf } from '../../services/designs/registry.js';

const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
const dir = mkdtempSync(join(tmpdir(), 'vmmsim-vsmmu-set-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * The VMM of a nested-smmuv3 VM with a device behind each of two pSMMUs (one vSMMU per pSMMU) and
 * one emulated device, over a VFIO that records every HWPT_INVALIDATE and accepts it.
 */
function rig(vsmmu: 'single' | 'per-psmmu') {
  const s = resolveScenario({ topology: { psmmus: 2, vsmmu, emulatedDevices: 1 }, device: { dmaRate: 0 } });
  const topology = {
    model: 'nested-smmuv3', seed: 1, ramDir: dir, vsmmu, devices: devices(s), vmids: [1], dispatch: 'broadcast', vmidPolicy: 'per-s2-parent',
    vmm: { hwptInvalidate: 'per-command' }, device: { dmaRate: 0, lingerMs: 0, lingerShare: 0 }, emulatedDevices: emulatedDeviceList(1, 1),
  } as unknown as Topology__Output;
  const env = { self: { name: 'qemu-0', index: 0 }, topology, costs } as unknown as RoleEnv;
  const device: VmmDevice = nestedVmm(DESIGNS['nested-smmuv3'].traits)(env);
  const ioctls: number[] = [];
  const vfio = {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      ioctls.push(decodeHwptInvalidate(req.payload)?.head.hwptId ?? -1);
      return { correlationId: 0, opId: 0, kind: req.kind, reply: true, status: 0, payload: req.payload, guestMemory: [], modeledNs: req.modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [] } as Envelope__Output;
    },
  } as unknown as LinkClient;
  const prods = new Map<number, number>();
  /** The guest's write of `cmds` + CMD_SYNC into vSMMU v's queue and of its CMDQ_PROD. */
  const issue = async (v: number, cmds: SmmuCommand[]): Promise<{ msi: number[]; ns: number }> => {
    const at = prods.get(v) ?? 0;
    const syncGpa = vsmmuCmdqGpa(v) + Q.index(at + cmds.length, VSMMU_CMDQ_LOG2_ENTRIES) * CMD_SIZE;
    const ranges: MemoryRange[] = [...cmds, cmdSync({ cs: SyncCs.IRQ, msiaddr: BigInt(syncGpa) })].map((c, i) => {
      const data = Buffer.alloc(CMD_SIZE);
      encodeCommand(c, data, 0);
      return { gpa: vsmmuCmdqGpa(v) + Q.index(at + i, VSMMU_CMDQ_LOG2_ENTRIES) * CMD_SIZE, data };
    });
    prods.set(v, at + cmds.length + 1);
    const ctx = new OpContext(1, 0, costs, new Map([['vfio', vfio]]));
    const access = { physAddr: vsmmuMmioBase(v) + SMMU_REG.CMDQ_PROD, data: at + cmds.length + 1, len: 4, isWrite: true };
    const req = { kind: 'MMIO_EXIT', payload: encodeMmio(access), guestMemory: ranges } as unknown as Envelope__Output;
    const reply = await device.mmioExit(access, req, ctx);
    return { msi: (reply.guestMemory ?? []).map((w) => Number(w.gpa)), ns: ctx.modeledNs };
  };
  const cons = async (v: number): Promise<number> => {
    const access = { physAddr: vsmmuMmioBase(v) + SMMU_REG.CMDQ_CONS, data: 0, len: 4, isWrite: false };
    const reply = await device.mmioExit(access, { kind: 'MMIO_EXIT', payload: encodeMmio(access), guestMemory: [] } as unknown as Envelope__Output, new OpContext(1, 0, costs, new Map()));
    return decodeMmio(reply.payload)?.data ?? -1;
  };
  return { device, ioctls, issue, cons, viommus: iommufdLayoutOf(topology).viommus.map((x) => x.id) };
}

const tlbi = (asid: number): SmmuCommand => tlbiNhVa({ vmid: 0, asid, va: 0x1000n, tg: 1 });

describe('a nested VMM with an emulated vSMMU beside its accelerated ones', () => {
  it('routes each exit by address: the accelerated vSMMUs to their own vIOMMU, the emulated one to nothing below the VMM', async () => {
    const r = rig('per-psmmu');
    const [v0, v1] = r.viommus;
    expect((await r.issue(0, [tlbi(1)])).msi).toHaveLength(1);
    expect((await r.issue(1, [tlbi(2)])).msi).toHaveLength(1);
    expect(r.ioctls).toEqual([v0, v1]);
    // vSMMU 2 is the emulated one: its TLBI and sync complete in the VMM, with no ioctl.
    const emulated = await r.issue(2, [tlbi(3)]);
    expect(emulated.msi).toEqual([vsmmuCmdqGpa(2) + CMD_SIZE]);
    expect(r.ioctls).toEqual([v0, v1]);
    // The exit to user space, two queue entries and one software-IOTLB invalidation (1 ns each here).
    expect(emulated.ns).toBe(4);
    expect(r.device.stats()).toMatchObject({ ioctls: 2, commands: 2, syncs: 2, 'emulated.commands': 1, 'emulated.invalidations': 1, 'emulated.syncs': 1 });
    expect(Object.keys(r.device.stats()).filter((k) => k.endsWith('bqlContended'))).toEqual(['bqlContended']);
  });

  it('follows a single vSMMU too: the emulated instance is vSMMU 1, and its queue stops on its own errors only', async () => {
    const r = rig('single');
    // A stage-2 TLBI is illegal on the stage-1-only emulated SMMU: its queue stops there.
    expect((await r.issue(1, [tlbiS12Vmall({ vmid: 1 })])).msi).toEqual([]);
    expect(Q.consErr(await r.cons(1))).toBe(Q.CERROR.ILL);
    // The accelerated vSMMU's queue is another queue: it runs on, broadcasting to both pSMMUs.
    expect((await r.issue(0, [tlbi(1)])).msi).toHaveLength(1);
    expect(r.ioctls).toEqual(r.viommus);
    expect(Q.consErr(await r.cons(0))).toBe(Q.CERROR.NONE);
    expect(r.device.stats()).toMatchObject({ 'emulated.errors': 1, errors: 0 });
  });

  it('ignores MMIO past the emulated instance, as any unclaimed MMIO', async () => {
    const r = rig('per-psmmu');
    const before = r.device.stats();
    expect((await r.issue(3, [tlbi(1)])).msi).toEqual([]);
    expect(r.ioctls).toEqual([]);
    expect(r.device.stats()).toEqual(before);
  });
});
