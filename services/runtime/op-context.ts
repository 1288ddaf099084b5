import type { CostStep, CostTable } from '../cost/steps.js';
import { addPacked, decodeProvenance, encodeProvenance, ordered, pack, packDiff, rebase, type HoldSteps, type StepCounts } from '../cost/step-vector.js';
import { OpTrace, type TraceEvent } from './op-trace.js';
import type { Envelope__Output, Hold__Output, Hop, Kind, LinkClient, MemoryRange, MemoryRange__Output, OutgoingRequest } from './transport/link.js';

/**
 * One use of a contended resource, in the operation's uncontended modeled time, with what that time
 * is made of: `atSteps`, the operation's step counts when it asked for the resource (counted from
 * the start of the context that holds the record), and `ownSteps`, the steps charged while it held
 * it. atNs and ns are what they cost.
 */
export type HeldResource = Hold__Output & { atSteps: number[]; ownSteps: number[] };

/** A downstream reply as a model sees it. */
export interface CallReply {
  status: number;
  payload: Buffer;
  guestMemory: MemoryRange__Output[];
}

/**
 * What a model holds while it serves one operation: the modeled clock of that operation, what that
 * time is made of, the hops taken below this process, and calls to downstream peers. Models use
 * only this and never touch the transport, so the same model code runs whatever carries its messages.
 *
 * Provenance: beside modeledNs the context counts every cost step charged on the operation's
 * critical path since it began (`steps`, a vector over the run's step table). modeledNs is always
 * where it began plus those counts times the step costs. A reply carries the callee's counts, and
 * where the caller takes the longest of parallel branches it takes that branch's counts too; when
 * the branches' counts do not contain one another, another branch could be the longest under other
 * costs, and `branched` says so (re-pricing the operation is then not exact: docs/cost-model.md).
 */
export class OpContext {
  /** Hops taken below this process while serving the operation. */
  readonly trace: Hop[] = [];
  /** Contended resources the operation held here and below, in its uncontended modeled time. */
  readonly holds: HeldResource[] = [];
  /** Steps charged on the operation's critical path since this context began, by the run's step table. */
  readonly steps: StepCounts;
  /** Parallel branches whose step counts did not contain one another met here or below. */
  branched = false;
  /** Changes of `steps` so far: a reply that finds it unchanged since its request was sequential. */
  private rev = 0;
  /** The tree of what this process did, on the one operation vmmsim explain traces (else none). */
  private recorder: OpTrace | undefined;

  constructor(
    readonly opId: number,
    public modeledNs: number,
    private readonly costs: CostTable,
    private readonly links: ReadonlyMap<string, LinkClient>,
  ) {
    this.steps = costs.steps.zero();
  }

  /** Records this operation's tree of charges, calls and holds here and in every peer it calls (vmmsim explain). */
  explain(): void {
    this.recorder ??= new OpTrace();
  }

  /** Whether this operation is being traced for vmmsim explain. */
  get explaining(): boolean {
    return this.recorder !== undefined;
  }

  /** What this process did for the traced operation, in order (empty when it is not traced). */
  explained(): TraceEvent[] {
    return this.recorder?.events() ?? [];
  }

  /** The step counts as they travel: ascending (step index, count) pairs. */
  packedSteps(): number[] {
    return pack(this.steps);
  }

  /** What this context's modeled time and holds are made of, as a reply carries it (Envelope.provenance). */
  provenance(): Buffer {
    return encodeProvenance(pack(this.steps), this.holds.map((h): HoldSteps => ({ at: h.atSteps, own: h.ownSteps })));
  }

  /** Adds `times` x the cost of a named step to this operation's modeled time. */
  charge(step: CostStep, times = 1): void {
    if (!(Number.isInteger(times) && times >= 0)) throw new Error(`charge(${step}, ${times}): a step is charged a whole number of times`);
    const at = this.modeledNs;
    this.modeledNs += this.costs.of(step) * times;
    if (times === 0) return;
    const i = this.costs.index(step);
    this.steps[i] = (this.steps[i] as number) + times;
    this.rev += 1;
    this.recorder?.charge(step, times, at, this.modeledNs, this.rev);
  }

  /**
   * Runs `fn` as a use of a contended resource: everything it charges (here and in the peers it
   * calls) is time the resource is held. Only the record is kept here; the controller's queueing
   * model (controller/queueing.ts) replays every operation's holds in modeled-time order, so what an
   * operation waits for a resource does not depend on how the real processes happened to interleave.
   */
  async hold<T>(resource: string, fn: () => Promise<T> | T): Promise<T> {
    const atNs = this.modeledNs;
    const at = this.steps.slice();
    const h: HeldResource = { resource, atNs, ns: 0, atSteps: pack(at), ownSteps: [] };
    this.holds.push(h);
    const node = this.recorder?.openHold(resource, atNs);
    try {
      return await fn();
    } finally {
      h.ns = this.modeledNs - atNs;
      h.ownSteps = packDiff(this.steps, at, () => (this.branched = true));
      if (node) this.recorder?.closeHold(node, this.modeledNs);
    }
  }

  /**
   * Sends a request to a downstream peer and waits for its reply. Modeled time continues from the
   * reply: sequential calls add up; calls started together and awaited together (hardware that
   * really works in parallel) take the longest branch, and its step counts. `label`: what the
   * request does in the caller's words, for vmmsim explain (the register a trapped access touches).
   */
  async call(peer: string, kind: Kind, payload: Buffer, guestMemory?: readonly MemoryRange[], label?: string): Promise<CallReply> {
    const link = this.links.get(peer);
    if (!link) throw new Error(`no link to ${peer}`);
    const rec = this.recorder;
    const req: OutgoingRequest = { kind, opId: this.opId, payload, modeledNs: this.modeledNs };
    if (guestMemory) req.guestMemory = guestMemory;
    if (rec) req.explain = true;
    // Where the callee starts: its counts and its holds' are relative to this.
    const base = this.steps.slice();
    const rev = this.rev;
    const node = rec?.call(peer, kind, this.modeledNs, label);
    const reply: Envelope__Output = await link.request(req);
    for (const h of reply.hops) this.trace.push(h);
    const below = decodeProvenance(reply.provenance, reply.holds.length);
    for (let i = 0; i < reply.holds.length; i++) {
      const h = reply.holds[i] as Hold__Output;
      const v = below.holds[i] as HoldSteps;
      // v.own is this decode's own array: kept as it is, not copied.
      this.holds.push({ resource: h.resource, atNs: h.atNs, ns: h.ns, atSteps: rebase(base, v.at), ownSteps: v.own as number[] });
    }
    const before = this.modeledNs;
    if (reply.modeledNs > this.modeledNs) this.modeledNs = reply.modeledNs;
    let onPath = true;
    let displacedAfter: number | undefined;
    if (rev === this.rev) {
      // Nothing moved this operation's counts while the request was out: the reply continues them.
      addPacked(this.steps, below.steps);
    } else {
      // Parallel branches: the longest (as modeledNs above) is the path, with its counts.
      const branch = base;
      addPacked(branch, below.steps);
      if (!ordered(branch, this.steps)) this.branched = true;
      onPath = reply.modeledNs > before;
      if (onPath) {
        for (let i = 0; i < branch.length; i++) this.steps[i] = branch[i] as number;
        displacedAfter = rev;
      }
    }
    this.rev += 1;
    if (reply.branched) this.branched = true;
    if (node) rec?.reply(node, { status: reply.status, endNs: reply.modeledNs, below: reply.explained, onPath, rev: this.rev, ...(displacedAfter !== undefined ? { displacedAfter } : {}) });
    return { status: reply.status, payload: reply.payload, guestMemory: reply.guestMemory };
  }
}
