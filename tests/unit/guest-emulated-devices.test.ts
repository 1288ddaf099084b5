import { describe, expect, it } from 'vitest';
import { cdIpa } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { DeviceRing, SlotState } from '../../services/machine/device-ring.js';
import { emulatedDeviceList } from '../../services/machine/emulated-vsmmu.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { decodeMmio, encodeMmio } from '../../services/formats/kvm-run.js';
import { createLogger } from '../../services/runtime/logger.js';
import { PAGE_SIZE, PhysMemory } from '../../services/machine/memory.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { CMD_SIZE, Opcode, decodeCommand } from '../../services/formats/smmu/commands.js';
import { SMMU_REG, vsmmuMmioBase } from '../../services/formats/smmu/registers.js';
import { decodeCd } from '../../services/formats/smmu/structures.js';
import { EndpointTable, type Endpoint } from '../../services/runtime/topology.js';
import type { LinkClient, OutgoingRequest } from '../../services/runtime/transport/link.js';
import { devices } from '../../services/controller/session.js';
import '../../services/designs/nested-smmuv3/guest.js';
import { deviceOpName, type DmaApi, type GuestDevice, type GuestKernel } from '../../services/guest/driver.js';
import { DESIGNS } from '../../services/designs/registry.js';
import { smmuv3DmaApi } from '../../services/designs/nested-smmuv3/guest.js';

const smmuv3 = smmuv3DmaApi(DESIGNS['nested-smmuv3'].traits);
import { OpStats } from '../../services/guest/op-stats.js';
import { runWorkload, type WorkloadSpec } from '../../services/guest/workload.js';

const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));
const log = createLogger({ role: 'test' }, 'silent');
const self: Endpoint = { id: 1, role: 'guest', index: 0, name: 'guest-0', address: '', pid: 0, host: '' };

/** Two assigned devices, one behind each pSMMU with a vSMMU each, and one emulated device (vSMMU 2). */
const DEVICES: GuestDevice[] = [
  { index: 0, vsid: 0x8, vsmmu: 0 },
  { index: 1, vsid: 0x10, vsmmu: 1 },
  { index: 2, vsid: 0x8008, vsmmu: 2, emulated: true },
];

interface Trap {
  vsmmu: number;
  opcodes: number[];
  asid: number;
}

/**
 * A guest kernel whose kvm link completes every command queue write at once (CONS reads back as
 * the PROD last written, as QEMU consumes inside the PROD trap) and records which vSMMU's
 * CMDQ_PROD it was and what it carried.
 */
function kernelWith(guestDevices: GuestDevice[], dma: 'strict' | 'lazy' = 'strict'): { kernel: GuestKernel; traps: Trap[]; background: string[] } {
  const s = resolveScenario({ topology: { psmmus: 2, vsmmu: 'per-psmmu', emulatedDevices: 1 } });
  const topology = {
    model: 'nested-smmuv3', dma, seed: 1, vsmmu: 'per-psmmu', devices: devices(s), vmids: [1], vmidPolicy: 'per-s2-parent', vcmdqsPerVsmmu: 0,
    emulatedDevices: emulatedDeviceList(1, 1), guest: { flushQueue: 'per-cpu' }, workload: { threads: 1 }, device: { ringBuffers: 0 },
  } as unknown as Topology__Output;
  const traps: Trap[] = [];
  const prods = new Map<number, number>();
  const kvm = {
    request: async (req: OutgoingRequest): Promise<Envelope__Output> => {
      const m = decodeMmio(req.payload);
      if (m && !m.isWrite) {
        // The driver polls CMDQ_CONS after each PROD write: everything written is consumed.
        const v = DEVICES.map((d) => d.vsmmu).find((x) => m.physAddr === vsmmuMmioBase(x) + SMMU_REG.CMDQ_CONS);
        const payload = encodeMmio({ ...m, data: v === undefined ? 0 : (prods.get(v) ?? 0) });
        return { correlationId: 0, opId: 0, kind: req.kind, reply: true, status: 0, payload, guestMemory: [], modeledNs: req.modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [] } as unknown as Envelope__Output;
      }
      const data = Buffer.concat((req.guestMemory ?? []).map((r) => r.data as Buffer));
      const cmds = Array.from({ length: data.length / CMD_SIZE }, (_, i) => decodeCommand(data, i * CMD_SIZE));
      const vsmmu = DEVICES.map((d) => d.vsmmu).find((v) => m?.physAddr === vsmmuMmioBase(v) + SMMU_REG.CMDQ_PROD) ?? -1;
      traps.push({ vsmmu, opcodes: cmds.map((c) => c.opcode), asid: cmds[0]?.fields.asid ?? -1 });
      prods.set(vsmmu, m?.data ?? 0);
      const sync = cmds.at(-1);
      const msi = sync?.opcode === Opcode.CMD_SYNC ? [{ gpa: Number(sync.fields.msiaddr), data: Buffer.alloc(4) }] : [];
      return { correlationId: 0, opId: 0, kind: req.kind, reply: true, status: 0, payload: req.payload, guestMemory: msi, modeledNs: req.modeledNs, hops: [], holds: [], provenance: Buffer.alloc(0), branched: false, explain: false, explained: [] } as unknown as Envelope__Output;
    },
  } as unknown as LinkClient;
  const background: string[] = [];
  const kernel: GuestKernel = {
    env: {
      self, topology, endpoints: new EndpointTable([self]), costs, log, peers: ['kvm'],
      newContext: (opId, modeledNs) => new OpContext(opId, modeledNs, costs, new Map([['kvm', kvm]])),
    },
    ram: new PhysMemory(),
    devices: guestDevices,
    vcpuNs: [0],
    background: (op) => background.push(op),
    setup: async (_op, work) => work(kernel.env.newContext(0, 0)),
    timer: async (op, _at, work) => {
      await work(kernel.env.newContext(0, 0));
      background.push(op);
    },
  };
  return { kernel, traps, background };
}

function nested(kernel: GuestKernel): DmaApi {
  return smmuv3(kernel);
}

describe('the guest\'s arm-smmu-v3 driver with an emulated vSMMU beside the accelerated ones', () => {
  it('gives the emulated device a domain of its own on its own SMMU instance, and counts its commands apart', async () => {
    const { kernel, traps } = kernelWith(DEVICES);
    const api = nested(kernel);
    const asids = DEVICES.map((d) => decodeCd(kernel.ram.read(cdIpa(d.index), 64)).asid);
    expect(new Set(asids).size).toBe(3);
    for (const d of DEVICES) {
      const ctx = kernel.env.newContext(1, 0);
      const iova = await api.map(ctx, 0, d, 0x1_0000_0000, 1);
      expect(await api.unmap(kernel.env.newContext(2, 0), 0, d, iova, 1)).toBe(0);
    }
    // Each unmap's TLBI_NH_VA + CMD_SYNC went to the queue of its device's vSMMU, in its ASID.
    expect(traps).toEqual(DEVICES.map((d, i) => ({ vsmmu: d.vsmmu, opcodes: [Opcode.TLBI_NH_VA, Opcode.CMD_SYNC], asid: asids[i] })));
    expect(api.guestCommands).toBe(2);
    expect(api.emulatedCommands).toBe(1);
  });

  it('lazy: the emulated domain flushes on its own instance, reported as flush@emulated', async () => {
    const { kernel, traps, background } = kernelWith(DEVICES, 'lazy');
    const api = nested(kernel);
    for (const d of DEVICES) {
      const iova = await api.map(kernel.env.newContext(1, 0), 0, d, 0x1_0000_0000, 1);
      await api.unmap(kernel.env.newContext(2, 0), 0, d, iova, 1);
    }
    expect(traps).toEqual([]);
    await api.drain();
    expect(traps.map((t) => [t.vsmmu, t.opcodes[0]])).toEqual(DEVICES.map((d) => [d.vsmmu, Opcode.TLBI_NH_ASID]));
    expect(background).toEqual(['flush', 'flush', 'flush@emulated']);
    expect([api.guestCommands, api.emulatedCommands]).toEqual([2, 1]);
  });
});

/** A DMA API that hands out one IOVA per call and records which device each call was for. */
class RecordingDma implements DmaApi {
  readonly guestCommands = 0;
  readonly calls: string[] = [];
  private next = 0x1_0000_0000;

  async map(_ctx: OpContext, cpu: number, device: GuestDevice): Promise<number> {
    this.calls.push(`map ${cpu}:${device.index}`);
    this.next += PAGE_SIZE;
    return this.next;
  }

  async unmap(_ctx: OpContext, cpu: number, device: GuestDevice): Promise<number> {
    this.calls.push(`unmap ${cpu}:${device.index}`);
    return 0;
  }

  async drain(): Promise<void> {}

  close(): void {}
}

function spec(w: Partial<WorkloadSpec>): WorkloadSpec {
  return { kind: 'dma-map-benchmark', threads: 1, granulePages: 1, ops: 6, durationSec: 0, rate: 0, arrivals: 'constant', dwellUs: 0, gapUs: 0, trace: '', timeScale: 1, queueDepth: 1, migration: null, ...w } as WorkloadSpec;
}

async function runOn(guestDevices: GuestDevice[], w: Partial<WorkloadSpec>): Promise<{ dma: RecordingDma; stats: OpStats; kernel: GuestKernel }> {
  const { kernel } = kernelWith(guestDevices);
  const stats = new OpStats(kernel.env.endpoints);
  const dma = new RecordingDma();
  await runWorkload({ kernel, dma, coherent: dma, stats, w: spec(w) });
  return { dma, stats, kernel };
}

const count = (stats: OpStats, op: string): number => Number(stats.opReports().find((o) => o.op === op)?.count ?? -1);

describe('workloads on a VM with emulated devices beside assigned ones', () => {
  it('has each thread take every device in turn, and reports the emulated device\'s operations apart', async () => {
    const one = await runOn(DEVICES, { ops: 6 });
    expect(one.dma.calls.filter((c) => c.startsWith('map'))).toEqual(['map 0:0', 'map 0:1', 'map 0:2', 'map 0:0', 'map 0:1', 'map 0:2']);
    expect([count(one.stats, 'map'), count(one.stats, 'unmap'), count(one.stats, 'map@emulated'), count(one.stats, 'unmap@emulated')]).toEqual([4, 4, 2, 2]);
    // Two threads start one device apart.
    const two = await runOn(DEVICES, { ops: 6, threads: 2 });
    const of = (cpu: number): string[] => two.dma.calls.filter((c) => c.startsWith(`map ${cpu}:`));
    expect(of(0)).toEqual(['map 0:0', 'map 0:1', 'map 0:2']);
    expect(of(1)).toEqual(['map 1:1', 'map 1:2', 'map 1:0']);
  });

  it('keeps each thread in its own ring slots, whatever device it is on', async () => {
    // Three batches of two requests per thread: thread 0 on devices 0, 1, 2, thread 1 on 1, 2, 0.
    const { kernel } = await runOn(DEVICES, { ops: 12, threads: 2, kind: 'block', queueDepth: 2 });
    // On every device thread 0 used slots 0-1 and thread 1 slots 2-3: never the same slot.
    for (const d of DEVICES) {
      const used = DeviceRing.read(kernel.ram, d.index).flatMap((s, i) => (s.state === SlotState.UNMAPPED ? [i] : []));
      expect(used, `device ${d.index}`).toEqual([0, 1, 2, 3]);
    }
  });

  it('leaves a VM of assigned devices only as it was: thread t on device t mod n', async () => {
    const assigned = DEVICES.slice(0, 2);
    const r = await runOn(assigned, { ops: 4 });
    expect(r.dma.calls.filter((c) => c.startsWith('map'))).toEqual(['map 0:0', 'map 0:0', 'map 0:0', 'map 0:0']);
    expect(r.stats.opReports().map((o) => o.op)).toEqual(['map', 'unmap']);
    expect(deviceOpName('unmap', DEVICES[2] as GuestDevice)).toBe('unmap@emulated');
    expect(deviceOpName('unmap', DEVICES[0] as GuestDevice)).toBe('unmap');
  });
});
