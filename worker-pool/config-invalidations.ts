/**
 * The way a CFGI executed by a VCMDQ worker reaches the configuration cache, which lives in the
 * psmmu main thread's translator where no worker can touch it. A SharedArrayBuffer log: the worker
 * appends (first StreamID, last StreamID) and bumps WRITTEN before it moves CONS past the command,
 * so anyone who sees the command complete (its CONS, a later CMD_SYNC) and then translates finds
 * it. The translator compares WRITTEN with what it has applied before every use of its cache (one
 * Atomics.load when nothing is new) and drops the entries named since. A reader that fell more than
 * RECORDS behind drops its whole cache, which is always safe.
 *
 * Writers (any worker) and the reader take a small futex-style lock around a record; CFGIs are rare
 * and the critical sections a few stores, so it is almost never contended.
 */
import type { ConfigInvalidator } from '../services/machine/smmu-executor.js';

const MAGIC = 0x43464749; // 'CFGI'
const W_MAGIC = 0;
const W_LOCK = 1;
/** Records appended so far (mod 2^32). */
const W_WRITTEN = 2;
const RECORDS_BASE = 4;
const RECORDS = 64;
const RECORD_WORDS = 2;
const WORDS = RECORDS_BASE + RECORDS * RECORD_WORDS;

const LOCK_FREE = 0;
const LOCK_HELD = 1;
const LOCK_CONTENDED = 2;
const SPINS = 64;

const TWO32 = 0x1_0000_0000;

export class ConfigInvalidations implements ConfigInvalidator {
  readonly buffer: SharedArrayBuffer;
  private readonly i32: Int32Array;
  /** Records this instance has handed to applyTo (reader side). */
  private applied: number;

  /** A new, empty log in a fresh SharedArrayBuffer. */
  static create(): ConfigInvalidations {
    const buffer = new SharedArrayBuffer(WORDS * 4);
    new Int32Array(buffer)[W_MAGIC] = MAGIC;
    return new ConfigInvalidations(buffer);
  }

  /** Another view of a log created elsewhere (a worker thread passes `buffer`). */
  static attach(buffer: SharedArrayBuffer): ConfigInvalidations {
    return new ConfigInvalidations(buffer);
  }

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.i32 = new Int32Array(buffer);
    if (buffer.byteLength < WORDS * 4 || this.i32[W_MAGIC] !== MAGIC) {
      throw new TypeError('buffer is not a configuration-invalidation log (was it made by ConfigInvalidations.create from the same build?)');
    }
    this.applied = Atomics.load(this.i32, W_WRITTEN);
  }

  private lock(): void {
    const a = this.i32;
    if (Atomics.compareExchange(a, W_LOCK, LOCK_FREE, LOCK_HELD) === LOCK_FREE) return;
    for (let i = 0; i < SPINS; i++) {
      if (Atomics.load(a, W_LOCK) === LOCK_FREE && Atomics.compareExchange(a, W_LOCK, LOCK_FREE, LOCK_HELD) === LOCK_FREE) return;
    }
    // The 1 ms timeout only bounds a lost wake-up; unlock notifies.
    while (Atomics.exchange(a, W_LOCK, LOCK_CONTENDED) !== LOCK_FREE) Atomics.wait(a, W_LOCK, LOCK_CONTENDED, 1);
  }

  private unlock(): void {
    if (Atomics.exchange(this.i32, W_LOCK, LOCK_FREE) === LOCK_CONTENDED) Atomics.notify(this.i32, W_LOCK, 1);
  }

  /** Writer side (a VCMDQ worker executing a CFGI): StreamIDs [firstSid, firstSid + count). */
  invalidateConfig(firstSid: number, count: number): void {
    if (count <= 0) return;
    const a = this.i32;
    this.lock();
    const k = Atomics.load(a, W_WRITTEN) >>> 0;
    const at = RECORDS_BASE + (k % RECORDS) * RECORD_WORDS;
    a[at] = firstSid | 0;
    a[at + 1] = Math.min(firstSid + count - 1, TWO32 - 1) | 0;
    Atomics.store(a, W_WRITTEN, (k + 1) | 0);
    this.unlock();
  }

  /** Whether records arrived since the last applyTo (one atomic load). */
  get pending(): boolean {
    return Atomics.load(this.i32, W_WRITTEN) !== this.applied;
  }

  /** Reader side: drops from `cache` what every record since the last call names, oldest first. */
  applyTo(cache: ConfigInvalidator): void {
    if (!this.pending) return;
    const a = this.i32;
    this.lock();
    const written = Atomics.load(a, W_WRITTEN);
    const behind = (written - this.applied) >>> 0;
    const ranges: number[] = [];
    if (behind > RECORDS) ranges.push(0, TWO32);
    else {
      for (let k = this.applied >>> 0; k !== written >>> 0; k = (k + 1) >>> 0) {
        const at = RECORDS_BASE + (k % RECORDS) * RECORD_WORDS;
        const first = (a[at] ?? 0) >>> 0;
        ranges.push(first, ((a[at + 1] ?? 0) >>> 0) - first + 1);
      }
    }
    this.applied = written;
    this.unlock();
    // Applied outside the lock: the cache is this thread's own.
    for (let i = 0; i < ranges.length; i += 2) cache.invalidateConfig(ranges[i] ?? 0, ranges[i + 1] ?? 0);
  }
}
