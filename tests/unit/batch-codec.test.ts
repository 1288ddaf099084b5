import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Batch, Batch__Output } from '../../services/runtime/generated/vmmsim/v1/Batch.js';
import { Kind } from '../../services/runtime/generated/vmmsim/v1/Kind.js';
import { protos } from '../../services/runtime/proto.js';
import { BatchFormatError, BatchLimitError, CODEC_FIELDS, decodeBatch, encodeBatch } from '../../services/runtime/transport/batch-codec.js';
import { LINK_OPEN_PATH } from '../../services/runtime/transport/link.js';
import { MAX_ENVELOPES_PER_BATCH, MAX_EVENTS_PER_ENVELOPE, MAX_HOPS_PER_ENVELOPE } from '../../services/runtime/transport/wire-limits.js';

/**
 * The Link codec by hand against protobufjs (through proto-loader, as the proto defines the
 * messages): every message either writes, the other reads the same; and link.proto has no field
 * the codec does not know (a new field must be added to batch-codec.ts, or it would be dropped).
 */
const protobufjs = protos().link.vmmsim.v1.Link.service.Open;
const definition = protos().definition as unknown as Record<string, { type: { field?: { number: number; name: string }[]; value?: { name: string; number: number }[] } }>;

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const double = fc.double({ noNaN: true, noDefaultInfinity: true });
const bytes = fc.uint8Array({ maxLength: 80 }).map((a) => Buffer.from(a));
const kinds = Object.values(Kind);
const traceEvent = fc.record({
  what: fc.constantFrom('charge', 'call', 'hold', ''),
  name: fc.string({ maxLength: 20 }),
  times: u32,
  kind: fc.constantFrom(...kinds),
  status: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
  atNs: double,
  endNs: double,
  offPath: fc.boolean(),
  depth: u32,
  label: fc.string({ maxLength: 40 }),
});
const envelope = fc.record({
  correlationId: u32,
  opId: u32,
  kind: fc.constantFrom(...kinds),
  reply: fc.boolean(),
  status: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
  payload: bytes,
  guestMemory: fc.array(fc.record({ gpa: fc.integer({ min: 0, max: 2 ** 52 }), data: bytes }), { maxLength: 3 }),
  modeledNs: double,
  hops: fc.array(fc.record({ from: u32, to: u32, sentNs: double, receivedNs: double }), { maxLength: 9 }),
  holds: fc.array(fc.record({ resource: fc.string({ maxLength: 20 }), atNs: double, ns: double }), { maxLength: 3 }),
  provenance: bytes,
  branched: fc.boolean(),
  explain: fc.boolean(),
  explained: fc.array(traceEvent, { maxLength: 4 }),
});
const batch = fc.record({ envelopes: fc.array(envelope, { maxLength: 4 }) });

/** -0 and 0 are the same number on the wire (proto3 leaves a zero out). */
function canonical(b: Batch__Output): unknown {
  return JSON.parse(JSON.stringify(b, (_k, v: unknown) => (Object.is(v, -0) ? 0 : v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? v : v)));
}

describe('the Link batch codec', () => {
  it('reads what protobufjs writes, and protobufjs reads what it writes', () => {
    fc.assert(
      fc.property(batch, (b) => {
        const want = canonical(protobufjs.responseDeserialize(protobufjs.requestSerialize(b as Batch)) as Batch__Output);
        expect(canonical(decodeBatch(protobufjs.requestSerialize(b as Batch)))).toEqual(want);
        expect(canonical(protobufjs.responseDeserialize(encodeBatch(b as Batch)) as Batch__Output)).toEqual(want);
        expect(canonical(decodeBatch(encodeBatch(b as Batch)))).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });

  it('knows every field of the Link messages in link.proto, and the Kind numbers', () => {
    for (const [type, fields] of Object.entries(CODEC_FIELDS)) {
      const declared = (definition[type]?.type.field ?? []).map((f) => f.number).sort((a, b) => a - b);
      expect(declared, `${type}: link.proto declares fields the codec does not write or read (services/runtime/transport/batch-codec.ts)`).toEqual([...fields]);
    }
    const numbers = (definition['vmmsim.v1.Kind']?.type.value ?? []).map((v) => [v.name, v.number]);
    expect(numbers).toEqual(kinds.map((k, i) => [k, i]));
    expect(LINK_OPEN_PATH).toBe(protobufjs.path);
  });

  it('skips fields it does not know and refuses what is not a batch', () => {
    // Field 15 (varint) before the envelope, and fields 30 (varint) and 31 (bytes) inside it.
    const env = Buffer.concat([Buffer.from([0xf0, 0x01, 0x05, 0xfa, 0x01, 0x01, 0xaa]), encodeBatch({ envelopes: [{ opId: 9 }] }).subarray(2)]);
    const withUnknown = Buffer.concat([Buffer.from([0x78, 0x01, 0x0a, env.length]), env]);
    expect(decodeBatch(withUnknown).envelopes[0]?.opId).toBe(9);
    expect(() => decodeBatch(Buffer.from([0x0a, 0x05, 0x08]))).toThrow(BatchFormatError);
    expect(() => decodeBatch(Buffer.from([0x0b]))).toThrow(BatchFormatError);
  });

  it('refuses a batch over the limits while it reads it', () => {
    const many = encodeBatch({ envelopes: Array.from({ length: MAX_ENVELOPES_PER_BATCH + 1 }, () => ({ opId: 1 })) });
    expect(() => decodeBatch(many)).toThrow(BatchLimitError);
    const hops = encodeBatch({ envelopes: [{ hops: Array.from({ length: MAX_HOPS_PER_ENVELOPE + 1 }, () => ({ from: 1, to: 2 })) }] });
    expect(() => decodeBatch(hops)).toThrow(/envelope 0: more than 64 hops/);
    const events = encodeBatch({ envelopes: [{ explained: Array.from({ length: MAX_EVENTS_PER_ENVELOPE + 1 }, () => ({ what: 'charge', times: 1 })) }] });
    expect(() => decodeBatch(events)).toThrow(/envelope 0: more than 1024 explained events/);
    expect(decodeBatch(events, false).envelopes[0]?.explained).toHaveLength(MAX_EVENTS_PER_ENVELOPE + 1);
  });

  it('reads a reply without the request limits, as protobufjs did (a lazy flush gathers hundreds of hops)', () => {
    const hops = encodeBatch({ envelopes: [{ reply: true, hops: Array.from({ length: 4 * MAX_HOPS_PER_ENVELOPE }, () => ({ from: 1, to: 2 })) }] });
    expect(decodeBatch(hops, false).envelopes[0]?.hops).toHaveLength(4 * MAX_HOPS_PER_ENVELOPE);
  });
});
