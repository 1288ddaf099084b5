/**
 * The measured clock: CLOCK_MONOTONIC in nanoseconds as a double. Every process on one host reads
 * the same clock, so a send stamp taken in one process and a receive stamp taken in another give a
 * one-way hop latency. A double holds integer nanoseconds exactly for 104 days of uptime and loses
 * only single nanoseconds after that.
 */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

export const NS_PER_US = 1_000;
