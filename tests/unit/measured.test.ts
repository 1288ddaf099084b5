import { describe, expect, it } from 'vitest';
import type { MachineState } from '../../services/controller/machine.js';
import { combineMachine } from '../../services/controller/machine.js';
import { bootstrapMedianCi, estimate, measuredSection, median, spread, trialFigures, type TrialFigures } from '../../services/controller/measured.js';
import { NOTE_CODES, machineNotes, measuredNotes } from '../../services/controller/measured-notes.js';
import { measuredOf } from '../../services/controller/measured-table.js';
import { notesBlock } from '../../services/controller/notes.js';
import { comparisonTable, sweepTable } from '../../services/controller/table.js';
import { autoWarmup } from '../../services/controller/session.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { StartReply__Output } from '../../services/runtime/generated/vmmsim/v1/StartReply.js';
import { loadProfile, profileCosts } from '../../services/cost/profile.js';
import { CostTable } from '../../services/cost/steps.js';
import { OpStats } from '../../services/guest/op-stats.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { EndpointTable } from '../../services/runtime/topology.js';
import type { Hop } from '../../services/runtime/transport/link.js';
import { fixtureRun, mapUnmap } from '../helpers/results-fixture.js';

const quiet: MachineState = { cores: 2, loadAvgStart: [0.5, 0.5, 0.5], loadAvgEnd: [0.6, 0.5, 0.5], seconds: 3, othersCores: 0.05, ownCores: 0.8, stealPct: 0 };

function trial(p50: number, opsPerSec: number): TrialFigures {
  return {
    ops: [{ op: 'unmap', count: 100, p50Us: p50, p99Us: p50 * 3, meanUs: p50 * 1.2, settling: { afterOps: 0, p50FirstUs: NaN, p50RestUs: p50, warmupPerThread: 0, late: false } }],
    hops: [
      { from: 'guest-0', to: 'kvm', fromRole: 'guest', toRole: 'kvm', count: 100, p50Us: p50 / 8, p99Us: p50 / 2 },
      { from: 'kvm', to: 'guest-0', fromRole: 'kvm', toRole: 'guest', count: 100, p50Us: p50 / 7, p99Us: p50 / 2 },
    ],
    opsPerSec,
    inPathFloorUs: undefined,
    warmupOps: 10,
    residence: [
      { op: 'unmap', process: 'guest-0', visitsPerOp: 2, count: 100, p50Us: p50 / 4, p99Us: p50 },
      { op: 'unmap', process: 'crossings', visitsPerOp: 0, count: 100, p50Us: p50 / 2, p99Us: p50 },
      { op: 'unmap', process: 'kvm', visitsPerOp: 1, count: 100, p50Us: p50 / 4, p99Us: p50 },
    ],
  };
}

describe('measured estimates', () => {
  it('gives the median of the trials and a seeded bootstrap interval: the same values give the same interval', () => {
    const xs = [410, 402, 455, 398, 431];
    const a = bootstrapMedianCi(xs, 'op.unmap.p50Us', 7);
    expect(a).toEqual(bootstrapMedianCi(xs, 'op.unmap.p50Us', 7));
    expect(a).not.toBeNull();
    const [lo, hi] = a as [number, number];
    expect(lo).toBeGreaterThanOrEqual(398);
    expect(hi).toBeLessThanOrEqual(455);
    expect(lo).toBeLessThanOrEqual(median(xs));
    expect(hi).toBeGreaterThanOrEqual(median(xs));
    expect(estimate(xs, 'x', 7)).toMatchObject({ value: 410, trials: xs });
    // One trial has no interval.
    expect(estimate([410], 'x', 7).ci95).toBeNull();
  });

  it('measures the trials\' spread as (max - min) over the median', () => {
    expect(spread(estimate([100, 110, 105], 'x', 1))).toBeCloseTo(10 / 105, 6);
    expect(spread(estimate([100], 'x', 1))).toBe(0);
  });

  it('leaves warm-up operations out of the figures and counts them', () => {
    const reply = {
      ops: [{ op: 'map' }, { op: 'unmap' }],
      timeline: [
        { op: 1, measuredNs: 9e9, warmup: true },
        { op: 1, measuredNs: 400_000, warmup: false },
        { op: 1, measuredNs: 420_000, warmup: false },
        { op: 0, measuredNs: 10_000, warmup: false },
      ],
      hops: [{ from: 'guest-0', to: 'kvm', measuredUs: { count: 3 }, steadyUs: { count: 2, p50: 40, p99: 80 } }],
      floorUs: { count: 2, p50: 30 },
    } as unknown as StartReply__Output;
    const f = trialFigures([reply], (n) => n.replace(/-\d+$/, ''), 1000);
    expect(f.warmupOps).toBe(1);
    expect(f.ops.find((o) => o.op === 'unmap')).toMatchObject({ count: 2, p50Us: 400 });
    expect(f.hops[0]).toMatchObject({ from: 'guest-0', to: 'kvm', count: 2, p50Us: 40 });
    expect(f.inPathFloorUs).toBe(30);
  });

  it('puts hops and their transition together: request and reply of exit, a round trip per kind', () => {
    const m = measuredSection({ trials: [trial(400, 1000), trial(420, 990)], seed: 1, warmupOps: 10, placement: null, floor: undefined, machine: quiet });
    expect(m.trials).toBe(2);
    expect(m.warmupOpsExcluded).toBe(20);
    expect(m.hops.map((h) => [h.transition, h.direction])).toEqual([['exit', 'request'], ['exit', 'reply']]);
    expect(m.transitions).toEqual([expect.objectContaining({ kind: 'exit', pairs: ['guest-0>kvm'] })]);
    expect(m.transitions[0]?.roundTripP50Us.value).toBeCloseTo(median([400 / 8 + 400 / 7, 420 / 8 + 420 / 7]), 2);
  });
});

describe('notes on the measured figures', () => {
  it('says when trials disagree by more than 10%, and not when they agree', () => {
    const apart = measuredSection({ trials: [trial(400, 1000), trial(520, 1000)], seed: 1, warmupOps: 0, placement: null, floor: undefined, machine: quiet });
    expect(measuredNotes(apart).map((n) => n.code)).toEqual([NOTE_CODES.trialsDisagree]);
    expect(measuredNotes(apart)[0]?.text).toMatch(/unmap p50 by 26%/);
    const close = measuredSection({ trials: [trial(400, 1000), trial(410, 1010)], seed: 1, warmupOps: 0, placement: null, floor: undefined, machine: quiet });
    expect(measuredNotes(close)).toEqual([]);
  });

  it('says when trials got faster one after another (a warm-up still under way), not when they only scatter', () => {
    const section = (p50s: number[]): Parameters<typeof measuredNotes>[0] =>
      measuredSection({ trials: p50s.map((p) => trial(p, 1000)), seed: 1, warmupOps: 50, placement: null, floor: undefined, machine: quiet });
    const falling = measuredNotes(section([1875, 1540, 1308]));
    expect(falling.map((n) => n.code)).toEqual([NOTE_CODES.trialsDisagree, NOTE_CODES.stillWarming]);
    expect(falling[1]?.text).toMatch(/unmap p50 1875\.0 -> 1540\.0 -> 1308\.0 us.*raise --warmup/);
    // Scattered, or falling by less than 10% in all: no warm-up note.
    expect(measuredNotes(section([1500, 1300, 1400])).map((n) => n.code)).not.toContain(NOTE_CODES.stillWarming);
    expect(measuredNotes(section([1000, 980, 960])).map((n) => n.code)).not.toContain(NOTE_CODES.stillWarming);
    // Two trials say nothing of a trend.
    expect(measuredNotes(section([1800, 1300])).map((n) => n.code)).not.toContain(NOTE_CODES.stillWarming);
  });

  it('says when the machine was busy: other processes\' CPU, the load average, stolen time', () => {
    expect(machineNotes(quiet)).toEqual([]);
    const busy = machineNotes({ ...quiet, othersCores: 1.7, loadAvgEnd: [3.5, 2, 1], stealPct: 6 });
    expect(busy.map((n) => n.code)).toEqual([NOTE_CODES.machineBusy, NOTE_CODES.loadAverage, NOTE_CODES.steal]);
    expect(busy[0]?.text).toMatch(/1\.70 of its 2 cores/);
  });

  it('combines trials\' machine samples: load from the first start to the last end, CPU use weighted by time', () => {
    const c = combineMachine([{ ...quiet, seconds: 1, othersCores: 0 }, { ...quiet, seconds: 3, othersCores: 1, loadAvgEnd: [2, 1, 1] }]);
    expect(c.othersCores).toBe(0.75);
    expect(c.loadAvgEnd).toEqual([2, 1, 1]);
  });

  it('prints a note about the machine once for a comparison, whatever each run measured, and one about trials per model', () => {
    const busy = { code: NOTE_CODES.machineBusy, text: 'busy' };
    const text = notesBlock([
      { model: 'none', notes: [busy] },
      { model: 'nested-smmuv3', notes: [{ ...busy, text: 'busier' }, { code: NOTE_CODES.trialsDisagree, text: 'apart' }] },
    ]);
    expect(text.split('\n')).toEqual(['', 'notes:', `  ${NOTE_CODES.machineBusy}: busy`, `  ${NOTE_CODES.trialsDisagree} (nested-smmuv3): apart`, '']);
  });
});

describe('the two clocks in the terminal tables', () => {
  const runs = [
    fixtureRun({ model: 'none', ops: mapUnmap(2000, {}, 0.5), hops: [] }),
    fixtureRun({
      model: 'nested-smmuv3',
      ops: [
        { op: 'map', count: 2000, measuredP50Us: 12.5, modeledP50Ns: 110 },
        { op: 'unmap', count: 2000, transitions: { exit: 1, user: 1, ioctl: 1, hw: 1 }, measuredP50Us: 777.77, modeledP50Ns: 4061 },
      ],
      hops: [{ from: 'guest-0', to: 'kvm', p50Us: 55.5 }],
    }),
  ];

  it('leads with the modeled figures and keeps the measured ones in a section of their own, no ratio column mixing them', () => {
    const text = comparisonTable(runs);
    const at = text.indexOf('Measured:');
    expect(text.startsWith('Modeled:')).toBe(true);
    expect(at).toBeGreaterThan(0);
    const modeled = text.slice(0, at);
    // No measured latency (the fixture's 777.77 us p50) and no "measured / modeled" ratio in the modeled part.
    expect(modeled).not.toContain('777');
    expect(modeled).not.toMatch(/x \/ /);
    expect(text.slice(at)).toContain('777.8');
    expect(text.slice(at)).toMatch(/host floor/);
  });

  it('reads an older document\'s measured fields when a run has no measured section', () => {
    const m = measuredOf(runs[1] as NonNullable<(typeof runs)[number]>);
    expect(m.trials).toBe(1);
    expect(m.ops.find((o) => o.op === 'unmap')?.p50Us).toEqual({ value: 777.77, ci95: null, trials: [777.77] });
    expect(m.hops[0]).toMatchObject({ transition: 'exit', direction: 'request' });
  });

  it('splits a sweep the same way', () => {
    const text = sweepTable(['topology.psmmus'], runs.map((r, i) => ({ ...r, point: { 'topology.psmmus': i + 1 } })));
    expect(text.indexOf('Measured')).toBeGreaterThan(text.indexOf('modeled us'));
  });
});

describe('the warm-up by default', () => {
  it('is 50 operations per thread, or a tenth of a thread\'s share when that is less', () => {
    expect(autoWarmup(resolveScenario({ workload: { ops: 2000, threads: 1 } }))).toBe(50);
    expect(autoWarmup(resolveScenario({ workload: { ops: 40, threads: 4 } }))).toBe(2);
    expect(autoWarmup(resolveScenario({ workload: { ops: 0, durationSec: 2 } }))).toBe(50);
  });
});

describe('the warm-up of an application workload', () => {
  it('counts per vCPU, not per lane: a vCPU\'s first operations are left out whichever lanes they ran on', () => {
    const costs = new CostTable(profileCosts(loadProfile('arm64-kunpeng920')));
    const stats = new OpStats(new EndpointTable([]), { warmupOps: 3 });
    stats.declare('map');
    // vCPU 0 keeps 4 lanes (replay threads 0..3) in flight; its first 3 operations are the warm-up.
    for (let i = 0; i < 8; i++) stats.record('map', 1000, new OpContext(1 + i, 0, costs, new Map()), i % 4, 0, false, 0);
    const { timeline } = stats.takeTimeline();
    expect(timeline.map((e) => e.warmup === true)).toEqual([true, true, true, false, false, false, false, false]);
    expect(timeline.map((e) => e.thread)).toEqual([0, 1, 2, 3, 0, 1, 2, 3]);
  });
});

describe('where a measured operation\'s time went', () => {
  // guest-0 (1) -> kvm (2) -> qemu-0 (3) and back, then guest-0 -> kvm and back: a PROD write and a CONS read.
  const endpoints = new EndpointTable([
    { id: 1, name: 'guest-0', role: 'guest', index: 0 },
    { id: 2, name: 'kvm', role: 'kvm', index: 0 },
    { id: 3, name: 'qemu-0', role: 'qemu', index: 0 },
  ] as never);
  const costs = new CostTable(profileCosts(loadProfile('arm64-kunpeng920')));
  const hop = (from: number, to: number, sentNs: number, receivedNs: number): Hop => ({ from, to, sentNs, receivedNs });

  it('gives each process the time from receiving a hop to sending the next, the crossings their sum, and the guest the rest', () => {
    const stats = new OpStats(endpoints, { warmupOps: 0 });
    const ctx = new OpContext(1, 0, costs, new Map());
    // Crossings 10 + 20 + 30 + 10 + 10 + 10 = 90; kvm holds 5 + 7 + 3 = 15 (three entries); qemu 40; the guest, in 200: 55.
    ctx.trace.push(hop(1, 2, 1000, 1010), hop(2, 3, 1015, 1035), hop(3, 2, 1075, 1105), hop(2, 1, 1112, 1122), hop(1, 2, 1130, 1140), hop(2, 1, 1143, 1153));
    stats.record('unmap', 200, ctx, 0, 0);
    const rows = stats.residenceReports();
    const by = (p: string): (typeof rows)[number] | undefined => rows.find((r) => r.process === p);
    expect(rows.map((r) => r.process)).toEqual(['guest-0', 'kvm', 'qemu-0']);
    expect(by('kvm')?.steadyUs?.p50).toBeCloseTo(0.015, 9);
    expect(by('kvm')?.visitsPerOp).toBe(3);
    expect(by('qemu-0')?.steadyUs?.p50).toBeCloseTo(0.04, 9);
    expect(by('guest-0')?.steadyUs?.p50).toBeCloseTo(0.055, 9);
    expect(by('guest-0')?.visitsPerOp).toBe(3);
    expect(by('kvm')?.crossingsUs?.p50).toBeCloseTo(0.09, 9);
  });

  it('leaves out warm-up operations, operations whose hops branch and hops to processes it does not know', () => {
    const stats = new OpStats(endpoints, { warmupOps: 1 });
    const warm = new OpContext(1, 0, costs, new Map());
    warm.trace.push(hop(1, 2, 1000, 1010), hop(2, 1, 1020, 1030));
    stats.record('unmap', 50, warm, 0, 0);
    // Two requests in flight at once (a fan-out): the second hop does not leave from where the first arrived.
    const branched = new OpContext(2, 0, costs, new Map());
    branched.trace.push(hop(2, 3, 1000, 1010), hop(2, 3, 1001, 1011), hop(3, 2, 1020, 1030), hop(3, 2, 1021, 1031));
    stats.record('unmap', 50, branched, 0, 0);
    // A reply naming a process the topology has not: no row for it (a peer cannot grow the records).
    const stranger = new OpContext(3, 0, costs, new Map());
    stranger.trace.push(hop(1, 2, 1000, 1010), hop(2, 99, 1015, 1025), hop(99, 2, 1030, 1040), hop(2, 1, 1045, 1055));
    stats.record('unmap', 80, stranger, 0, 0);
    expect(stats.residenceReports()).toEqual([]);
  });

  it('puts the guests\' rows together per process and the crossings on a row of their own, and into the measured section', () => {
    const t = trial(800, 1000);
    const m = measuredSection({ trials: [t, trial(880, 900)], seed: 1, warmupOps: 10, placement: null, floor: undefined, machine: quiet });
    expect(m.residence?.map((r) => r.process)).toEqual(['guest-0', 'crossings', 'kvm']);
    expect(m.residence?.find((r) => r.process === 'crossings')?.p50Us.trials).toEqual([400, 440]);
  });
});
