import type { Kind__Output } from './generated/vmmsim/v1/Kind.js';
import type { TraceEvent__Output } from './generated/vmmsim/v1/TraceEvent.js';

/** One event of a traced operation as it travels: a flat list in pre-order, each with its depth. */
export type TraceEvent = TraceEvent__Output;

/** An event with its children (the tree a flat list stands for). */
export interface TraceNode {
  what: string;
  name: string;
  times: number;
  kind: Kind__Output;
  status: number;
  atNs: number;
  endNs: number;
  offPath: boolean;
  /** A call's words for what it does (TraceEvent.label), '' for none. */
  label: string;
  below: TraceNode[];
}

/**
 * An event as this process records it, and when it changed the operation's step counts (the
 * context's revision after the change; none for a hold, or a call not back yet).
 */
interface Recorded {
  node: TraceNode;
  rev?: number;
}

/**
 * The tree of what one process did for a traced operation (vmmsim explain): each charge, each call
 * to a peer (with what the peer did for it, from the reply) and each hold of a contended resource
 * (with what ran while it was held). Only an operation whose request asked for it is recorded; every
 * other one has no recorder at all, so the data path pays nothing for explain.
 *
 * A hold nests what is charged and called while it is open. Parallel branches of one process would
 * interleave there; the critical path (offPath) follows the same rule as the operation's modeled
 * time and step counts (OpContext.call), so it stays right whatever the nesting shows.
 */
export class OpTrace {
  private readonly top: TraceNode[] = [];
  /** Holds open, innermost last: where new events go. */
  private readonly open: TraceNode[] = [];
  /** Every event this process recorded itself, in order (a call's children are its peer's). */
  private readonly own: Recorded[] = [];

  private add(node: TraceNode, rev?: number): Recorded {
    const parent = this.open[this.open.length - 1];
    (parent ? parent.below : this.top).push(node);
    const r: Recorded = { node, ...(rev !== undefined ? { rev } : {}) };
    this.own.push(r);
    return r;
  }

  /** A charge, which made the context's counts revision `rev`. */
  charge(step: string, times: number, atNs: number, endNs: number, rev: number): void {
    this.add(node('charge', step, atNs, endNs, times), rev);
  }

  /** A request leaves for `peer` (`label`: what it does, in the caller's words): its event, completed by `reply`. */
  call(peer: string, kind: Kind__Output, atNs: number, label = ''): Recorded {
    const r = this.add(node('call', peer, atNs, atNs));
    r.node.kind = kind;
    r.node.label = label;
    return r;
  }

  /**
   * The call's reply came back with the peer's events (`below`, flat) and made the counts revision
   * `rev`. `onPath`: its branch is the operation's critical path from here (a sequential call, or
   * the longest of parallel ones). When it is the longest of parallel branches, `displacedAfter` is
   * the revision its request left at: whatever changed the counts since is no longer on the path.
   */
  reply(r: Recorded, o: { status: number; endNs: number; below: readonly TraceEvent[]; onPath: boolean; rev: number; displacedAfter?: number }): void {
    r.node.status = o.status;
    r.node.endNs = o.endNs;
    r.node.below = traceTree(o.below);
    r.rev = o.rev;
    if (!o.onPath) r.node.offPath = true;
    const after = o.displacedAfter;
    if (after !== undefined) for (const x of this.own) if (x !== r && x.rev !== undefined && x.rev > after) x.node.offPath = true;
  }

  openHold(resource: string, atNs: number): TraceNode {
    const n = this.add(node('hold', resource, atNs, atNs)).node;
    this.open.push(n);
    return n;
  }

  closeHold(n: TraceNode, endNs: number): void {
    n.endNs = endNs;
    const i = this.open.lastIndexOf(n);
    if (i >= 0) this.open.splice(i, 1);
  }

  /** The events in order, flat, for the reply (or, in the guest, for the traced operation). */
  events(): TraceEvent[] {
    return flatten(this.top);
  }
}

function node(what: 'charge' | 'call' | 'hold', name: string, atNs: number, endNs: number, times = 0): TraceNode {
  return { what, name, times, kind: 'KIND_UNSPECIFIED', status: 0, atNs, endNs, offPath: false, label: '', below: [] };
}

/** A tree as a flat list in pre-order, each event with its depth. */
export function flatten(nodes: readonly TraceNode[], depth = 0, out: TraceEvent[] = []): TraceEvent[] {
  for (const n of nodes) {
    out.push({ what: n.what, name: n.name, times: n.times, kind: n.kind, status: n.status, atNs: n.atNs, endNs: n.endNs, offPath: n.offPath, depth, label: n.label });
    flatten(n.below, depth + 1, out);
  }
  return out;
}

/**
 * The tree of a flat list. An event deeper than one below the one before it (a malformed list) is
 * taken as that one's child: the list never gives more levels than it has events.
 */
export function traceTree(events: readonly TraceEvent[]): TraceNode[] {
  const top: TraceNode[] = [];
  const path: TraceNode[] = [];
  for (const e of events) {
    const depth = Math.min(e.depth, path.length);
    path.length = depth;
    const n: TraceNode = { what: e.what, name: e.name, times: e.times, kind: e.kind, status: e.status, atNs: e.atNs, endNs: e.endNs, offPath: e.offPath, label: e.label ?? '', below: [] };
    (depth === 0 ? top : (path[depth - 1] as TraceNode).below).push(n);
    path.push(n);
  }
  return top;
}
