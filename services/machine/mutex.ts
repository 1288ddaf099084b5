import type { OpContext } from '../runtime/op-context.js';

/**
 * A FIFO async lock: a named contended resource (the VMM's big lock, a VFIO container's lock).
 * Waiters are served in arrival order. `with(fn, ctx)` also records the hold in the operation's
 * modeled time, where the queueing model finds what the operation waited; real waiting is what
 * measured time shows.
 */
export class Mutex {
  private locked = false;
  private readonly queue: (() => void)[] = [];
  acquisitions = 0;
  contended = 0;

  constructor(readonly name: string) {}

  async lock(): Promise<void> {
    this.acquisitions += 1;
    if (!this.locked) {
      this.locked = true;
      return;
    }
    this.contended += 1;
    await new Promise<void>((resolve) => this.queue.push(resolve));
  }

  unlock(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.locked = false;
  }

  async with<T>(fn: () => Promise<T>, ctx?: OpContext): Promise<T> {
    await this.lock();
    try {
      return ctx ? await ctx.hold(this.name, fn) : await fn();
    } finally {
      this.unlock();
    }
  }
}
