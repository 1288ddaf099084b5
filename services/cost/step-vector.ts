/**
 * What a modeled time is made of: the count of each cost step on an operation's critical path, as a
 * vector over the run's step table. An operation's modeled time is that vector's dot product with
 * the step costs, so the same vector tells where every nanosecond went (results.json breakdown[])
 * and what the operation would cost under another cost table (re-pricing, docs/cost-model.md).
 *
 * In a process a vector is dense (a Float64Array, one slot per step of the table); on the wire it is
 * packed: ascending (step index, count) pairs of its non-zero slots, as repeated uint32. An
 * operation charges a handful of the ~35 steps, so a packed vector is a few bytes.
 */

/**
 * Step counts by step index of a StepTable. A plain array, not a Float64Array: every operation's
 * context makes one and copies it at each call and hold, and a typed array of the ~40 steps is
 * above V8's on-heap limit (64 bytes), so each was a malloc'd backing store and an ArrayBuffer to
 * sweep, per hop (`npm run bench -- path --cpu-prof`). Counts are small integers: the array stays
 * V8's packed small-integer kind. The functions below read any array-like of numbers.
 */
export type StepCounts = number[];
/** What the functions below read: a StepCounts, or any array-like of numbers (a Float64Array). */
type Counts = ArrayLike<number>;
/** What addPacked writes into. */
type MutableCounts = { length: number; [i: number]: number };

/** Ascending (step index, count) pairs of the non-zero counts of a vector. */
export type PackedSteps = readonly number[];

/** The largest count a packed vector carries (uint32 on the wire). */
const MAX_COUNT = 0xffff_ffff;

/**
 * The steps of one run and their costs, by index. Indexes are the positions of the step names in
 * sorted order of the run's cost table (Topology.costs_ns): every process of the run derives the same
 * table from the same map, whatever build it is, so a vector means the same thing everywhere.
 */
export class StepTable {
  readonly names: readonly string[];
  /** Cost of each step in ns, by index. */
  readonly ns: Float64Array;
  private readonly byName: ReadonlyMap<string, number>;

  constructor(costs: Readonly<Record<string, number>>) {
    this.names = Object.keys(costs).sort();
    this.ns = Float64Array.from(this.names, (n) => costs[n] as number);
    this.byName = new Map(this.names.map((n, i) => [n, i]));
  }

  get size(): number {
    return this.names.length;
  }

  /** The index of a step, or -1 when the table has none of that name. */
  indexOf(step: string): number {
    return this.byName.get(step) ?? -1;
  }

  zero(): StepCounts {
    return new Array<number>(this.names.length).fill(0);
  }

  /** Modeled ns of a vector under this table's costs. */
  dot(counts: Counts): number {
    return dot(counts, this.ns);
  }
}

/** Sum of count x cost over the slots, in index order. */
export function dot(counts: Counts, ns: Float64Array): number {
  let s = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] as number;
    if (c !== 0) s += c * (ns[i] as number);
  }
  return s;
}

/** Sum of count x cost of a packed vector. */
export function packedDot(pairs: PackedSteps, ns: Float64Array): number {
  let s = 0;
  for (let k = 0; k + 1 < pairs.length; k += 2) s += (pairs[k + 1] as number) * (ns[pairs[k] as number] ?? 0);
  return s;
}

/** The packed form of a dense vector (its non-zero slots). */
export function pack(counts: Counts): number[] {
  const out: number[] = [];
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] as number;
    if (c === 0) continue;
    if (!(c > 0 && c <= MAX_COUNT && Number.isInteger(c))) throw new Error(`step ${i} counted ${c} times: counts are whole numbers up to ${MAX_COUNT}`);
    out.push(i, c);
  }
  return out;
}

/**
 * Adds a packed vector into a dense one. Pairs naming a step beyond the table (a malformed reply)
 * are refused: a vector must never gain a slot its dot product would not see.
 */
export function addPacked(into: MutableCounts, pairs: PackedSteps): void {
  if (pairs.length % 2 !== 0) throw new Error('packed step counts come in (index, count) pairs');
  for (let k = 0; k < pairs.length; k += 2) {
    const i = pairs[k] as number;
    if (!(i >= 0 && i < into.length)) throw new Error(`step index ${i} is outside the run's ${into.length} steps`);
    into[i] = (into[i] as number) + (pairs[k + 1] as number);
  }
}

/** A dense vector of `size` slots from a packed one. */
export function unpack(pairs: PackedSteps, size: number): StepCounts {
  const out = new Array<number>(size).fill(0);
  addPacked(out, pairs);
  return out;
}

/**
 * The packed difference end - start of two dense vectors, with any slot where end is below start
 * taken as 0 (only when a hold outlived a parallel branch that replaced its counts; the operation is
 * then marked branched). `lower` is called when that happens.
 */
export function packDiff(end: Counts, start: Counts, lower?: () => void): number[] {
  const out: number[] = [];
  for (let i = 0; i < end.length; i++) {
    const d = (end[i] as number) - (start[i] as number);
    if (d > 0) out.push(i, d);
    else if (d < 0) lower?.();
  }
  return out;
}

/** A hold's vectors: the operation's counts when it asked for the resource, and those charged while held. */
export interface HoldSteps {
  at: PackedSteps;
  own: PackedSteps;
}

/**
 * A reply's provenance (Envelope.provenance): the varints of a packed repeated uint32, as protobuf
 * would encode one (the bytes are the same), written here in one piece: a protobuf encoder writes
 * each varint of a repeated field as an operation of its own, which doubled the encoding time of a
 * deep reply. n and n (index, count) pairs of `steps`, then per hold n and n pairs of `at`, m and m
 * pairs of `own`. Empty when there is nothing to say.
 */
export function encodeProvenance(steps: PackedSteps, holds: readonly HoldSteps[]): Buffer {
  if (steps.length === 0 && holds.length === 0) return EMPTY;
  let n = 1 + steps.length;
  for (const h of holds) n += 2 + h.at.length + h.own.length;
  const buf = Buffer.allocUnsafe(n * 5);
  // No closures per call: this runs for every reply of every hop.
  let o = putVector(buf, 0, steps);
  for (const h of holds) {
    o = putVector(buf, o, h.at);
    o = putVector(buf, o, h.own);
  }
  return buf.subarray(0, o);
}

/** A varint at `o`; returns the next position. */
function putVarint(buf: Buffer, o: number, v: number): number {
  while (v > 0x7f) {
    buf[o++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[o++] = v;
  return o;
}

/** A packed vector's pair count and its pairs at `o`; returns the next position. */
function putVector(buf: Buffer, o: number, pairs: PackedSteps): number {
  o = putVarint(buf, o, pairs.length / 2);
  for (let k = 0; k < pairs.length; k++) o = putVarint(buf, o, pairs[k] as number);
  return o;
}

/** Reads provenance varints from `buf`, from `at` on. */
class ProvenanceReader {
  at = 0;

  constructor(private readonly buf: Uint8Array) {}

  get(): number {
    const buf = this.buf;
    let v = 0;
    let scale = 1;
    for (;;) {
      if (this.at >= buf.length) throw new Error('provenance ends in the middle of a vector');
      const b = buf[this.at++] as number;
      v += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return v;
      scale *= 128;
      if (scale > 2 ** 35) throw new Error('provenance holds a varint longer than 32 bits');
    }
  }

  vector(): number[] {
    const n = this.get();
    if (2 * n > this.buf.length - this.at) throw new Error('provenance says a vector has more pairs than it holds');
    const out = new Array<number>(2 * n);
    for (let k = 0; k < 2 * n; k++) out[k] = this.get();
    return out;
  }
}

/**
 * A reply's provenance read back, for a reply with `holds` holds. Bytes that end early, or say more
 * than they hold, are refused (a malformed reply is the sender's bug, never silently a shorter path).
 */
export function decodeProvenance(buf: Uint8Array, holds: number): { steps: number[]; holds: HoldSteps[] } {
  if (buf.length === 0) {
    if (holds > 0) throw new Error(`provenance is empty but the reply holds ${holds} resources`);
    return { steps: [], holds: [] };
  }
  const r = new ProvenanceReader(buf);
  const steps = r.vector();
  const hs: HoldSteps[] = [];
  for (let i = 0; i < holds; i++) hs.push({ at: r.vector(), own: r.vector() });
  if (r.at !== buf.length) throw new Error('provenance has bytes past its last vector');
  return { steps, holds: hs };
}

const EMPTY = Buffer.alloc(0);

/** base + pairs, packed: a vector recorded relative to a later start, made relative to base's start. */
export function rebase(base: Counts, pairs: PackedSteps): number[] {
  if (pairs.length === 0) return pack(base);
  const t: number[] = Array.prototype.slice.call(base);
  addPacked(t, pairs);
  return pack(t);
}

/** a >= b in every slot. */
export function dominates(a: Counts, b: Counts): boolean {
  for (let i = 0; i < a.length; i++) if ((a[i] as number) < (b[i] as number)) return false;
  return true;
}

/**
 * Two branches' vectors are ordered when one holds at least the other's count of every step: then
 * the longer one stays the longer under any non-negative costs, and taking the longest branch gives
 * the same vector whatever the costs (re-pricing is exact).
 */
export function ordered(a: Counts, b: Counts): boolean {
  return dominates(a, b) || dominates(b, a);
}

/**
 * Packed vectors of many operations, each stored once: a run's operations share a few distinct
 * vectors (every strict unmap of one design is the same path), so a timeline names them by id.
 * `flat` is the wire form: each vector as its pair count then its pairs.
 */
export class VectorInterner {
  readonly flat: number[] = [];
  private readonly ids = new Map<string, number>();

  /** The id of a packed vector (ids count from 0 in order of first appearance). */
  id(pairs: PackedSteps): number {
    const key = pairs.join(',');
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.ids.size;
      this.ids.set(key, id);
      this.flat.push(pairs.length / 2, ...pairs);
    }
    return id;
  }
}

/** The packed vectors of an interned list's wire form, by id. A malformed list throws. */
export function uninternVectors(flat: readonly number[]): PackedSteps[] {
  const out: PackedSteps[] = [];
  for (let k = 0; k < flat.length;) {
    const n = flat[k] as number;
    const end = k + 1 + 2 * n;
    if (end > flat.length) throw new Error('interned step vectors end in the middle of a vector');
    out.push(flat.slice(k + 1, end));
    k = end;
  }
  return out;
}
