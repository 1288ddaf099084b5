/**
 * The VCMDQ consumer: what the CMDQV hardware does with one queue, from CONS to PROD. Runs in the
 * worker threads (vcmdq-worker.ts) and, synchronously, in unit tests.
 *
 * Each command goes through the SMMU's one command executor (services/machine/smmu-executor.ts),
 * the same one the main CMDQ runs, with the queue's owner: guest queues (HYP_OWN=0) take only what
 * the opcode table allows a guest VCMDQ (TLBI_NH_ASID, TLBI_NH_VA, ATC_INV, CMD_SYNC), get the
 * VINTF's VMID in their TLBIs (whatever VMID the guest wrote) and their ATC_INV vSIDs rewritten
 * through the VINTF's SID_MATCH/SID_REPLACE pairs. The host queues (VINTF0) take every legal command
 * with its own VMID and SIDs; their CFGIs reach the translator's configuration cache through the
 * shared log (config-invalidations.ts). Anything refused halts this queue only: CONS stays on the
 * command with CONS.ERR = ILL, GERROR.CMDQ_ERR toggles and the queue's bit is raised in the pool's
 * error map (the vEVENT).
 *
 * Hot path: the four command dwords are read from an Int32Array over the ring, the executor reads
 * the opcode table's typed arrays and decodes into one reused scope: nothing is allocated and no
 * BigInt is made per command. CONS is published every PUBLISH_EVERY commands and when the pass
 * ends, not per command.
 */
import { Opcode } from '../services/formats/smmu/commands.js';
import { NO_ATC, executeCommand, type AtcInvalidator, type ConfigInvalidator, type QueueOwner } from '../services/machine/smmu-executor.js';
import { CommandScope } from '../services/formats/smmu/semantics.js';
import { raiseQueueError } from './control.js';
import type { Iotlb } from './iotlb.js';
import {
  CONFIG_EN, F_ATC_INV, F_COMMANDS, F_HALTS, F_INVALIDATED, F_LAST_ATC_PSID, F_LAST_ATC_VSID, F_OTHER, F_SYNCS, F_TLBI_ASID,
  F_TLBI_VA, GERROR_CMDQ_ERR, MSI_RECORDS, MSI_RECORD_WORDS, R_CONFIG, R_CONS, R_CONS_WAITERS, R_GERROR, R_GERRORN, R_MSI_BASE,
  R_MSI_COUNT, R_PROD, R_STATUS, SLOT0_WORD, STATUS_EN, viewRing, type RingView,
} from './ring.js';
import { V_VMID, replaceSid } from './vintf.js';

/**
 * A VINTF as the owner of its queues: the VMID and SID pairs the hardware substitutes, read from
 * the shared VINTF table (the VMID once per pass, the pairs per command) so reprogramming shows.
 */
export class VintfOwner implements QueueOwner {
  vmid = 0;

  constructor(
    readonly guest: boolean,
    private readonly table: Int32Array,
    private readonly base: number,
  ) {}

  /** Reads the VINTF's VMID (before a pass). */
  refresh(): void {
    if (this.guest) this.vmid = Atomics.load(this.table, this.base + V_VMID) & 0xffff;
  }

  replaceSid(vsid: number): number {
    if (!this.guest) return vsid;
    // SID_MATCH holds vSID << 1: a vSID past 31 bits matches no pair.
    return vsid > 0x7fff_ffff ? -1 : replaceSid(this.table, this.base, vsid);
  }
}

/** One queue as its consumer holds it. */
export interface ConsumerQueue {
  readonly view: RingView;
  /** Global VCMDQ index (its bit in the error map). */
  readonly queue: number;
  readonly vintf: number;
  readonly owner: VintfOwner;
}

/** What every queue of a consumer shares. */
export interface ConsumerEnv {
  readonly iotlb: Iotlb;
  /** Where CFGIs go: the log the psmmu main thread's translator applies (config-invalidations.ts). */
  readonly config: ConfigInvalidator;
  /** Where ATC_INVs go: the log the psmmu main thread's devices apply (atc-invalidations.ts). */
  readonly atc?: AtcInvalidator;
  /** The pool's control block (error map, event sequence). */
  readonly ctl: Int32Array;
}

export function consumerQueue(buffer: SharedArrayBuffer, queue: number, vintf: number, vintfTable: Int32Array, vintfBase: number, hypOwn: boolean): ConsumerQueue {
  return { view: viewRing(buffer), queue, vintf, owner: new VintfOwner(!hypOwn, vintfTable, vintfBase) };
}

const ERR_MASK = 0x7f << 24;
const PUBLISH_EVERY = 256;
/**
 * Most commands one pass consumes before returning to the worker loop, so the other queues of the
 * worker get their turn and STOP is seen even while a producer keeps one queue full.
 */
export const PASS_BUDGET = 4096;

const OP_NH_VA = Opcode.TLBI_NH_VA;
const OP_NH_ASID = Opcode.TLBI_NH_ASID;
const OP_ATC_INV = Opcode.ATC_INV;
const OP_SYNC = Opcode.CMD_SYNC;

/** The scope of the command being executed; one per thread, reused (drain runs to completion). */
const scope = new CommandScope();

function publishCons(i32: Int32Array, cons: number): void {
  Atomics.store(i32, R_CONS, cons);
  if (Atomics.load(i32, R_CONS_WAITERS) !== 0) Atomics.notify(i32, R_CONS);
}

/**
 * Consumes the queue from CONS to PROD (re-reading PROD until it stops moving). Returns the number
 * of commands consumed; 0 when the queue is disabled, halted or empty. A queue found with CONS.ERR
 * set but GERRORN == GERROR was acknowledged by software: the error is cleared and the command at
 * CONS (replaced or not) is retried.
 */
export function drain(q: ConsumerQueue, env: ConsumerEnv): number {
  const { i32, f64, log2 } = q.view;
  if ((Atomics.load(i32, R_CONFIG) & CONFIG_EN) === 0) return 0;
  if (((Atomics.load(i32, R_GERROR) ^ Atomics.load(i32, R_GERRORN)) & GERROR_CMDQ_ERR) !== 0) return 0;
  if (i32[R_STATUS] !== STATUS_EN) Atomics.store(i32, R_STATUS, STATUS_EN);
  let cons = Atomics.load(i32, R_CONS);
  if ((cons & ERR_MASK) !== 0) {
    cons &= ~ERR_MASK;
    Atomics.store(i32, R_CONS, cons);
  }
  const ptrMask = (2 << log2) - 1;
  const idxMask = (1 << log2) - 1;
  let prod = Atomics.load(i32, R_PROD);
  if (((prod ^ cons) & ptrMask) === 0) return 0;

  const { iotlb, config } = env;
  const atcs = env.atc ?? NO_ATC;
  const owner = q.owner;
  owner.refresh();
  let n = 0;
  let tlbiVa = 0;
  let tlbiAsid = 0;
  let atc = 0;
  let syncs = 0;
  let other = 0;
  let invalidated = 0;
  let err = 0;
  // Stream position of the next command (commands this queue consumed so far), for MSI records.
  const position = f64[F_COMMANDS]!;
  while (n < PASS_BUDGET) {
    if (((prod ^ cons) & ptrMask) === 0) {
      prod = Atomics.load(i32, R_PROD);
      if (((prod ^ cons) & ptrMask) === 0) break;
    }
    const w = SLOT0_WORD + ((cons & idxMask) << 2);
    const w0lo = i32[w]!;
    const w0hi = i32[w + 1]!;
    const w1lo = i32[w + 2]!;
    const w1hi = i32[w + 3]!;
    const r = executeCommand(w0lo, w0hi, w1lo, w1hi, owner, iotlb, config, scope, atcs);
    if (r < 0) {
      err = -r;
      break;
    }
    invalidated += r;
    const op = w0lo & 0xff;
    if (op === OP_NH_VA) tlbiVa++;
    else if (op === OP_SYNC) {
      // CS=IRQ: the MSI write that tells the guest this sync completed.
      if (((w0lo >>> 12) & 3) === 1) recordMsi(i32, w0hi, w1lo, w1hi, position + n);
      syncs++;
    } else if (op === OP_NH_ASID) tlbiAsid++;
    else if (op === OP_ATC_INV) {
      // The device's ATC got it through the log (env.atc); the pSID is recorded so the rewrite can be observed.
      f64[F_LAST_ATC_VSID] = w0hi >>> 0;
      f64[F_LAST_ATC_PSID] = scope.sid;
      atc++;
    } else other++;
    cons = (cons & ~ptrMask) | ((cons + 1) & ptrMask);
    n++;
    if (n % PUBLISH_EVERY === 0) publishCons(i32, cons);
  }
  f64[F_COMMANDS] = f64[F_COMMANDS]! + n;
  f64[F_TLBI_VA] = f64[F_TLBI_VA]! + tlbiVa;
  f64[F_TLBI_ASID] = f64[F_TLBI_ASID]! + tlbiAsid;
  f64[F_ATC_INV] = f64[F_ATC_INV]! + atc;
  f64[F_SYNCS] = f64[F_SYNCS]! + syncs;
  f64[F_OTHER] = f64[F_OTHER]! + other;
  f64[F_INVALIDATED] = f64[F_INVALIDATED]! + invalidated;
  if (err !== 0) {
    f64[F_HALTS] = f64[F_HALTS]! + 1;
    halt(q, env, cons, err);
  } else {
    publishCons(i32, cons);
  }
  return n;
}

/**
 * Stops the queue on the command at `cons`. CONS (with ERR) is stored before GERROR toggles, so a
 * thread that sees the toggle reads the final CONS; CONS waiters are notified after the toggle,
 * so one woken by the CONS store alone is woken again once the halt is visible.
 */
function halt(q: ConsumerQueue, env: ConsumerEnv, cons: number, err: number): void {
  const i32 = q.view.i32;
  Atomics.store(i32, R_CONS, ((cons & ~ERR_MASK) | (err << 24)) | 0);
  Atomics.xor(i32, R_GERROR, GERROR_CMDQ_ERR);
  Atomics.notify(i32, R_CONS);
  raiseQueueError(env.ctl, q.queue);
}

/**
 * CMD_SYNC with CS=IRQ: remember the MSI write (MSIADDR [51:2], MSIDATA) and the sync's position in
 * the queue's command stream (mod 2^32), so the main thread hands each submission its own writes.
 */
function recordMsi(i32: Int32Array, w0hi: number, w1lo: number, w1hi: number, position: number): void {
  const k = i32[R_MSI_COUNT]!;
  const at = R_MSI_BASE + ((k >>> 0) % MSI_RECORDS) * MSI_RECORD_WORDS;
  i32[at] = w1lo & ~3;
  i32[at + 1] = w1hi & 0xfffff;
  i32[at + 2] = w0hi;
  i32[at + 3] = position | 0;
  // Published before CONS passes the sync, so the reader of CONS sees the record.
  Atomics.store(i32, R_MSI_COUNT, (k + 1) | 0);
}
