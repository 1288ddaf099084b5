/**
 * The Link service's message (vmmsim.v1.Batch, proto/vmmsim/v1/link.proto) encoded and decoded by
 * hand, in protobuf's wire format: what protobufjs through proto-loader does per message (fromObject
 * and toObject copies, a writer of linked operations, enum lookups) cost 4-16 us on a reply carrying
 * 8 hops, more than a bare grpc-js hop itself; this costs under 1 us. The bytes are protobuf's, so
 * any gRPC peer (reflection, grpcurl, the Python interop test) reads and writes the same messages.
 * Decoding a request enforces the batch limits (wire-limits.ts) as it goes, so an oversized batch
 * is refused after at most the limits' worth of objects; a reply is decoded without them, as
 * protobufjs did (a lazy flush's reply gathers every hop of its hundreds of invalidations). tests/unit/batch-codec.test.ts holds it to protobufjs
 * field by field, and fails when link.proto gains a field this file does not know.
 */
import type { Batch, Batch__Output } from '../generated/vmmsim/v1/Batch.js';
import type { Envelope, Envelope__Output } from '../generated/vmmsim/v1/Envelope.js';
import type { Hold__Output } from '../generated/vmmsim/v1/Hold.js';
import type { Hop__Output } from '../generated/vmmsim/v1/Hop.js';
import { Kind, type Kind__Output } from '../generated/vmmsim/v1/Kind.js';
import type { MemoryRange__Output } from '../generated/vmmsim/v1/MemoryRange.js';
import type { TraceEvent, TraceEvent__Output } from '../generated/vmmsim/v1/TraceEvent.js';
import { MAX_ENVELOPES_PER_BATCH, MAX_EVENTS_PER_ENVELOPE, MAX_HOLDS_PER_ENVELOPE, MAX_HOPS_PER_ENVELOPE, MAX_RANGES_PER_ENVELOPE } from './wire-limits.js';

/** The fields of each message this codec reads and writes, by number (the test compares them with link.proto). */
export const CODEC_FIELDS = {
  'vmmsim.v1.Batch': [1],
  'vmmsim.v1.Envelope': [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
  'vmmsim.v1.MemoryRange': [1, 2],
  'vmmsim.v1.Hop': [1, 2, 3, 4],
  'vmmsim.v1.Hold': [1, 2, 3],
  'vmmsim.v1.TraceEvent': [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
} as const;

/** Kind names in the order of their numbers (link.proto numbers them 0..N without gaps). */
const KIND_NAMES = Object.values(Kind) as Kind__Output[];
const KIND_NUMBERS = new Map<string, number>(KIND_NAMES.map((k, i) => [k, i]));

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Encoding: sizes first, then one buffer written front to back.

function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 5;
  let x = Math.floor(v / 0x800000000);
  while (x > 0) {
    n += 1;
    x = Math.floor(x / 128);
  }
  return n;
}

/** A non-negative integer below 2^53 as a varint at `at`; returns the next position. */
function putVarint(buf: Buffer, at: number, v: number): number {
  while (v >= 0x80) {
    buf[at++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[at++] = v;
  return at;
}

const u32 = (x: unknown): number => Number(x ?? 0) >>> 0;
const num = (x: unknown): number => (typeof x === 'number' ? x : Number(x ?? 0));
const zigzag = (n: number): number => ((n << 1) ^ (n >> 31)) >>> 0;

function bytesOf(x: unknown): Buffer {
  if (x === undefined || x === null) return EMPTY;
  if (Buffer.isBuffer(x)) return x;
  if (x instanceof Uint8Array) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  return Buffer.from(String(x), 'base64');
}

function kindNumber(k: unknown): number {
  if (typeof k === 'number') return k >>> 0;
  return KIND_NUMBERS.get(String(k ?? '')) ?? 0;
}

/** A TraceEvent's fields (vmmsim explain), resolved once for its size and its bytes. */
interface PreparedEvent {
  what: string;
  whatBytes: number;
  name: string;
  nameBytes: number;
  times: number;
  kind: number;
  status: number;
  atNs: number;
  endNs: number;
  offPath: boolean;
  depth: number;
  label: string;
  labelBytes: number;
  size: number;
}

/** An envelope's fields, resolved once for its size and its bytes. */
interface Prepared {
  env: Envelope;
  payload: Buffer;
  ranges: { gpa: number; data: Buffer; size: number }[];
  holds: { resource: string; bytes: number; size: number }[];
  provenance: Buffer;
  /** Absent on every envelope but the one operation vmmsim explain traces. */
  events: PreparedEvent[] | undefined;
  size: number;
}

function prepareEvent(ev: TraceEvent): PreparedEvent {
  const what = ev.what ?? '';
  const name = ev.name ?? '';
  const whatBytes = Buffer.byteLength(what);
  const nameBytes = Buffer.byteLength(name);
  const times = u32(ev.times);
  const kind = kindNumber(ev.kind);
  const status = zigzag(Number(ev.status ?? 0) | 0);
  const atNs = num(ev.atNs);
  const endNs = num(ev.endNs);
  const offPath = Boolean(ev.offPath);
  const depth = u32(ev.depth);
  const label = ev.label ?? '';
  const labelBytes = Buffer.byteLength(label);
  const size =
    (whatBytes ? 1 + varintSize(whatBytes) + whatBytes : 0) +
    (nameBytes ? 1 + varintSize(nameBytes) + nameBytes : 0) +
    (times ? 1 + varintSize(times) : 0) +
    (kind ? 1 + varintSize(kind) : 0) +
    (status ? 1 + varintSize(status) : 0) +
    (atNs ? 9 : 0) +
    (endNs ? 9 : 0) +
    (offPath ? 2 : 0) +
    (depth ? 1 + varintSize(depth) : 0) +
    (labelBytes ? 1 + varintSize(labelBytes) + labelBytes : 0);
  return { what, whatBytes, name, nameBytes, times, kind, status, atNs, endNs, offPath, depth, label, labelBytes, size };
}

function hopSize(from: number, to: number, sent: number, received: number): number {
  return (from ? 1 + varintSize(from) : 0) + (to ? 1 + varintSize(to) : 0) + (sent ? 9 : 0) + (received ? 9 : 0);
}

function prepare(env: Envelope): Prepared {
  const payload = bytesOf(env.payload);
  let size = 0;
  const corr = u32(env.correlationId);
  const op = u32(env.opId);
  const kind = kindNumber(env.kind);
  const status = zigzag(Number(env.status ?? 0) | 0);
  if (corr) size += 1 + varintSize(corr);
  if (op) size += 1 + varintSize(op);
  if (kind) size += 1 + varintSize(kind);
  if (env.reply) size += 2;
  if (status) size += 1 + varintSize(status);
  if (payload.length) size += 1 + varintSize(payload.length) + payload.length;
  const ranges: Prepared['ranges'] = [];
  for (const r of env.guestMemory ?? []) {
    const gpa = num(r.gpa);
    const data = bytesOf(r.data);
    const inner = (gpa ? 1 + varintSize(gpa) : 0) + (data.length ? 1 + varintSize(data.length) + data.length : 0);
    ranges.push({ gpa, data, size: inner });
    size += 1 + varintSize(inner) + inner;
  }
  if (num(env.modeledNs)) size += 9;
  for (const h of env.hops ?? []) {
    const inner = hopSize(u32(h.from), u32(h.to), num(h.sentNs), num(h.receivedNs));
    size += 1 + varintSize(inner) + inner;
  }
  const holds: Prepared['holds'] = [];
  for (const h of env.holds ?? []) {
    const resource = h.resource ?? '';
    const bytes = Buffer.byteLength(resource);
    const inner = (bytes ? 1 + varintSize(bytes) + bytes : 0) + (num(h.atNs) ? 9 : 0) + (num(h.ns) ? 9 : 0);
    holds.push({ resource, bytes, size: inner });
    size += 1 + varintSize(inner) + inner;
  }
  const provenance = bytesOf(env.provenance);
  if (provenance.length) size += 1 + varintSize(provenance.length) + provenance.length;
  if (env.branched) size += 2;
  if (env.explain) size += 2;
  let events: PreparedEvent[] | undefined;
  if (env.explained && env.explained.length > 0) {
    events = env.explained.map(prepareEvent);
    for (const ev of events) size += 1 + varintSize(ev.size) + ev.size;
  }
  return { env, payload, ranges, holds, provenance, events, size };
}

/** A one-byte tag and a varint value; returns the next position. */
function putTagged(buf: Buffer, at: number, tag: number, v: number): number {
  buf[at] = tag;
  return putVarint(buf, at + 1, v);
}

function putDouble(buf: Buffer, at: number, tag: number, v: number): number {
  buf[at++] = tag;
  buf.writeDoubleLE(v, at);
  return at + 8;
}

function putString(buf: Buffer, at: number, tag: number, s: string, bytes: number): number {
  buf[at++] = tag;
  at = putVarint(buf, at, bytes);
  return at + buf.write(s, at, 'utf8');
}

function writeEvent(buf: Buffer, at: number, ev: PreparedEvent): number {
  buf[at++] = (14 << 3) | LEN;
  at = putVarint(buf, at, ev.size);
  if (ev.whatBytes) at = putString(buf, at, (1 << 3) | LEN, ev.what, ev.whatBytes);
  if (ev.nameBytes) at = putString(buf, at, (2 << 3) | LEN, ev.name, ev.nameBytes);
  if (ev.times) at = putTagged(buf, at, (3 << 3) | VARINT, ev.times);
  if (ev.kind) at = putTagged(buf, at, (4 << 3) | VARINT, ev.kind);
  if (ev.status) at = putTagged(buf, at, (5 << 3) | VARINT, ev.status);
  if (ev.atNs) at = putDouble(buf, at, (6 << 3) | I64, ev.atNs);
  if (ev.endNs) at = putDouble(buf, at, (7 << 3) | I64, ev.endNs);
  if (ev.offPath) {
    buf[at++] = (8 << 3) | VARINT;
    buf[at++] = 1;
  }
  if (ev.depth) at = putTagged(buf, at, (9 << 3) | VARINT, ev.depth);
  if (ev.labelBytes) at = putString(buf, at, (10 << 3) | LEN, ev.label, ev.labelBytes);
  return at;
}

function writeEnvelope(buf: Buffer, at: number, p: Prepared): number {
  const env = p.env;
  const corr = u32(env.correlationId);
  const op = u32(env.opId);
  const kind = kindNumber(env.kind);
  const status = zigzag(Number(env.status ?? 0) | 0);
  if (corr) at = putTagged(buf, at, (1 << 3) | VARINT, corr);
  if (op) at = putTagged(buf, at, (2 << 3) | VARINT, op);
  if (kind) at = putTagged(buf, at, (3 << 3) | VARINT, kind);
  if (env.reply) {
    buf[at++] = (4 << 3) | VARINT;
    buf[at++] = 1;
  }
  if (status) at = putTagged(buf, at, (5 << 3) | VARINT, status);
  if (p.payload.length) {
    buf[at++] = (6 << 3) | LEN;
    at = putVarint(buf, at, p.payload.length);
    at += p.payload.copy(buf, at);
  }
  for (const r of p.ranges) {
    buf[at++] = (7 << 3) | LEN;
    at = putVarint(buf, at, r.size);
    if (r.gpa) at = putTagged(buf, at, (1 << 3) | VARINT, r.gpa);
    if (r.data.length) {
      buf[at++] = (2 << 3) | LEN;
      at = putVarint(buf, at, r.data.length);
      at += r.data.copy(buf, at);
    }
  }
  const modeled = num(env.modeledNs);
  if (modeled) at = putDouble(buf, at, (8 << 3) | I64, modeled);
  for (const h of env.hops ?? []) {
    const from = u32(h.from);
    const to = u32(h.to);
    const sent = num(h.sentNs);
    const received = num(h.receivedNs);
    buf[at++] = (9 << 3) | LEN;
    at = putVarint(buf, at, hopSize(from, to, sent, received));
    if (from) at = putTagged(buf, at, (1 << 3) | VARINT, from);
    if (to) at = putTagged(buf, at, (2 << 3) | VARINT, to);
    if (sent) at = putDouble(buf, at, (3 << 3) | I64, sent);
    if (received) at = putDouble(buf, at, (4 << 3) | I64, received);
  }
  const hs = env.holds ?? [];
  for (let i = 0; i < p.holds.length; i++) {
    const h = p.holds[i] as Prepared['holds'][number];
    const src = hs[i] as NonNullable<Envelope['holds']>[number];
    buf[at++] = (10 << 3) | LEN;
    at = putVarint(buf, at, h.size);
    if (h.bytes) {
      buf[at++] = (1 << 3) | LEN;
      at = putVarint(buf, at, h.bytes);
      at += buf.write(h.resource, at, 'utf8');
    }
    const atNs = num(src.atNs);
    const ns = num(src.ns);
    if (atNs) at = putDouble(buf, at, (2 << 3) | I64, atNs);
    if (ns) at = putDouble(buf, at, (3 << 3) | I64, ns);
  }
  if (p.provenance.length) {
    buf[at++] = (11 << 3) | LEN;
    at = putVarint(buf, at, p.provenance.length);
    at += p.provenance.copy(buf, at);
  }
  if (env.branched) {
    buf[at++] = (12 << 3) | VARINT;
    buf[at++] = 1;
  }
  if (env.explain) {
    buf[at++] = (13 << 3) | VARINT;
    buf[at++] = 1;
  }
  if (p.events) for (const ev of p.events) at = writeEvent(buf, at, ev);
  return at;
}

/** A Batch as protobuf bytes. */
export function encodeBatch(batch: Batch): Buffer {
  const envs = batch.envelopes ?? [];
  const prepared = envs.map(prepare);
  let size = 0;
  for (const p of prepared) size += 1 + varintSize(p.size) + p.size;
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  for (const p of prepared) {
    buf[at++] = (1 << 3) | LEN;
    at = putVarint(buf, at, p.size);
    at = writeEnvelope(buf, at, p);
  }
  if (at !== size) throw new Error(`batch codec: wrote ${at} bytes of ${size}`);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Decoding: one pass, plain objects with proto3 defaults, bytes as views of the message.

/** Malformed bytes: the message is refused as protobufjs would refuse it (the stream fails). */
export class BatchFormatError extends Error {}

/** A batch over the limits: why (the stream is ended with RESOURCE_EXHAUSTED, see link.ts). */
export class BatchLimitError extends Error {}

class Reader {
  at: number;

  constructor(
    readonly buf: Buffer,
    at: number,
    readonly end: number,
  ) {
    this.at = at;
  }

  varint(): number {
    const buf = this.buf;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.end) throw new BatchFormatError('truncated varint');
      const b = buf[this.at++] as number;
      if (i < 8) value += (b & 0x7f) * scale;
      scale *= 128;
      if ((b & 0x80) === 0) return value;
    }
    throw new BatchFormatError('varint longer than 10 bytes');
  }

  double(): number {
    if (this.at + 8 > this.end) throw new BatchFormatError('truncated double');
    const v = this.buf.readDoubleLE(this.at);
    this.at += 8;
    return v;
  }

  /** The end of a length-delimited field that starts here. */
  span(): number {
    const len = this.varint();
    const end = this.at + len;
    if (end > this.end) throw new BatchFormatError('length past the end of the message');
    return end;
  }

  bytes(): Buffer {
    const end = this.span();
    const b = this.buf.subarray(this.at, end);
    this.at = end;
    return b;
  }

  skip(wire: number): void {
    switch (wire) {
      case VARINT:
        this.varint();
        return;
      case I64:
        if (this.at + 8 > this.end) throw new BatchFormatError('truncated fixed64');
        this.at += 8;
        return;
      case LEN:
        this.at = this.span();
        return;
      case I32:
        if (this.at + 4 > this.end) throw new BatchFormatError('truncated fixed32');
        this.at += 4;
        return;
      default:
        throw new BatchFormatError(`wire type ${wire}`);
    }
  }
}

const u32of = (v: number): number => v % 0x100000000;
const sint32of = (v: number): number => {
  const u = u32of(v);
  return ((u >>> 1) ^ -(u & 1)) | 0;
};

function readHop(r: Reader, end: number): Hop__Output {
  const h: Hop__Output = { from: 0, to: 0, sentNs: 0, receivedNs: 0 };
  while (r.at < end) {
    const tag = r.varint();
    const f = Math.floor(tag / 8);
    const w = tag & 7;
    if (f === 1 && w === VARINT) h.from = u32of(r.varint());
    else if (f === 2 && w === VARINT) h.to = u32of(r.varint());
    else if (f === 3 && w === I64) h.sentNs = r.double();
    else if (f === 4 && w === I64) h.receivedNs = r.double();
    else r.skip(w);
  }
  return h;
}

function readRange(r: Reader, end: number): MemoryRange__Output {
  const m: MemoryRange__Output = { gpa: 0, data: EMPTY };
  while (r.at < end) {
    const tag = r.varint();
    const f = Math.floor(tag / 8);
    const w = tag & 7;
    if (f === 1 && w === VARINT) m.gpa = r.varint();
    else if (f === 2 && w === LEN) m.data = r.bytes();
    else r.skip(w);
  }
  return m;
}

function readHold(r: Reader, end: number): Hold__Output {
  const h: Hold__Output = { resource: '', atNs: 0, ns: 0 };
  while (r.at < end) {
    const tag = r.varint();
    const f = Math.floor(tag / 8);
    const w = tag & 7;
    if (f === 1 && w === LEN) {
      const b = r.bytes();
      h.resource = b.toString('utf8');
    } else if (f === 2 && w === I64) h.atNs = r.double();
    else if (f === 3 && w === I64) h.ns = r.double();
    else r.skip(w);
  }
  return h;
}

function readEvent(r: Reader, end: number): TraceEvent__Output {
  const ev: TraceEvent__Output = { what: '', name: '', times: 0, kind: 'KIND_UNSPECIFIED', status: 0, atNs: 0, endNs: 0, offPath: false, depth: 0, label: '' };
  while (r.at < end) {
    const tag = r.varint();
    const f = Math.floor(tag / 8);
    const w = tag & 7;
    if (f === 1 && w === LEN) ev.what = r.bytes().toString('utf8');
    else if (f === 2 && w === LEN) ev.name = r.bytes().toString('utf8');
    else if (f === 3 && w === VARINT) ev.times = u32of(r.varint());
    else if (f === 4 && w === VARINT) ev.kind = KIND_NAMES[u32of(r.varint())] ?? 'KIND_UNSPECIFIED';
    else if (f === 5 && w === VARINT) ev.status = sint32of(r.varint());
    else if (f === 6 && w === I64) ev.atNs = r.double();
    else if (f === 7 && w === I64) ev.endNs = r.double();
    else if (f === 8 && w === VARINT) ev.offPath = r.varint() !== 0;
    else if (f === 9 && w === VARINT) ev.depth = u32of(r.varint());
    else if (f === 10 && w === LEN) ev.label = r.bytes().toString('utf8');
    else r.skip(w);
  }
  return ev;
}

function readEnvelope(r: Reader, end: number, limited: boolean): Envelope__Output {
  const e: Envelope__Output = {
    correlationId: 0,
    opId: 0,
    kind: 'KIND_UNSPECIFIED',
    reply: false,
    status: 0,
    payload: EMPTY,
    guestMemory: [],
    modeledNs: 0,
    hops: [],
    holds: [],
    provenance: EMPTY,
    branched: false,
    explain: false,
    explained: [],
  };
  while (r.at < end) {
    const tag = r.varint();
    const f = Math.floor(tag / 8);
    const w = tag & 7;
    switch (f) {
      case 1:
        if (w !== VARINT) break;
        e.correlationId = u32of(r.varint());
        continue;
      case 2:
        if (w !== VARINT) break;
        e.opId = u32of(r.varint());
        continue;
      case 3:
        if (w !== VARINT) break;
        // An unknown number reads as unspecified: no handler serves it.
        e.kind = KIND_NAMES[u32of(r.varint())] ?? 'KIND_UNSPECIFIED';
        continue;
      case 4:
        if (w !== VARINT) break;
        e.reply = r.varint() !== 0;
        continue;
      case 5:
        if (w !== VARINT) break;
        e.status = sint32of(r.varint());
        continue;
      case 6:
        if (w !== LEN) break;
        e.payload = r.bytes();
        continue;
      case 7: {
        if (w !== LEN) break;
        if (limited && e.guestMemory.length >= MAX_RANGES_PER_ENVELOPE) throw new BatchLimitError(`more than ${MAX_RANGES_PER_ENVELOPE} guest-memory ranges`);
        const sub = r.span();
        e.guestMemory.push(readRange(r, sub));
        r.at = sub;
        continue;
      }
      case 8:
        if (w !== I64) break;
        e.modeledNs = r.double();
        continue;
      case 9: {
        if (w !== LEN) break;
        if (limited && e.hops.length >= MAX_HOPS_PER_ENVELOPE) throw new BatchLimitError(`more than ${MAX_HOPS_PER_ENVELOPE} hops`);
        const sub = r.span();
        e.hops.push(readHop(r, sub));
        r.at = sub;
        continue;
      }
      case 10: {
        if (w !== LEN) break;
        if (limited && e.holds.length >= MAX_HOLDS_PER_ENVELOPE) throw new BatchLimitError(`more than ${MAX_HOLDS_PER_ENVELOPE} holds`);
        const sub = r.span();
        e.holds.push(readHold(r, sub));
        r.at = sub;
        continue;
      }
      case 11:
        if (w !== LEN) break;
        e.provenance = r.bytes();
        continue;
      case 12:
        if (w !== VARINT) break;
        e.branched = r.varint() !== 0;
        continue;
      case 13:
        if (w !== VARINT) break;
        e.explain = r.varint() !== 0;
        continue;
      case 14: {
        if (w !== LEN) break;
        if (limited && e.explained.length >= MAX_EVENTS_PER_ENVELOPE) throw new BatchLimitError(`more than ${MAX_EVENTS_PER_ENVELOPE} explained events`);
        const sub = r.span();
        e.explained.push(readEvent(r, sub));
        r.at = sub;
        continue;
      }
      default:
        break;
    }
    r.skip(w);
  }
  return e;
}

/**
 * A Batch from protobuf bytes. Throws BatchFormatError for bytes that are not a Batch and, when
 * `limited` (a request: the default), BatchLimitError for a batch over the limits.
 */
export function decodeBatch(buf: Buffer, limited = true): Batch__Output {
  const r = new Reader(buf, 0, buf.length);
  const envelopes: Envelope__Output[] = [];
  while (r.at < r.end) {
    const tag = r.varint();
    const f = Math.floor(tag / 8);
    const w = tag & 7;
    if (f === 1 && w === LEN) {
      if (limited && envelopes.length >= MAX_ENVELOPES_PER_BATCH) throw new BatchLimitError(`more than ${MAX_ENVELOPES_PER_BATCH} envelopes in one batch`);
      const sub = r.span();
      try {
        envelopes.push(readEnvelope(r, sub, limited));
      } catch (err) {
        if (err instanceof BatchLimitError) throw new BatchLimitError(`envelope ${envelopes.length}: ${err.message}`);
        throw err;
      }
      r.at = sub;
    } else r.skip(w);
  }
  return { envelopes };
}
