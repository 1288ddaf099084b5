/**
 * Makes the vCPUs of a guest take turns in modeled time where their operations share state whose
 * outcome depends on order: lazy mode's flush queues (a domain's flush counts, its one timer, a
 * single queue, the UNMAPs a virtio-iommu sync carries). The threads run concurrently in real time,
 * so without it which vCPU reached a shared queue first would follow the processes' real
 * interleaving, and modeled results would change from run to run.
 *
 * A vCPU asks for its turn at the modeled time its operation starts (turn). It gets it once no
 * other vCPU can still do something earlier: each other vCPU is done, parked at a step of the
 * workload (a live migration, which resumes everyone together), waiting for a later turn, or has a
 * modeled clock already past it (ties go to the lower vCPU). Each thread's clock floor is a lower
 * bound of the start of everything it will still do (the workload keeps it with at()). A vCPU
 * waiting for its turn holds no lock, so the wait cannot close a cycle: the vCPU with the earliest
 * claim always runs. Only real time is spent waiting; the order is the modeled one, so it is the
 * same on every run. Operations are ordered whole: one that starts while another is in progress
 * sees all of that one's effects. So a vCPU waiting for its turn acts only after the operation
 * running now is over: for the command queue's gathering (vcpu-clocks.ts) it bounds nothing while
 * it waits, or the two waits could close a cycle.
 */
type State = 'running' | 'waiting' | 'parked' | 'done';

/** What else decides in modeled time (the command queue's gathering): told when a vCPU waits for its turn. */
export interface TurnObserver {
  park(cpu: number): void;
  unpark(cpu: number): void;
}

export class ModeledOrder {
  private readonly state: State[];
  private readonly floor: number[];
  private readonly key: number[];
  private wakers: (() => void)[] = [];

  constructor(
    readonly cpus: number,
    private readonly observer?: TurnObserver,
  ) {
    this.state = Array.from({ length: cpus }, () => 'running' as State);
    this.floor = new Array<number>(cpus).fill(0);
    this.key = new Array<number>(cpus).fill(0);
  }

  /** Waits until vCPU `cpu` may run an operation that starts at modeled `atNs`. */
  async turn(cpu: number, atNs: number): Promise<void> {
    if (this.cpus <= 1) return;
    this.at(cpu, atNs);
    this.state[cpu] = 'waiting';
    this.key[cpu] = atNs;
    // Others waiting for an earlier claim than this one may go now.
    this.wake();
    if (!this.mayGo(cpu)) {
      this.observer?.park(cpu);
      while (!this.mayGo(cpu)) await new Promise<void>((resolve) => this.wakers.push(resolve));
      this.observer?.unpark(cpu);
    }
    this.state[cpu] = 'running';
  }

  /** vCPU `cpu` will start nothing before modeled `ns` (its clock moved). */
  at(cpu: number, ns: number): void {
    if (ns > (this.floor[cpu] ?? 0)) {
      this.floor[cpu] = ns;
      this.wake();
    }
  }

  /** vCPU `cpu` stops at a step every vCPU must reach (it does nothing until all have). */
  park(cpu: number): void {
    this.state[cpu] = 'parked';
    this.wake();
  }

  unpark(cpu: number): void {
    this.state[cpu] = 'running';
  }

  /** vCPU `cpu` has no operation left. */
  finish(cpu: number): void {
    this.state[cpu] = 'done';
    this.wake();
  }

  private mayGo(cpu: number): boolean {
    const mine = this.key[cpu] ?? 0;
    for (let b = 0; b < this.cpus; b++) {
      if (b === cpu) continue;
      const s = this.state[b];
      if (s === 'done' || s === 'parked') continue;
      const theirs = s === 'waiting' ? (this.key[b] ?? 0) : (this.floor[b] ?? 0);
      if (theirs < mine || (theirs === mine && b < cpu)) return false;
    }
    return true;
  }

  private wake(): void {
    const w = this.wakers;
    this.wakers = [];
    for (const resolve of w) resolve();
  }
}
