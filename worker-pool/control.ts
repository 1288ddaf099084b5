/**
 * The pool-wide control block, one SharedArrayBuffer shared by the main thread and every worker:
 *
 * - STOP: set once by destroy(); workers finish their task when they see it.
 * - Per worker, on its own 128-byte stretch: the DOORBELL sequence word producers bump after
 *   publishing PROD (the worker sleeps on it with Atomics.wait), a SLEEPING flag so producers call
 *   Atomics.notify only when the worker actually sleeps, the setup-message sequence/ack pair
 *   (CTRL_SEQ/CTRL_ACK, see vcmdq-worker.ts) and a READY flag.
 * - The vEVENT channel: the LVCMDQ error bitmap (one bit per global VCMDQ, 128 bits, as the CMDQV's
 *   LVCMDQ_ERR_MAP registers) and EVENT_SEQ, bumped and notified after a bit is set. The main thread
 *   sleeps on EVENT_SEQ with Atomics.waitAsync, then reads the bitmap and the halted queues'
 *   registers to build its vEVENT records. A bitmap cannot overflow the way a record ring can.
 */

export const C_STOP = 0;
export const C_EVENT_SEQ = 1;
export const C_ERR_MAP = 4; // 4 words: VCMDQ 0..127
export const C_WORKER_BASE = 32;
export const C_WORKER_WORDS = 32;

// Offsets inside a worker's stretch.
export const W_DOORBELL = 0;
export const W_SLEEPING = 1;
export const W_CTRL_SEQ = 2;
export const W_CTRL_ACK = 3;
export const W_READY = 4;
export const W_WAKEUPS = 5;
/** Float64 index offset (from the stretch's float64 base) of busy milliseconds spent consuming. */
export const W_F_BUSY_MS = 4; // words 8..9
export const W_F_COMMANDS = 5; // words 10..11

export function controlBytes(workers: number): number {
  return (C_WORKER_BASE + workers * C_WORKER_WORDS) * 4;
}

export function workerBase(worker: number): number {
  return C_WORKER_BASE + worker * C_WORKER_WORDS;
}

/** Wakes the worker serving a queue after PROD was published (or GERRORN written). */
export function ringDoorbell(ctl: Int32Array, worker: number): void {
  const base = workerBase(worker);
  Atomics.add(ctl, base + W_DOORBELL, 1);
  // The worker sets SLEEPING before its last doorbell check, so seeing 0 here means it will see our add.
  if (Atomics.load(ctl, base + W_SLEEPING) !== 0) Atomics.notify(ctl, base + W_DOORBELL, 1);
}

/** Marks global VCMDQ `queue` in error and wakes the main thread's vEVENT watcher. */
export function raiseQueueError(ctl: Int32Array, queue: number): void {
  Atomics.or(ctl, C_ERR_MAP + (queue >>> 5), 1 << (queue & 31));
  Atomics.add(ctl, C_EVENT_SEQ, 1);
  Atomics.notify(ctl, C_EVENT_SEQ);
}

export function clearQueueError(ctl: Int32Array, queue: number): void {
  Atomics.and(ctl, C_ERR_MAP + (queue >>> 5), ~(1 << (queue & 31)));
}

export function queueErrorBit(ctl: Int32Array, queue: number): boolean {
  return (Atomics.load(ctl, C_ERR_MAP + (queue >>> 5)) & (1 << (queue & 31))) !== 0;
}
