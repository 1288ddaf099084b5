/**
 * What provenance adds to the data path's messages (part of `npm run bench -- transport`): the
 * encoded size, and the time to encode and decode, of the largest reply of a strict nested-smmuv3
 * unmap (KVM's reply to the guest's trapped CMDQ_PROD write, which carries every hop and hold below
 * it) with and without its step counts, and of one operation of a guest's timeline to the controller.
 * The messages are the ones `vmmsim explain --model nested-smmuv3 --op unmap` shows: eight steps on
 * the path, two holds (the VMM's lock, the pSMMU's CMDQ), four links each way.
 */
import type * as grpc from '@grpc/grpc-js';
import { performance } from 'node:perf_hooks';
import type { Batch, Batch__Output } from '../services/runtime/generated/vmmsim/v1/Batch.js';
import type { Envelope } from '../services/runtime/generated/vmmsim/v1/Envelope.js';
import type { StartReply, StartReply__Output } from '../services/runtime/generated/vmmsim/v1/StartReply.js';
import type { TimedOp } from '../services/runtime/generated/vmmsim/v1/TimedOp.js';
import { protos } from '../services/runtime/proto.js';
import { loadProfile, profileCosts } from '../services/cost/profile.js';
import { StepTable, decodeProvenance, encodeProvenance, pack } from '../services/cost/step-vector.js';

export interface WireCost {
  /** Encoded bytes without and with provenance, and what it adds. */
  bytes: { without: number; with: number; added: number };
  /** Encode + decode of one message, the fastest of 40 rounds, in microseconds. */
  codecUs: { without: number; with: number; added: number };
}

/** Packed counts of named steps, indexed as a run of the default profile indexes them. */
function packed(steps: Record<string, number>): number[] {
  const table = new StepTable(profileCosts(loadProfile('arm64-kunpeng920')));
  const v = table.zero();
  for (const [name, n] of Object.entries(steps)) v[table.indexOf(name)] = n;
  return pack(v);
}

/** What KVM and everything below it charged for the unmap, and the holds' counts (explain's tree). */
const TRAP = { 'exit.mmio_trap': 1, 'exit.to_user': 1 };
const TO_CMDQ = { ...TRAP, 'vmm.vsmmu_cmd': 1, 'ioctl.syscall': 1, 'kernel.hwpt_cmd': 1, 'kernel.cmdq_insert': 2 };
const IN_CMDQ = { 'smmu.cmd_exec': 1, 'smmu.sync': 1 };
const IN_BQL = { 'vmm.vsmmu_cmd': 2, 'ioctl.syscall': 1, 'kernel.hwpt_cmd': 1, 'kernel.cmdq_insert': 2, ...IN_CMDQ };
const ALL = { ...TRAP, ...IN_BQL };
/** The reply's provenance: the path's counts, then each hold's (in the reply's order: the pSMMU's, then the VMM's). */
const STEPS = packed(ALL);
const HOLDS = [
  { at: packed(TO_CMDQ), own: packed(IN_CMDQ) },
  { at: packed(TRAP), own: packed(IN_BQL) },
];
const PROVENANCE = encodeProvenance(STEPS, HOLDS);

function reply(provenance: boolean): Envelope {
  const t = 1_700_000_000_000;
  const hops = [[1, 2], [2, 3], [3, 4], [4, 5], [5, 4], [4, 3], [3, 2], [2, 1]].map(([from, to], i) => ({ from, to, sentNs: t + i * 20_000, receivedNs: t + i * 20_000 + 9_000 }));
  const holds = [
    { resource: 'psmmu-0.cmdq', atNs: 2751, ns: 1000 },
    { resource: 'qemu-0.bql', atNs: 2306, ns: 1625 },
  ];
  return {
    correlationId: 48_211, opId: 4_242, kind: 'MMIO_WRITE', reply: true, status: 0, payload: Buffer.alloc(24, 7), guestMemory: [],
    modeledNs: 3_981, hops, holds, ...(provenance ? { provenance: PROVENANCE } : {}),
  };
}

function timedOp(provenance: boolean): TimedOp {
  return {
    op: 1, thread: 0, startNs: 8_123_456, ns: 4_061, measuredNs: 812_345, holdResource: [0, 1], holdAtNs: [2_306, 2_751], holdNs: [1_625, 1_000],
    // The ids of the interned vectors (a run has a handful, sent once in StartReply.step_vectors).
    ...(provenance ? { steps: 3, holdSteps: [4, 5, 6, 7] } : {}),
  };
}

/**
 * Encode + decode time of two messages, interleaved in many short rounds; each is the fastest of its
 * rounds: a round the machine's other work interrupted only ever runs slower, so the fastest is the
 * codec's own cost (a median still moved by 2x on a loaded 2-core machine).
 */
function codec<T>(encode: (m: T) => Buffer, decode: (b: Buffer) => unknown, a: T, b: T, iterations: number): { a: number; b: number } {
  const rounds = 40;
  const per = Math.max(1, Math.floor(iterations / rounds));
  const ta: number[] = [];
  const tb: number[] = [];
  const time = (m: T): number => {
    const t0 = performance.now();
    for (let i = 0; i < per; i++) decode(encode(m));
    return ((performance.now() - t0) * 1000) / per;
  };
  time(a);
  time(b);
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) {
      ta.push(time(a));
      tb.push(time(b));
    } else {
      tb.push(time(b));
      ta.push(time(a));
    }
  }
  return { a: Math.min(...ta), b: Math.min(...tb) };
}

function cost(sizes: { without: number; with: number }, us: { a: number; b: number }): WireCost {
  const r = (x: number): number => Math.round(x * 1000) / 1000;
  return {
    bytes: { without: sizes.without, with: sizes.with, added: sizes.with - sizes.without },
    codecUs: { without: r(us.a), with: r(us.b), added: r(us.b - us.a) },
  };
}

/** The provenance cost of a data-path reply (as a one-envelope Batch) and of a timeline entry. */
export function provenanceWire(iterations = 50_000): { reply: WireCost; timelineOp: WireCost } {
  const p = protos();
  const open = p.link.vmmsim.v1.Link.service.Open as grpc.MethodDefinition<Batch, Batch__Output>;
  const start = p.control.vmmsim.v1.Control.service.Start as grpc.MethodDefinition<unknown, StartReply__Output>;
  // With provenance, the sender builds the blob and the receiver reads it back (OpContext's part).
  const encBatch = (e: Envelope): Buffer => open.requestSerialize({ envelopes: [e.provenance ? { ...e, provenance: encodeProvenance(STEPS, HOLDS) } : e] });
  const decBatch = (b: Buffer): unknown => {
    const batch = open.requestDeserialize(b) as unknown as Batch__Output;
    const env = batch.envelopes[0];
    return env && env.provenance.length > 0 ? decodeProvenance(env.provenance, env.holds.length) : batch;
  };
  const encStart = (t: TimedOp): Buffer => (start.responseSerialize as (m: StartReply) => Buffer)({ timeline: [t] });
  const decStart = (b: Buffer): unknown => start.responseDeserialize(b);
  const plain = reply(false);
  const withSteps = reply(true);
  const replyCost = cost({ without: encBatch(plain).length, with: encBatch(withSteps).length }, codec(encBatch, decBatch, plain, withSteps, iterations));
  const op = timedOp(false);
  const opWith = timedOp(true);
  const opCost = cost({ without: encStart(op).length, with: encStart(opWith).length }, codec(encStart, decStart, op, opWith, iterations));
  return { reply: replyCost, timelineOp: opCost };
}
