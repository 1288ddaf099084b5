/**
 * What one Link message may ask of a role, checked on the encoded bytes before protobufjs decodes
 * them: decoding is where a hostile batch costs (4 M tiny envelopes in 16 MB are 4 M objects, and
 * V8 gives up in the garbage collector), so the count is taken by walking the wire format, which
 * allocates nothing. A legitimate batch is what one sender had ready at one flush: a few hundred
 * envelopes under the heaviest open-loop load, each with a short hop list.
 */
export const MAX_ENVELOPES_PER_BATCH = 4096;
/** Hops an operation has taken so far: a path crosses at most a handful of links each way. */
export const MAX_HOPS_PER_ENVELOPE = 64;
/** Guest-memory ranges one request carries (queue slots, a TCE list page, a virtqueue chain). */
export const MAX_RANGES_PER_ENVELOPE = 64;
/** Resource holds a reply reports from below (a request carries none). */
export const MAX_HOLDS_PER_ENVELOPE = 1024;
/**
 * vmmsim explain's trace events in one envelope. Only a reply carries them (replies are read
 * without these limits), so a request carrying more is refused as any other oversized one.
 */
export const MAX_EVENTS_PER_ENVELOPE = 1024;

// Field numbers of proto/vmmsim/v1/link.proto.
const BATCH_ENVELOPES = 1;
const ENVELOPE_GUEST_MEMORY = 7;
const ENVELOPE_HOPS = 9;
const ENVELOPE_HOLDS = 10;
const LEN = 2;

/**
 * A reason the message is refused, or undefined when it is within the limits. Malformed bytes are
 * left to the decoder, which refuses them itself.
 */
export function batchOverLimits(buf: Uint8Array): string | undefined {
  let envelopes = 0;
  let at = 0;
  const end = buf.length;
  while (at < end) {
    const tag = readVarint(buf, at, end);
    if (!tag) return undefined;
    at = tag.next;
    const field = Math.floor(tag.value / 8);
    const wire = tag.value & 7;
    const skip = skipField(buf, at, end, wire);
    if (skip === undefined) return undefined;
    if (field === BATCH_ENVELOPES && wire === LEN) {
      envelopes += 1;
      if (envelopes > MAX_ENVELOPES_PER_BATCH) return `more than ${MAX_ENVELOPES_PER_BATCH} envelopes in one batch`;
      const len = readVarint(buf, at, end) as { value: number; next: number };
      const why = envelopeOverLimits(buf, len.next, len.next + len.value);
      if (why) return `envelope ${envelopes - 1}: ${why}`;
    }
    at = skip;
  }
  return undefined;
}

function envelopeOverLimits(buf: Uint8Array, start: number, end: number): string | undefined {
  let ranges = 0;
  let hops = 0;
  let holds = 0;
  let at = start;
  while (at < end) {
    const tag = readVarint(buf, at, end);
    if (!tag) return undefined;
    at = tag.next;
    const field = Math.floor(tag.value / 8);
    const wire = tag.value & 7;
    const next = skipField(buf, at, end, wire);
    if (next === undefined) return undefined;
    if (wire === LEN) {
      if (field === ENVELOPE_GUEST_MEMORY && ++ranges > MAX_RANGES_PER_ENVELOPE) return `more than ${MAX_RANGES_PER_ENVELOPE} guest-memory ranges`;
      if (field === ENVELOPE_HOPS && ++hops > MAX_HOPS_PER_ENVELOPE) return `more than ${MAX_HOPS_PER_ENVELOPE} hops`;
      if (field === ENVELOPE_HOLDS && ++holds > MAX_HOLDS_PER_ENVELOPE) return `more than ${MAX_HOLDS_PER_ENVELOPE} holds`;
    }
    at = next;
  }
  return undefined;
}

/** A varint at `at` (at most 53 bits are kept, as lengths and tags need), or undefined if truncated. */
function readVarint(buf: Uint8Array, at: number, end: number): { value: number; next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (at + i >= end) return undefined;
    const b = buf[at + i] as number;
    value += (b & 0x7f) * scale;
    scale *= 128;
    if ((b & 0x80) === 0) return { value, next: at + i + 1 };
  }
  return undefined;
}

/** Where the field whose value starts at `at` ends, or undefined if it runs past `end`. */
function skipField(buf: Uint8Array, at: number, end: number, wire: number): number | undefined {
  switch (wire) {
    case 0: {
      const v = readVarint(buf, at, end);
      return v?.next;
    }
    case 1:
      return at + 8 <= end ? at + 8 : undefined;
    case LEN: {
      const len = readVarint(buf, at, end);
      if (!len) return undefined;
      const next = len.next + len.value;
      return next <= end ? next : undefined;
    }
    case 5:
      return at + 4 <= end ? at + 4 : undefined;
    default:
      return undefined;
  }
}
