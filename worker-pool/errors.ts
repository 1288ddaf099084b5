/**
 * Coded errors of the CMDQV/VCMDQ model, one registry with stable codes (the fastify/undici shape
 * services/runtime/errors.ts uses). How they reach the caller:
 *
 * - Input the VMM or guest controls (allocation order, queue size, VINTF and SID-pair programming,
 *   acknowledging a queue that is not halted) is refused with a `Result` whose `error` is a
 *   VcmdqError: nothing is thrown, as hardware refuses a bad register write without stopping.
 * - Bad commands in a queue are not errors here at all: they halt that queue the architectural way
 *   (CONS.ERR, GERROR, a vEVENT) and `submit` resolves with status 'halted'.
 * - Failures of the pool itself (a worker thread died, the pool was destroyed under a pending
 *   submit, the worker file is missing or stale) reject the promise with a VcmdqError.
 * - Only configuration that cannot describe a CMDQV (e.g. 200 VCMDQs) throws synchronously, from
 *   a constructor, with a VcmdqError.
 */

export const VcmdqErrorCodes = {
  E_CMDQV_CONFIG: 'give 1..128 VCMDQs, 1..64 VINTFs and 1..64 SID pairs per VINTF (QEMU exposes 16)',
  E_VINTF_INDEX: 'name a VINTF below the CMDQV\'s VINTF count',
  E_VINTF_HOST: 'VINTF0 belongs to the host (HYP_OWN=1); give a guest VINTF (1..n-1)',
  E_VINTF_STATE: 'assign the VINTF to a VM (vmid) first, or free its queues before releasing it',
  E_VINTF_VMID: 'each guest VINTF needs its own VMID (0..65535) not used by another VINTF',
  E_SID_PAIR: 'use a pair slot below the VINTF\'s pair count, a vSID below 2^31, and a pSID no other VINTF maps',
  E_LVCMDQ_ORDER: 'allocate a VINTF\'s logical VCMDQs in ascending index order (0, 1, ...) and free them in descending order',
  E_LVCMDQ_SIZE: 'give log2 entries 1..19 (queue size a power of two of at least 32 bytes, at most the SMMU\'s 2^19 entries)',
  E_VCMDQ_EXHAUSTED: 'free a VCMDQ first or configure the CMDQV with more VCMDQs (hardware has up to 128)',
  E_VCMDQ_BUSY: 'map a global VCMDQ that no logical VCMDQ holds (CMDQ_ALLOC with ALLOCATED clear)',
  E_VCMDQ_NOT_HALTED: 'acknowledge only a halted queue (GERROR != GERRORN)',
  E_VCMDQ_ARGUMENT: 'submit a non-empty buffer of whole 16-byte commands; a replacement slot is one 16-byte command',
  E_VCMDQ_GONE: 'the queue was freed or its pool destroyed; allocate a new queue',
  E_VCMDQ_WORKER: 'a VCMDQ worker thread failed; see the cause, then destroy the pool and start a new one',
  E_VCMDQ_BUILD: 'run `npm run build`: worker threads run the compiled dist/worker-pool/vcmdq-worker.js',
} as const;

export type VcmdqErrorCode = keyof typeof VcmdqErrorCodes;

export class VcmdqError extends Error {
  readonly code: VcmdqErrorCode;
  readonly fix: string;

  constructor(code: VcmdqErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VcmdqError';
    this.code = code;
    this.fix = VcmdqErrorCodes[code];
  }
}

/** Outcome of an operation the VMM or guest drives: refused input is a value, not an exception. */
export type Result<T> = { ok: true; value: T } | { ok: false; error: VcmdqError };

export function ok<T>(value: T): Result<T> {
  return { ok: true, value };
}

export function refuse<T = never>(code: VcmdqErrorCode, message: string): Result<T> {
  return { ok: false, error: new VcmdqError(code, message) };
}
