import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { CMD_SIZE, cmdSync, encodeCommand, tlbiNhAsid, tlbiNhVa, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import { EVENT } from '../../services/formats/smmu/structures.js';
import { PhysicalCmdq } from '../../services/psmmu/cmdq.js';
import { EventQueue } from '../../services/psmmu/events.js';
import { Iotlb } from '../../worker-pool/iotlb.js';
import { psmmuMetrics, type PsmmuState, type VcmdqDepth } from '../../services/psmmu/metrics.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { parsePrometheus, value } from '../helpers/prometheus.js';

function commands(...cmds: SmmuCommand[]): Buffer {
  const b = Buffer.alloc(cmds.length * CMD_SIZE);
  cmds.forEach((c, i) => encodeCommand(c, b, i * CMD_SIZE));
  return b;
}

/** One run of a pSMMU: a real command queue and event queue, the rest as the run would report it. */
function run(): { cmdq: PhysicalCmdq; events: EventQueue; state: PsmmuState; depths: VcmdqDepth[]; vcmdqOpcodes: Float64Array } {
  const cmdq = new PhysicalCmdq(4, Iotlb.create(64));
  const events = new EventQueue();
  const depths: VcmdqDepth[] = [];
  const vcmdqOpcodes = new Float64Array(256);
  const state: PsmmuState = {
    cmdqOpcodes: cmdq.byOpcode,
    vcmdqOpcodes,
    events: events.byType,
    vevents: () => 0,
    translations: () => ({ hits: 0, misses: 0 }),
    cmdqEntries: () => Q.used(cmdq.prod, cmdq.cons, cmdq.log2),
    cmdqPeak: () => cmdq.peak,
    vcmdqDepths: () => depths,
    workerThreads: () => (depths.length > 0 ? 1 : 0),
  };
  return { cmdq, events, state, depths, vcmdqOpcodes };
}

async function scrape(registry: Registry): Promise<ReturnType<typeof parsePrometheus>['samples']> {
  return parsePrometheus(await registry.metrics()).samples;
}

describe('pSMMU metrics: commands by opcode, events, queue depths', () => {
  it('counts the commands the CMDQ executed by opcode, and keeps them across runs', async () => {
    const registry = new Registry();
    const m = psmmuMetrics(registry);
    const r1 = run();
    m.attach(r1.state);
    r1.cmdq.write(commands(tlbiNhVa({ vmid: 1, asid: 2, va: 0x1000n }), tlbiNhVa({ vmid: 1, asid: 2, va: 0x2000n }), cmdSync()));
    r1.cmdq.consume();
    let s = await scrape(registry);
    expect(value(s, 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'TLBI_NH_VA' })).toBe(2);
    expect(value(s, 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'CMD_SYNC' })).toBe(1);
    expect(value(s, 'vmmsim_psmmu_cmdq_entries')).toBe(0);
    expect(value(s, 'vmmsim_psmmu_cmdq_peak_entries')).toBe(3);
    m.detach(r1.state);

    // The next run counts from zero in its own queue; the process's totals go on.
    const r2 = run();
    m.attach(r2.state);
    r2.cmdq.write(commands(tlbiNhAsid({ vmid: 1, asid: 2 }), cmdSync()));
    r2.cmdq.consume();
    r2.vcmdqOpcodes[0x12] = 5;
    s = await scrape(registry);
    expect(value(s, 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'TLBI_NH_VA' })).toBe(2);
    expect(value(s, 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'TLBI_NH_ASID' })).toBe(1);
    expect(value(s, 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'CMD_SYNC' })).toBe(2);
    expect(value(s, 'vmmsim_psmmu_commands_total', { queue: 'vcmdq', opcode: 'TLBI_NH_VA' })).toBe(5);
    // The peak is the process's: the first run's 3 stays above this run's 2.
    expect(value(s, 'vmmsim_psmmu_cmdq_peak_entries')).toBe(3);
  });

  it('shows a CMDQ stopped on an illegal command as entries left in the queue', async () => {
    const registry = new Registry();
    const m = psmmuMetrics(registry);
    const r = run();
    m.attach(r.state);
    const bad = Buffer.alloc(CMD_SIZE);
    bad[0] = 0x7f; // no such opcode
    r.cmdq.write(Buffer.concat([commands(tlbiNhAsid({ vmid: 1, asid: 1 })), bad, commands(cmdSync())]));
    r.cmdq.consume();
    expect(r.cmdq.halted).toBe(true);
    const s = await scrape(registry);
    expect(value(s, 'vmmsim_psmmu_cmdq_entries')).toBe(2);
    expect(value(s, 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'TLBI_NH_ASID' })).toBe(1);
    expect(value(s, 'vmmsim_psmmu_commands_total', { queue: 'cmdq', opcode: 'CMD_SYNC' })).toBeUndefined();
  });

  it('counts event records by type and reports VCMDQ depths per queue and per worker', async () => {
    const registry = new Registry();
    const m = psmmuMetrics(registry);
    const r = run();
    m.attach(r.state);
    r.events.record(EVENT.F_TRANSLATION, 0x108, 0x1000, false);
    r.events.record(EVENT.F_TRANSLATION, 0x108, 0x2000, false);
    r.depths.push({ queue: 'vcmdq-0.0.0', worker: 0, entries: 3 }, { queue: 'vcmdq-0.0.1', worker: 0, entries: 1 }, { queue: 'vcmdq-1.0.0', worker: 1, entries: 0 });
    const s = await scrape(registry);
    expect(value(s, 'vmmsim_psmmu_events_total', { type: 'F_TRANSLATION' })).toBe(2);
    expect(value(s, 'vmmsim_psmmu_vcmdq_entries', { queue: 'vcmdq-0.0.0' })).toBe(3);
    expect(value(s, 'vmmsim_psmmu_vcmdq_entries', { queue: 'vcmdq-1.0.0' })).toBe(0);
    expect(value(s, 'vmmsim_worker_pool_pending_commands', { worker: '0' })).toBe(4);
    expect(value(s, 'vmmsim_worker_pool_pending_commands', { worker: '1' })).toBe(0);
    expect(value(s, 'vmmsim_worker_pool_threads')).toBe(1);
    m.detach(r.state);
    const after = await scrape(registry);
    // Between runs the live gauges are empty; the counts stay.
    expect(value(after, 'vmmsim_psmmu_vcmdq_entries', { queue: 'vcmdq-0.0.0' })).toBeUndefined();
    expect(value(after, 'vmmsim_worker_pool_threads')).toBe(0);
    expect(value(after, 'vmmsim_psmmu_events_total', { type: 'F_TRANSLATION' })).toBe(2);
  });
});
