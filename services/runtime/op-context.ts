import type { CostStep, CostTable } from '../cost/steps.js';
import type { Envelope__Output, Hold__Output, Hop, Kind, LinkClient, MemoryRange, MemoryRange__Output } from './transport/link.js';

/** A downstream reply as a model sees it. */
export interface CallReply {
  status: number;
  payload: Buffer;
  guestMemory: MemoryRange__Output[];
}

/**
 * What a model holds while it serves one operation: the modeled clock of that operation, the hops
 * taken below this process, and calls to downstream peers. Models use only this and never touch
 * the transport, so the same model code runs whatever carries its messages.
 */
export class OpContext {
  /** Hops taken below this process while serving the operation. */
  readonly trace: Hop[] = [];
  /** Contended resources the operation held here and below, in its uncontended modeled time. */
  readonly holds: Hold__Output[] = [];

  constructor(
    readonly opId: number,
    public modeledNs: number,
    private readonly costs: CostTable,
    private readonly links: ReadonlyMap<string, LinkClient>,
  ) {}

  /** Adds `times` x the cost of a named step to this operation's modeled time. */
  charge(step: CostStep, times = 1): void {
    this.modeledNs += this.costs.of(step) * times;
  }

  /**
   * Runs `fn` as a use of a contended resource: everything it charges (here and in the peers it
   * calls) is time the resource is held. Only the record is kept here; the guest's queueing model
   * (cost/queueing.ts) replays every operation's holds in modeled-time order, so what an operation
   * waits for a resource does not depend on how the real processes happened to interleave.
   */
  async hold<T>(resource: string, fn: () => Promise<T> | T): Promise<T> {
    const atNs = this.modeledNs;
    const i = this.holds.length;
    this.holds.push({ resource, atNs, ns: 0 });
    try {
      return await fn();
    } finally {
      (this.holds[i] as Hold__Output).ns = this.modeledNs - atNs;
    }
  }

  /**
   * Sends a request to a downstream peer and waits for its reply. Modeled time continues from the
   * reply: sequential calls add up; calls started together and awaited together (hardware that
   * really works in parallel) take the longest branch.
   */
  async call(peer: string, kind: Kind, payload: Buffer, guestMemory?: readonly MemoryRange[]): Promise<CallReply> {
    const link = this.links.get(peer);
    if (!link) throw new Error(`no link to ${peer}`);
    const req = guestMemory
      ? { kind, opId: this.opId, payload, guestMemory, modeledNs: this.modeledNs }
      : { kind, opId: this.opId, payload, modeledNs: this.modeledNs };
    const reply: Envelope__Output = await link.request(req);
    for (const h of reply.hops) this.trace.push(h);
    for (const h of reply.holds) this.holds.push(h);
    if (reply.modeledNs > this.modeledNs) this.modeledNs = reply.modeledNs;
    return { status: reply.status, payload: reply.payload, guestMemory: reply.guestMemory };
  }
}
