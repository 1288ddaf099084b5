import { describe, expect, it } from 'vitest';
import { loadProfile, profileCosts } from '../../services/cost/profile.js';
import { CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import type { Topology__Output } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { createLogger } from '../../services/runtime/logger.js';
import { PhysMemory } from '../../services/machine/memory.js';
import { decodeMigrateRequest, encodeMigrateReply } from '../../services/formats/migration.js';
import { OpContext, type CallReply } from '../../services/runtime/op-context.js';
import { EndpointTable, type Endpoint } from '../../services/runtime/topology.js';
import type { Kind } from '../../services/runtime/transport/link.js';
import type { DmaApi, GuestDevice, GuestKernel } from '../../services/guest/driver.js';
import { MigrationStep } from '../../services/guest/migration.js';
import { runWorkload, type WorkloadSpec } from '../../services/guest/workload.js';

const costs = new CostTable(profileCosts(loadProfile('arm64-kunpeng920')));
const log = createLogger({ role: 'test' }, 'silent');

/** A DMA API whose operations cost more on higher CPUs, so the vCPUs' clocks drift apart. */
class FakeDma implements DmaApi {
  readonly guestCommands = 0;
  migratedTo: number[] | undefined;
  private next = 0x1000_0000;

  async map(ctx: OpContext, cpu: number, _d: GuestDevice, _pa: number, pages: number): Promise<number> {
    ctx.charge('guest.pte_write', cpu + 1);
    const iova = this.next;
    this.next += pages * 4096;
    return iova;
  }

  async unmap(ctx: OpContext, cpu: number): Promise<number> {
    ctx.charge('guest.pte_write', cpu + 1);
    return 0;
  }

  async drain(): Promise<void> {}
  close(): void {}

  migrated(hwQueues: readonly number[]): void {
    this.migratedTo = [...hwQueues];
  }
}

type Request = { peer: string; kind: Kind; destVcmdqs: number | undefined };

/** A context whose calls reach a VMM that answers VM_MIGRATE with `reply`, keeping what was sent. */
class VmmContext extends OpContext {
  constructor(
    opId: number,
    modeledNs: number,
    private readonly requests: Request[],
    private readonly reply: CallReply,
  ) {
    super(opId, modeledNs, costs, new Map());
  }

  override async call(peer: string, kind: Kind, payload: Buffer): Promise<CallReply> {
    this.requests.push({ peer, kind, destVcmdqs: decodeMigrateRequest(payload)?.destVcmdqs });
    return this.reply;
  }
}

class Vmm {
  readonly requests: Request[] = [];
  constructor(private readonly reply: CallReply) {}

  context(opId: number, modeledNs: number): OpContext {
    return new VmmContext(opId, modeledNs, this.requests, this.reply);
  }
}

function kernelFor(vmm: Vmm, vm = 0): GuestKernel {
  const self: Endpoint = { id: 1, role: 'guest', index: vm, name: `guest-${vm}`, address: '', pid: 0, host: '' };
  const topology = {
    runId: 'unit', model: 'nested-smmuv3-vcmdq', dma: 'strict', seed: 1, endpoints: [self], devices: [{ vm, psmmu: 0, vsid: 8, psid: 0x108 }], costsNs: {},
    workload: null, vmids: [1], deadlineMs: 1000, vsmmu: 'per-psmmu', ramDir: '', device: { dmaRate: 0, lingerMs: 0, lingerShare: 0, iotlbEntries: 8, ringBuffers: 0 },
    vcmdqsPerVsmmu: 2, dispatch: 'broadcast', vmidPolicy: 'per-s2-parent', guest: { flushQueue: 'per-cpu', tceHcalls: 'indirect' }, vmm: { hwptInvalidate: 'per-command' },
  } as unknown as Topology__Output;
  return {
    env: { self, topology, endpoints: new EndpointTable([self]), costs, log, peers: ['kvm'], newContext: (opId, ns) => vmm.context(opId, ns) },
    ram: new PhysMemory(),
    devices: [{ index: 0, vsid: 8, vsmmu: 0 }],
    vcpuNs: [],
    background: () => undefined,
    timer: async () => undefined,
    setup: async () => undefined,
  };
}

function spec(w: Partial<WorkloadSpec>): WorkloadSpec {
  return {
    kind: 'dma-map-benchmark', threads: 2, granulePages: 1, ops: 10, durationSec: 0, rate: 0, arrivals: 'constant', dwellUs: 0, gapUs: 0, trace: '', timeScale: 1,
    queueDepth: 1, packetBytes: 1500, migration: { atOp: 8, destVcmdqs: 1, fallback: 'vmm' }, virtioMem: null, ...w,
  };
}

async function run(w: Partial<WorkloadSpec>, reply: CallReply = { status: 0, payload: encodeMigrateReply([1]), guestMemory: [] }) {
  const vmm = new Vmm(reply);
  const kernel = kernelFor(vmm);
  const dma = new FakeDma();
  const ws = spec(w);
  const step = MigrationStep.forGuest(kernel, dma, kernel.env.endpoints, ws);
  if (!step) throw new Error('no step');
  const r = await runWorkload({ kernel, dma, coherent: dma, stats: step.stats, w: ws, step });
  return { r, step, dma, vmm, timeline: step.stats.takeTimeline().timeline, ops: step.stats.opReports() };
}

describe('the live-migration step of a guest', () => {
  it('stops each vCPU after its share of atOp operations, migrates once, and resumes them together', async () => {
    const { step, dma, vmm, timeline, ops } = await run({});
    expect(vmm.requests).toEqual([{ peer: 'kvm', kind: 'VM_MIGRATE', destVcmdqs: 1 }]);
    expect(dma.migratedTo).toEqual([1]);
    expect(step.counters).toEqual({ migrations: 1, hwQueuesBefore: 2, hwQueuesAfter: 1, hwQueueRecreateNs: 0, migrationNs: 0 });
    expect(ops.map((o) => [o.op, Number(o.count)])).toEqual([['map@before', 4], ['unmap@before', 4], ['map@after', 6], ['unmap@after', 6]]);
    // Each thread: its 4 operations before, then 6 after, starting at the same modeled instant.
    const names = ops.map((o) => o.op);
    const byThread = [0, 1].map((t) => timeline.filter((e) => e.thread === t));
    for (const ops of byThread) expect(ops.map((e) => names[Number(e.op)]?.endsWith('@before'))).toEqual([true, true, true, true, false, false, false, false, false, false]);
    const endBefore = byThread.map((ops) => Number(ops[3]?.startNs ?? 0) + Number(ops[3]?.ns ?? 0));
    expect(endBefore[0]).toBeLessThan(endBefore[1] as number);
    for (const ops of byThread) expect(Number(ops[4]?.startNs)).toBe(Math.max(...endBefore));
  });

  it('a thread that runs out of operations first does not hold the others', async () => {
    // 3 iterations on 3 threads: shares of atOp 4 are 2, 1, 1 operations; every thread has 2.
    const { step, ops } = await run({ threads: 3, ops: 3, migration: { atOp: 4, destVcmdqs: 0, fallback: 'vmm' } });
    expect(step.counters.migrations).toBe(1);
    expect(ops.map((o) => [o.op, Number(o.count)])).toEqual([['map@before', 3], ['unmap@before', 1], ['map@after', 0], ['unmap@after', 2]]);
  });

  it('a step past the end of the workload never comes: no migration and nothing after', async () => {
    const { step, vmm, ops } = await run({ migration: { atOp: 1000, destVcmdqs: 0, fallback: 'vmm' } });
    expect(vmm.requests).toEqual([]);
    expect(step.counters).toEqual({ migrations: 0, hwQueuesBefore: 2, hwQueuesAfter: 2, hwQueueRecreateNs: 0, migrationNs: 0 });
    expect(ops.map((o) => o.op)).toEqual(['map@before', 'unmap@before']);
  });

  it('a refused migration fails the run', async () => {
    await expect(run({}, { status: -Errno.EINVAL, payload: Buffer.alloc(0), guestMemory: [] })).rejects.toThrow(/refused the migration \(EINVAL\)/);
  });

  it('only VM 0 migrates, and only when atOp is set', () => {
    const vmm = new Vmm({ status: 0, payload: Buffer.alloc(0), guestMemory: [] });
    const dma = new FakeDma();
    expect(MigrationStep.forGuest(kernelFor(vmm, 1), dma, new EndpointTable([]), spec({}))).toBeUndefined();
    expect(MigrationStep.forGuest(kernelFor(vmm, 0), dma, new EndpointTable([]), spec({ migration: { atOp: 0, destVcmdqs: 1, fallback: 'vmm' } }))).toBeUndefined();
    expect(MigrationStep.forGuest(kernelFor(vmm, 0), dma, new EndpointTable([]), spec({ migration: null }))).toBeUndefined();
  });
});
