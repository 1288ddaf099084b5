import { Random } from '../../machine/random.js';
import type { ArrivalProcess } from '../../scenario/schema.js';

/**
 * Random streams of the arrival schedules, one per VM and thread: apart from the streams of the
 * devices' DMA (psmmu 1000 + k, emulated devices 2000 + vm), so changing one never shifts the other.
 */
const ARRIVAL_STREAM_BASE = 0x1_0000;
const MAX_THREADS_PER_VM = 0x100;

export interface ArrivalSpec {
  /** Arrivals per second over all the threads of the VM. */
  rate: number;
  threads: number;
  process: ArrivalProcess;
  seed: number;
  /** The VM: each VM's guest draws its own Poisson streams. */
  vm: number;
}

/** Constant rate: item j of the run (item i of thread t is j = i * threads + t, the threads take turns) arrives at j / rate seconds. */
export function constantArrivalNs(rate: number, threads: number, t: number, i: number): number {
  return ((i * threads + t) * 1e9) / rate;
}

/**
 * One thread's open-loop arrival times, in nanoseconds from the start of the run, in order. A pure
 * function of (seed, vm, rate, threads, thread): nothing measured enters, so the modeled results of
 * an open-loop run are as deterministic as a closed-loop one's.
 *  - constant: the threads take the arrivals of one evenly spaced stream in turn (round robin);
 *  - poisson: each thread is an independent Poisson process of rate / threads (exponential gaps
 *    from its own seeded stream, the first arrival one gap after the start). The superposition of
 *    independent Poisson processes is a Poisson process of the summed rate, so the VM as a whole
 *    sees Poisson arrivals at `rate`, and no thread's schedule depends on another's.
 */
export class ThreadArrivals {
  private i = 0;
  private atNs = 0;
  private readonly random: Random | undefined;
  /** Mean gap between two arrivals of this thread (poisson). */
  private readonly meanGapNs: number;

  constructor(
    private readonly spec: ArrivalSpec,
    private readonly thread: number,
  ) {
    if (!(spec.rate > 0)) throw new Error(`open-loop arrivals need a rate > 0, got ${spec.rate}`);
    const threads = Math.max(1, spec.threads);
    this.meanGapNs = (threads * 1e9) / spec.rate;
    this.random = spec.process === 'poisson' ? new Random(spec.seed, ARRIVAL_STREAM_BASE + spec.vm * MAX_THREADS_PER_VM + thread) : undefined;
  }

  /** The time of this thread's next arrival. */
  next(): number {
    const i = this.i++;
    if (!this.random) return constantArrivalNs(this.spec.rate, Math.max(1, this.spec.threads), this.thread, i);
    this.atNs += this.random.exponential(this.meanGapNs);
    return this.atNs;
  }
}

/** The first `n` arrival times of thread `thread` (for tests and tools; a workload draws them one by one). */
export function arrivalTimes(spec: ArrivalSpec, thread: number, n: number): number[] {
  const a = new ThreadArrivals(spec, thread);
  return Array.from({ length: n }, () => a.next());
}
