/**
 * A FIFO async lock: a named contended resource (the VMM's big lock, the iommufd lock). Waiters
 * are served in arrival order; `waitedNs`-style accounting is left to the caller.
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

  async with<T>(fn: () => Promise<T>): Promise<T> {
    await this.lock();
    try {
      return await fn();
    } finally {
      this.unlock();
    }
  }
}
