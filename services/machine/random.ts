/**
 * A small seeded PRNG (mulberry32): every random choice in vmmsim comes from one of these, seeded
 * from the scenario's seed and the chooser's identity, so a seed reproduces a run's choices.
 */
export class Random {
  private state: number;

  constructor(seed: number, stream = 0) {
    this.state = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca6b)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Exponentially distributed with this mean (inverse transform; 1 - U is in (0, 1], so the log is finite). */
  exponential(mean: number): number {
    return -mean * Math.log(1 - this.next());
  }
}
