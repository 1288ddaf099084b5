/**
 * The way an ATC_INV reaches the device it names. The devices' ATCs (services/machine/device-dma.ts,
 * ATS) live with the device model in the psmmu main thread, where no VCMDQ worker can touch them;
 * the pSMMU's main CMDQ runs in that thread but writes here too, so every queue takes one path. A
 * SharedArrayBuffer log: the executor appends (StreamID, first page, pages) and bumps WRITTEN before
 * the queue moves CONS past the command, so whoever sees the command complete (its CONS, a later
 * CMD_SYNC: the SMMU's sync waits for the device's Invalidation Completion) finds it applied at the
 * device's next access: the device model reads the log before each burst of accesses (one
 * Atomics.load when nothing is new). A reader that fell more than RECORDS behind drops its whole
 * ATC, which is always safe.
 *
 * Writers and the reader take a small futex-style lock around a record, as config-invalidations.ts.
 */
import type { AtcInvalidator } from '../services/machine/smmu-executor.js';

const MAGIC = 0x41544349; // 'ATCI'
const W_MAGIC = 0;
const W_LOCK = 1;
/** Records appended so far (mod 2^32). */
const W_WRITTEN = 2;
/** The header, in 32-bit words (a multiple of 2, so the records align as float64). */
const HEADER_WORDS = 4;
const RECORDS = 64;
/** Per record, in float64: StreamID, first 4 KiB page, pages (2^52: every address). */
const RECORD_DOUBLES = 3;
const BYTES = HEADER_WORDS * 4 + RECORDS * RECORD_DOUBLES * 8;

const LOCK_FREE = 0;
const LOCK_HELD = 1;
const LOCK_CONTENDED = 2;
const SPINS = 64;

/** Every StreamID and every page: what a reader that fell behind drops. */
const ALL = -1;

export class AtcInvalidations implements AtcInvalidator {
  readonly buffer: SharedArrayBuffer;
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  /** Records this instance has handed to applyTo (reader side). */
  private applied: number;

  /** A new, empty log in a fresh SharedArrayBuffer. */
  static create(): AtcInvalidations {
    const buffer = new SharedArrayBuffer(BYTES);
    new Int32Array(buffer)[W_MAGIC] = MAGIC;
    return new AtcInvalidations(buffer);
  }

  /** Another view of a log created elsewhere (a worker thread passes `buffer`). */
  static attach(buffer: SharedArrayBuffer): AtcInvalidations {
    return new AtcInvalidations(buffer);
  }

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.i32 = new Int32Array(buffer);
    if (buffer.byteLength < BYTES || this.i32[W_MAGIC] !== MAGIC) {
      throw new TypeError('buffer is not an ATC-invalidation log (was it made by AtcInvalidations.create from the same build?)');
    }
    this.f64 = new Float64Array(buffer, HEADER_WORDS * 4, RECORDS * RECORD_DOUBLES);
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

  /** Writer side (an executed ATC_INV): the ATC entries of StreamID `sid` in pages [firstPage, firstPage + pages). */
  invalidateAtc(sid: number, firstPage: number, pages: number): void {
    if (pages <= 0) return;
    this.lock();
    const k = Atomics.load(this.i32, W_WRITTEN) >>> 0;
    const at = (k % RECORDS) * RECORD_DOUBLES;
    this.f64[at] = sid >>> 0;
    this.f64[at + 1] = firstPage;
    this.f64[at + 2] = pages;
    Atomics.store(this.i32, W_WRITTEN, (k + 1) | 0);
    this.unlock();
  }

  /** Whether records arrived since the last applyTo (one atomic load). */
  get pending(): boolean {
    return Atomics.load(this.i32, W_WRITTEN) !== this.applied;
  }

  /**
   * Reader side: hands every record since the last call to `drop`, oldest first; a reader that fell
   * behind gets one drop of everything (sid -1). Returns the records applied.
   */
  applyTo(drop: (sid: number, firstPage: number, pages: number) => void): number {
    if (!this.pending) return 0;
    this.lock();
    const written = Atomics.load(this.i32, W_WRITTEN);
    const behind = (written - this.applied) >>> 0;
    const records: number[] = [];
    if (behind > RECORDS) records.push(ALL, 0, 2 ** 52);
    else {
      for (let k = this.applied >>> 0; k !== written >>> 0; k = (k + 1) >>> 0) {
        const at = (k % RECORDS) * RECORD_DOUBLES;
        records.push(this.f64[at] ?? 0, this.f64[at + 1] ?? 0, this.f64[at + 2] ?? 0);
      }
    }
    this.applied = written;
    this.unlock();
    // Applied outside the lock: the ATCs are this thread's own.
    for (let i = 0; i < records.length; i += RECORD_DOUBLES) drop(records[i] ?? 0, records[i + 1] ?? 0, records[i + 2] ?? 0);
    return records.length / RECORD_DOUBLES;
  }
}
