/**
 * One VCMDQ as shared memory: a SharedArrayBuffer holding the queue's registers (PROD, CONS with
 * ERR [30:24], CONFIG, STATUS, GERROR, GERRORN), its statistics, a small ring of recorded CMD_SYNC
 * MSI writes, and then 2^log2 16-byte command slots. Registers are Int32 words accessed with
 * Atomics; command slots are plain memory whose visibility the PROD/CONS stores order (writer:
 * slots then Atomics.store(PROD); reader: Atomics.load(PROD) then slots).
 *
 * The producer (RingProducer, main thread) is the only writer of PROD, the consumer (the worker,
 * engine.ts) the only writer of CONS: neither needs a lock. PROD and CONS sit on separate 64-byte
 * lines so the two threads do not bounce one line on every command.
 */
import { CMD_SIZE } from '../services/formats/smmu/commands.js';
import * as Q from '../services/formats/smmu/queue.js';
import { GERROR_CMDQ_ERR } from '../services/formats/smmu/registers.js';

// Register words (Int32 index).
export const R_PROD = 0;
export const R_CONS = 16;
/** Main-thread waiters parked on CONS: the consumer only calls Atomics.notify when this is non-zero. */
export const R_CONS_WAITERS = 17;
export const R_CONFIG = 32;
export const R_STATUS = 33;
export const R_GERROR = 34;
export const R_GERRORN = 35;
export const R_LOG2 = 36;
export const R_QUEUE = 37;
export const R_VINTF = 38;
export const R_LIDX = 39;
/** CMD_SYNC with CS=IRQ completed so far (monotonic); record k sits in MSI slot k % MSI_RECORDS. */
export const R_MSI_COUNT = 40;

export const CONFIG_EN = 1;
export const STATUS_EN = 1;
export { GERROR_CMDQ_ERR };

// Statistics, float64 (exact counts past 2^32), written only by the consumer. Float64 index.
export const F_COMMANDS = 24;
export const F_TLBI_VA = 25;
export const F_TLBI_ASID = 26;
export const F_ATC_INV = 27;
export const F_SYNCS = 28;
export const F_INVALIDATED = 29;
export const F_HALTS = 30;
export const F_OTHER = 31;
/** Last ATC_INV seen: its vSID and the pSID the VINTF's SID_MATCH/SID_REPLACE pairs gave. */
export const F_LAST_ATC_VSID = 32;
export const F_LAST_ATC_PSID = 33;

// MSI records: [addrLo, addrHi, data, stream position of the CMD_SYNC mod 2^32], Int32 words.
export const R_MSI_BASE = 96;
export const MSI_RECORDS = 64;
export const MSI_RECORD_WORDS = 4;

export const HEADER_BYTES = 2048;
/** Int32 index of slot 0's first dword. */
export const SLOT0_WORD = HEADER_BYTES / 4;

/** Queue size limits: at least 32 bytes (2 entries), at most the SMMU's 2^19 entries (IDR1.CMDQS). */
export const MIN_LOG2 = 1;
export const MAX_LOG2 = 19;

export function ringBytes(log2: number): number {
  return HEADER_BYTES + (CMD_SIZE << log2);
}

/** Typed views of one ring buffer; both threads build their own over the same SharedArrayBuffer. */
export interface RingView {
  readonly buffer: SharedArrayBuffer;
  readonly log2: number;
  readonly i32: Int32Array;
  readonly u8: Uint8Array;
  readonly f64: Float64Array;
}

export interface RingIds {
  /** Global VCMDQ index in the CMDQV (0..127). */
  queue: number;
  vintf: number;
  /** Logical index of the queue inside its VINTF. */
  lidx: number;
}

/** A fresh, disabled ring of 2^log2 entries (log2 is checked by the CMDQV model before this). */
export function createRing(log2: number, ids: RingIds): RingView {
  const view = viewRing(new SharedArrayBuffer(ringBytes(log2)), log2);
  view.i32[R_LOG2] = log2;
  view.i32[R_QUEUE] = ids.queue;
  view.i32[R_VINTF] = ids.vintf;
  view.i32[R_LIDX] = ids.lidx;
  return view;
}

export function viewRing(buffer: SharedArrayBuffer, log2?: number): RingView {
  const i32 = new Int32Array(buffer);
  return { buffer, log2: log2 ?? i32[R_LOG2] ?? 0, i32, u8: new Uint8Array(buffer), f64: new Float64Array(buffer) };
}

export function isHalted(view: RingView): boolean {
  return ((Atomics.load(view.i32, R_GERROR) ^ Atomics.load(view.i32, R_GERRORN)) & GERROR_CMDQ_ERR) !== 0;
}

/** Byte offset of the slot a PROD/CONS value points at. */
export function slotByte(view: RingView, reg: number): number {
  return HEADER_BYTES + Q.slotOffset(reg, view.log2, CMD_SIZE);
}

export interface MsiWrite {
  /** MSIADDR of the CMD_SYNC: where the guest expects MSIDATA written. */
  addr: number;
  data: number;
}

/**
 * The producer side of one ring (the guest driver's view: it owns PROD). Keeps a shadow of PROD
 * and the total number of commands ever written, from which the consumed total follows without
 * ambiguity: consumed = written - used(PROD, CONS), since used() is always in 0..2^log2.
 */
export class RingProducer {
  private prod = 0;
  private written = 0;
  private msiTaken = 0;
  private readonly msiBacklog: (MsiWrite & { position: number })[] = [];

  constructor(readonly view: RingView) {}

  /** Commands written so far (monotonic). */
  get total(): number {
    return this.written;
  }

  get prodReg(): number {
    return this.prod;
  }

  cons(): number {
    return Atomics.load(this.view.i32, R_CONS);
  }

  /** Slots free for the producer right now. */
  space(): number {
    return Q.free(this.prod, this.cons(), this.view.log2);
  }

  /** Commands the consumer has passed so far (monotonic, same scale as `total`). */
  consumedTotal(): number {
    return this.written - Q.used(this.prod, this.cons(), this.view.log2);
  }

  /**
   * Copies up to `count` commands from src (16 bytes each, starting at command `from`) into the
   * slots at PROD, splitting at the end of the ring, then publishes PROD once. Returns how many
   * fit. `cons` is the CONS value the space is computed from: a caller that waits for space when
   * nothing fit must wait on that same value, not a fresh read (which may already be the last).
   */
  write(src: Uint8Array, from: number, count: number, cons = this.cons()): number {
    const { log2, u8, i32 } = this.view;
    const n = Math.min(count, Q.free(this.prod, cons, log2));
    if (n <= 0) return 0;
    const idx = Q.index(this.prod, log2);
    const first = Math.min(n, (1 << log2) - idx);
    const at = from * CMD_SIZE;
    u8.set(src.subarray(at, at + first * CMD_SIZE), HEADER_BYTES + idx * CMD_SIZE);
    if (first < n) u8.set(src.subarray(at + first * CMD_SIZE, at + n * CMD_SIZE), HEADER_BYTES);
    this.prod = Q.inc(this.prod, log2, n);
    this.written += n;
    Atomics.store(i32, R_PROD, this.prod);
    return n;
  }

  /**
   * MSI writes the consumer recorded for CMD_SYNCs before stream position `upTo` (all when
   * omitted), oldest first; `lost` counts records overwritten before they were read.
   */
  takeMsiWrites(upTo?: number): { writes: MsiWrite[]; lost: number } {
    const lost = this.pullMsi();
    let k = 0;
    if (upTo === undefined) k = this.msiBacklog.length;
    else {
      const limit = upTo >>> 0;
      // Positions are mod 2^32; a submission never spans 2^31 commands, so the signed difference orders them.
      while (k < this.msiBacklog.length && (((this.msiBacklog[k]?.position ?? 0) - limit) | 0) < 0) k++;
    }
    const writes = this.msiBacklog.splice(0, k).map(({ addr, data }) => ({ addr, data }));
    return { writes, lost };
  }

  /** Moves new records from the shared record ring into the backlog. */
  private pullMsi(): number {
    const i32 = this.view.i32;
    const count = Atomics.load(i32, R_MSI_COUNT) >>> 0;
    let pending = (count - this.msiTaken) >>> 0;
    let lost = 0;
    if (pending > MSI_RECORDS) {
      lost = pending - MSI_RECORDS;
      pending = MSI_RECORDS;
    }
    for (let k = (count - pending) >>> 0; k !== count; k = (k + 1) >>> 0) {
      const w = R_MSI_BASE + (k % MSI_RECORDS) * MSI_RECORD_WORDS;
      this.msiBacklog.push({
        addr: ((i32[w + 1] ?? 0) >>> 0) * 0x1_0000_0000 + ((i32[w] ?? 0) >>> 0),
        data: (i32[w + 2] ?? 0) >>> 0,
        position: (i32[w + 3] ?? 0) >>> 0,
      });
    }
    this.msiTaken = count;
    return lost;
  }
}
