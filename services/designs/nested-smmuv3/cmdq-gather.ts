import type { VcpuClocks } from '../../guest/vcpu-clocks.js';

/** A promise and its resolver. */
class Deferred<T> {
  resolve!: (v: T) => void;
  readonly promise = new Promise<T>((r) => {
    this.resolve = r;
  });
}

/** One CPU's command list on the queue: its slots and, once written, their bytes. */
export interface Member {
  readonly cpu: number;
  /** Modeled time (on the vCPU clocks' scale) it reserved its slots. */
  readonly at: number;
  /** Slots it reserved (its commands and, with a sync, its CMD_SYNC). */
  readonly slots: number;
  /** The ring pointer of its first slot. */
  start: number;
  /** Resolves once it wrote its slots (the owner publishes only then). */
  readonly written: Deferred<void>;
}

/** What the owner's PROD write came to: its status and when it returned (modeled). */
export interface Published {
  status: number;
  doneAt: number;
}

/**
 * One owner's gathering: its own list first, then those of the CPUs that reserved while it was
 * gathering, all published by its one PROD write.
 */
export class Gather {
  readonly members: Member[];
  /** When the owner stops gathering (clears OWNED); undefined while that waits on the previous owner. */
  closesAt: number | undefined;
  readonly closed = new Deferred<void>();
  readonly published = new Deferred<Published>();
  /** The published result once in (for whoever decides after it). */
  done: Published | undefined;

  constructor(
    readonly owner: Member,
    /** How long the owner takes to write its own commands and mark them valid. */
    readonly windowNs: number,
    /** The gather before it, whose PROD write it waits for (owner_prod); undefined: none in flight. */
    readonly previous: Gather | undefined,
  ) {
    this.members = [owner];
  }

  publish(p: Published): void {
    this.done = p;
    this.published.resolve(p);
  }
}

interface Pending {
  readonly member: Member;
  readonly windowNs: number;
  readonly decided: Deferred<{ gather: Gather; owner: boolean }>;
}

/**
 * Linux's lock-free command-queue insertion across CPUs (arm_smmu_cmdq_issue_cmdlist), decided in
 * modeled time. A CPU reserves its slots with a cmpxchg on the queue's shadow prod; if the OWNED
 * flag was clear it is the owner (and sets it), else its slots are gathered by the current owner.
 * The owner writes its commands, waits for the previous owner to finish its PROD write
 * (owner_prod), clears OWNED (which ends the gathering and tells it how far to publish), waits
 * for every gathered slot to be valid and writes PROD once. Every CPU with a sync then waits for
 * its own (each polls CONS itself).
 *
 * The rule here, in modeled time and never from how the processes happen to interleave: a CPU whose
 * reservation (its arrival at the queue, on its vCPU clock) falls in [the owner's reservation, the
 * moment the owner clears OWNED) joins that owner; the owner clears OWNED once its own commands are
 * written (`windowNs` after it reserved) or, if later, once the previous owner's PROD write
 * returned. Arrivals are taken in modeled-time order (ties by CPU number): one is decided only when
 * every other vCPU's clock (VcpuClocks.bound) is past it, so no earlier one can still come. Without
 * registered vCPU clocks every list is its own owner and publishes at once.
 *
 * Slots are reserved in decision order through `reserve` (undefined when the ring has no room:
 * decisions wait for room).
 */
export class CmdqGather {
  private readonly pending: Pending[] = [];
  /** The gather still taking joiners. */
  private open: Gather | undefined;
  /** The last gather closed (its PROD write may still be in flight). */
  private last: Gather | undefined;
  /** Gathers closed whose PROD write has not returned yet. */
  private readonly inflight = new Set<Gather>();
  /** Holding vCPUs notifies every queue, this one too: decisions are not re-entered from there. */
  private pumping = false;
  private again = false;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly clocks: VcpuClocks | undefined,
    private readonly reserve: (slots: number) => number | undefined,
  ) {}

  /** Whether decisions follow the vCPU clocks (else every list owns itself). */
  private get modeled(): boolean {
    return this.clocks?.known === true;
  }

  /**
   * CPU `cpu` reserves `slots` at modeled time `at`; resolves with its gather and whether it owns it.
   * `windowNs`: how long it would take, as owner, to write its own commands.
   */
  arrive(cpu: number, at: number, slots: number, windowNs: number): Promise<{ gather: Gather; owner: boolean; member: Member }> {
    const member: Member = { cpu, at, slots, start: 0, written: new Deferred<void>() };
    const decided = new Deferred<{ gather: Gather; owner: boolean }>();
    this.pending.push({ member, windowNs, decided });
    this.watch();
    this.clocks?.changed();
    this.pump();
    return decided.promise.then((d) => ({ ...d, member }));
  }

  /** Room was freed in the ring (a sync completed): decisions waiting for it go on. */
  roomFreed(): void {
    this.pump();
  }

  /** A gather's PROD write returned: the one waiting on it can close. */
  published(g: Gather, p: Published): void {
    g.publish(p);
    this.inflight.delete(g);
    // The members go on from the PROD write's end: their clocks say where now.
    for (const m of g.members) this.clocks?.release(m.cpu);
    this.pump();
  }

  private watch(): void {
    if (!this.unsubscribe && this.clocks) this.unsubscribe = this.clocks.onChange(() => this.pump());
  }

  private unwatch(): void {
    if (this.pending.length > 0 || this.open || this.inflight.size > 0) return;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** The earliest pending arrival (ties: the lower CPU). */
  private first(): Pending | undefined {
    let best: Pending | undefined;
    for (const p of this.pending) {
      if (!best || p.member.at < best.member.at || (p.member.at === best.member.at && p.member.cpu < best.member.cpu)) best = p;
    }
    return best;
  }

  /**
   * No vCPU can still reserve before `at` (or at `at` before `cpu`): every vCPU not pending here is
   * past it. `cpu` -1: a gather's end, which a reservation at `at` itself does not join.
   */
  private safe(at: number, cpu: number): boolean {
    const clocks = this.clocks;
    if (!clocks) return true;
    const waiting = new Set(this.pending.map((p) => p.member.cpu));
    for (let t = 0; t < clocks.vcpus; t++) {
      if (waiting.has(t)) continue;
      const b = clocks.bound(t);
      if (b < at || (b === at && !clocks.after(t) && cpu >= 0 && t < cpu)) return false;
    }
    return true;
  }

  /**
   * A decided member does nothing more until after its gather closed (it waits for the owner's
   * PROD write, or is the owner): every queue's decisions may count on it (VcpuClocks.hold).
   */
  private holdMembers(g: Gather): void {
    const until = g.closesAt ?? g.owner.at + g.windowNs;
    for (const m of g.members) this.clocks?.hold(m.cpu, until);
  }

  private take(p: Pending): boolean {
    const start = this.reserve(p.member.slots);
    if (start === undefined) return false;
    p.member.start = start;
    this.pending.splice(this.pending.indexOf(p), 1);
    return true;
  }

  private pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.again = false;
        while (this.step());
      } while (this.again);
    } finally {
      this.pumping = false;
    }
    this.unwatch();
  }

  /** Takes one decision if one can be taken now; false when everything left must wait. */
  private step(): boolean {
    const a = this.first();
    if (!this.modeled) {
      // Nothing known in modeled time: every list owns itself and publishes at once.
      if (!a || !this.take(a)) return false;
      const g = new Gather(a.member, a.windowNs, undefined);
      g.closesAt = a.member.at + a.windowNs;
      g.closed.resolve();
      a.decided.resolve({ gather: g, owner: true });
      return true;
    }
    const g = this.open;
    if (g) {
      if (g.closesAt === undefined && g.previous?.done) {
        g.closesAt = Math.max(g.owner.at + g.windowNs, g.previous.done.doneAt);
        this.holdMembers(g);
      }
      // Its window is at least the owner's own writes, whatever the previous owner does.
      const window = g.closesAt ?? g.owner.at + g.windowNs;
      if (a && a.member.at < window && this.safe(a.member.at, a.member.cpu)) {
        if (!this.take(a)) return false;
        g.members.push(a.member);
        this.holdMembers(g);
        a.decided.resolve({ gather: g, owner: false });
        return true;
      }
      if (g.closesAt !== undefined && this.safe(g.closesAt, -1)) {
        this.open = undefined;
        this.last = g;
        this.inflight.add(g);
        g.closed.resolve();
        return true;
      }
      return false;
    }
    if (!a || !this.safe(a.member.at, a.member.cpu) || !this.take(a)) return false;
    // The previous owner's PROD write still in flight (or finished after this one reserved) holds
    // this one's gathering open: another CPU's. A CPU's own previous list is done by the time it
    // reserves again; where its operations overlap on the uncontended clock (an open-loop arrival
    // before the last one ended), the queueing model prices the wait, not this.
    const last = this.last;
    const previous = last && (!last.done || last.done.doneAt > a.member.at) && !last.members.some((m) => m.cpu === a.member.cpu) ? last : undefined;
    const next = new Gather(a.member, a.windowNs, previous);
    next.closesAt = previous ? (previous.done ? Math.max(a.member.at + a.windowNs, previous.done.doneAt) : undefined) : a.member.at + a.windowNs;
    this.open = next;
    this.holdMembers(next);
    a.decided.resolve({ gather: next, owner: true });
    return true;
  }
}
