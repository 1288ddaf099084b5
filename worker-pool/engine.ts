/**
 * The VCMDQ consumer: what the CMDQV hardware does with one queue, from CONS to PROD. Runs in the
 * worker threads (vcmdq-worker.ts) and, synchronously, in unit tests.
 *
 * Guest queues (HYP_OWN=0) take only TLBI_NH_ASID, TLBI_NH_VA, ATC_INV and CMD_SYNC; TLBIs get the
 * VINTF's VMID (whatever VMID the guest wrote), ATC_INV's vSID is rewritten through the VINTF's
 * SID_MATCH/SID_REPLACE pairs. The host queues (VINTF0) take every legal command with its own VMID
 * and SIDs. Anything refused halts this queue only: CONS stays on the command with CONS.ERR = ILL,
 * GERROR.CMDQ_ERR toggles and the queue's bit is raised in the pool's error map (the vEVENT).
 *
 * Hot path: the four command dwords are read from an Int32Array over the ring, fields are shifts
 * and masks, nothing is allocated and no BigInt is made per command. CONS is published every
 * PUBLISH_EVERY commands and when the pass ends, not per command.
 */
import { Opcode, isLegalOpcode } from '../services/common/smmu/commands.js';
import { CERROR } from '../services/common/smmu/queue.js';
import type { Iotlb } from '../services/psmmu/iotlb.js';
import { raiseQueueError } from './control.js';
import {
  CONFIG_EN, F_ATC_INV, F_COMMANDS, F_HALTS, F_INVALIDATED, F_LAST_ATC_PSID, F_LAST_ATC_VSID, F_OTHER, F_SYNCS, F_TLBI_ASID,
  F_TLBI_VA, GERROR_CMDQ_ERR, MSI_RECORDS, MSI_RECORD_WORDS, R_CONFIG, R_CONS, R_CONS_WAITERS, R_GERROR, R_GERRORN, R_MSI_BASE,
  R_MSI_COUNT, R_PROD, R_STATUS, SLOT0_WORD, STATUS_EN, viewRing, type RingView,
} from './ring.js';
import { V_VMID, replaceSid } from './vintf.js';

/** One queue as its consumer holds it. */
export interface ConsumerQueue {
  readonly view: RingView;
  /** Global VCMDQ index (its bit in the error map). */
  readonly queue: number;
  readonly vintf: number;
  /** Int32 index of the VINTF's registers in the VINTF table. */
  readonly vintfBase: number;
  readonly hypOwn: boolean;
}

/** What every queue of a consumer shares. */
export interface ConsumerEnv {
  readonly iotlb: Iotlb;
  readonly vintfTable: Int32Array;
  /** The pool's control block (error map, event sequence). */
  readonly ctl: Int32Array;
}

export function consumerQueue(buffer: SharedArrayBuffer, queue: number, vintf: number, vintfBase: number, hypOwn: boolean): ConsumerQueue {
  return { view: viewRing(buffer), queue, vintf, vintfBase, hypOwn };
}

const ERR_MASK = 0x7f << 24;
const PUBLISH_EVERY = 256;
/**
 * Most commands one pass consumes before returning to the worker loop, so the other queues of the
 * worker get their turn and STOP is seen even while a producer keeps one queue full.
 */
export const PASS_BUDGET = 4096;

/** 2^scale as a number (SCALE goes to 31, past what a 32-bit shift can hold). */
const POW2 = Float64Array.from({ length: 32 }, (_, i) => 2 ** i);
/** 4K pages per granule by TG (0 is "not a range"). */
const GRANULE_PAGES = Int32Array.of(1, 1, 4, 16);

const OP_NH_ALL = Opcode.TLBI_NH_ALL;
const OP_NH_ASID = Opcode.TLBI_NH_ASID;
const OP_NH_VA = Opcode.TLBI_NH_VA;
const OP_NH_VAA = Opcode.TLBI_NH_VAA;
const OP_S12_VMALL = Opcode.TLBI_S12_VMALL;
const OP_S2_IPA = Opcode.TLBI_S2_IPA;
const OP_NSNH_ALL = Opcode.TLBI_NSNH_ALL;
const OP_ATC_INV = Opcode.ATC_INV;
const OP_SYNC = Opcode.CMD_SYNC;

/** Pages a TLBI covers: (NUM+1) << SCALE granules of TG, or one page when TG=0 (a single address). */
function rangePages(w0lo: number, w1lo: number): number {
  const tg = (w1lo >>> 10) & 3;
  if (tg === 0) return 1;
  return (((w0lo >>> 12) & 31) + 1) * POW2[(w0lo >>> 20) & 31]! * GRANULE_PAGES[tg]!;
}

/** Page number of w1's address field [63:12] (VA; an IPA uses [51:12]). */
function addrPage(w1lo: number, w1hi: number, hiMask: number): number {
  return ((w1hi & hiMask) >>> 0) * 0x10_0000 + (w1lo >>> 12);
}

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

  const iotlb = env.iotlb;
  const guest = !q.hypOwn;
  const vmid = guest ? Atomics.load(env.vintfTable, q.vintfBase + V_VMID) & 0xffff : 0;
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
    const op = w0lo & 0xff;
    if (op === OP_NH_VA) {
      invalidated += iotlb.invalidateVaPages(guest ? vmid : w0hi & 0xffff, w0hi >>> 16, addrPage(w1lo, w1hi, -1), rangePages(w0lo, w1lo));
      tlbiVa++;
    } else if (op === OP_SYNC) {
      const cs = (w0lo >>> 12) & 3;
      if (cs === 3) {
        err = CERROR.ILL;
        break;
      }
      if (cs === 1) recordMsi(i32, w0hi, w1lo, w1hi, position + n);
      syncs++;
    } else if (op === OP_NH_ASID) {
      invalidated += iotlb.invalidateAsid(guest ? vmid : w0hi & 0xffff, w0hi >>> 16);
      tlbiAsid++;
    } else if (op === OP_ATC_INV) {
      if (guest) {
        // No ATC is modelled: the pSID is recorded so the rewrite can be observed.
        const vsid = w0hi >>> 0;
        const psid = vsid > 0x7fff_ffff ? -1 : replaceSid(env.vintfTable, q.vintfBase, vsid);
        if (psid < 0) {
          err = CERROR.ILL;
          break;
        }
        f64[F_LAST_ATC_VSID] = vsid;
        f64[F_LAST_ATC_PSID] = psid;
      } else {
        f64[F_LAST_ATC_VSID] = w0hi >>> 0;
        f64[F_LAST_ATC_PSID] = w0hi >>> 0;
      }
      atc++;
    } else if (guest) {
      err = CERROR.ILL;
      break;
    } else {
      const r = hostCommand(iotlb, op, w0lo, w0hi, w1lo, w1hi);
      if (r < 0) {
        err = CERROR.ILL;
        break;
      }
      invalidated += r;
      other++;
    }
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

/**
 * A host (VINTF0) command other than NH_VA/NH_ASID/ATC_INV/CMD_SYNC. Returns entries invalidated,
 * or -1 for an illegal opcode. Configuration and ATS/PRI commands have no cached state to act on
 * in this model.
 */
function hostCommand(iotlb: Iotlb, op: number, w0lo: number, w0hi: number, w1lo: number, w1hi: number): number {
  const vmid = w0hi & 0xffff;
  switch (op) {
    case OP_NH_VAA:
      return iotlb.invalidateVaPages(vmid, -1, addrPage(w1lo, w1hi, -1), rangePages(w0lo, w1lo));
    case OP_NH_ALL:
      return iotlb.invalidateStage1(vmid);
    case OP_S12_VMALL:
      return iotlb.invalidateVmid(vmid);
    case OP_S2_IPA: {
      const page = addrPage(w1lo, w1hi, 0xfffff);
      return iotlb.invalidateIpa(vmid, page * 4096, rangePages(w0lo, w1lo) * 4096);
    }
    case OP_NSNH_ALL:
      return iotlb.invalidateAll();
    default:
      return isLegalOpcode(op) ? 0 : -1;
  }
}
