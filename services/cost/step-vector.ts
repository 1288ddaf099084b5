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

/** Step counts by step index of a StepTable. */
export type StepCounts = Float64Array;

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
    return new Float64Array(this.names.length);
  }

  /** Modeled ns of a vector under this table's costs. */
  dot(counts: StepCounts): number {
    return dot(counts, this.ns);
  }
}

/** Sum of count x cost over the slots, in index order. */
export function dot(counts: StepCounts, ns: Float64Array): number {
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
export function pack(counts: StepCounts): number[] {
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
export function addPacked(into: StepCounts, pairs: PackedSteps): void {
  if (pairs.length % 2 !== 0) throw new Error('packed step counts come in (index, count) pairs');
  for (let k = 0; k < pairs.length; k += 2) {
    const i = pairs[k] as number;
    if (!(i >= 0 && i < into.length)) throw new Error(`step index ${i} is outside the run's ${into.length} steps`);
    into[i] = (into[i] as number) + (pairs[k + 1] as number);
  }
}

/** A dense vector of `size` slots from a packed one. */
export function unpack(pairs: PackedSteps, size: number): StepCounts {
  const out = new Float64Array(size);
  addPacked(out, pairs);
  return out;
}

/**
 * The packed difference end - start of two dense vectors, with any slot where end is below start
 * taken as 0 (only when a hold outlived a parallel branch that replaced its counts; the operation is
 * then marked branched). `lower` is called when that happens.
 */
export function packDiff(end: StepCounts, start: StepCounts, lower?: () => void): number[] {
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
  let o = 0;
  const put = (v: number): void => {
    while (v > 0x7f) {
      buf[o++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    buf[o++] = v;
  };
  const vector = (pairs: PackedSteps): void => {
    put(pairs.length / 2);
    for (const x of pairs) put(x);
  };
  vector(steps);
  for (const h of holds) {
    vector(h.at);
    vector(h.own);
  }
  return buf.subarray(0, o);
}

/**
 * A reply's provenance read back, for a reply with `holds` holds. Bytes that end early, or say more
 * than they hold, are refused (a malformed reply is the sender's bug, never silently a shorter path).
 */
export function decodeProvenance(buf: Uint8Array, holds: number): { steps: number[]; holds: HoldSteps[] } {
  let at = 0;
  const get = (): number => {
    let v = 0;
    let scale = 1;
    for (;;) {
      if (at >= buf.length) throw new Error('provenance ends in the middle of a vector');
      const b = buf[at++] as number;
      v += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return v;
      scale *= 128;
      if (scale > 2 ** 35) throw new Error('provenance holds a varint longer than 32 bits');
    }
  };
  const vector = (): number[] => {
    const n = get();
    if (2 * n > buf.length - at) throw new Error('provenance says a vector has more pairs than it holds');
    const out = new Array<number>(2 * n);
    for (let k = 0; k < 2 * n; k++) out[k] = get();
    return out;
  };
  if (buf.length === 0) {
    if (holds > 0) throw new Error(`provenance is empty but the reply holds ${holds} resources`);
    return { steps: [], holds: [] };
  }
  const steps = vector();
  const hs: HoldSteps[] = [];
  for (let i = 0; i < holds; i++) hs.push({ at: vector(), own: vector() });
  if (at !== buf.length) throw new Error('provenance has bytes past its last vector');
  return { steps, holds: hs };
}

const EMPTY = Buffer.alloc(0);

/** base + pairs, packed: a vector recorded relative to a later start, made relative to base's start. */
export function rebase(base: StepCounts, pairs: PackedSteps): number[] {
  if (pairs.length === 0) return pack(base);
  const t = base.slice();
  addPacked(t, pairs);
  return pack(t);
}

/** a >= b in every slot. */
export function dominates(a: StepCounts, b: StepCounts): boolean {
  for (let i = 0; i < a.length; i++) if ((a[i] as number) < (b[i] as number)) return false;
  return true;
}

/**
 * Two branches' vectors are ordered when one holds at least the other's count of every step: then
 * the longer one stays the longer under any non-negative costs, and taking the longest branch gives
 * the same vector whatever the costs (re-pricing is exact).
 */
export function ordered(a: StepCounts, b: StepCounts): boolean {
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
