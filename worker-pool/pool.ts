/**
 * The main-thread side of a pSMMU's CMDQV: a piscina pool whose workers are the VCMDQ hardware,
 * the CMDQV bookkeeping (cmdqv.ts), and one Vcmdq handle per allocated queue.
 *
 * Data path, with no message per command: `submit` copies commands into the ring's slots, stores
 * PROD and bumps the serving worker's doorbell (Atomics.notify only if that worker sleeps); it
 * then parks on the CONS word with Atomics.waitAsync (the worker notifies CONS only when somebody
 * waits) and resolves when CONS has passed its last command or the queue halted.
 *
 * vEVENTs: a worker that halts a queue sets the queue's bit in the shared error map and bumps
 * EVENT_SEQ; the pool's watcher waits on EVENT_SEQ with Atomics.waitAsync and turns each newly set
 * bit into a VEvent record read from that queue's registers.
 *
 * Errors: see errors.ts. Allocation and programming requests return Results; submit resolves with
 * 'completed' or 'halted'; pool failures (worker died, pool destroyed) reject with a VcmdqError.
 */
import { availableParallelism } from 'node:os';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { CMD_SIZE } from '../services/formats/smmu/commands.js';
import * as Q from '../services/formats/smmu/queue.js';
import { waitWhileEqual, waitWhileEqualFor } from './atomics.js';
import { Cmdqv, type VintfInfo } from './cmdqv.js';
import type { AtcInvalidations } from './atc-invalidations.js';
import { ConfigInvalidations } from './config-invalidations.js';
import {
  C_ERR_MAP, C_EVENT_SEQ, C_STOP, W_CTRL_ACK, W_CTRL_SEQ, W_DOORBELL, W_F_BUSY_MS, W_F_COMMANDS, W_READY, W_WAKEUPS,
  clearQueueError, controlBytes, ringDoorbell, workerBase,
} from './control.js';
import { VcmdqError, ok, refuse, type Result } from './errors.js';
import type { Iotlb } from './iotlb.js';
import {
  CONFIG_EN, F_ATC_INV, F_COMMANDS, F_HALTS, F_INVALIDATED, F_LAST_ATC_PSID, F_LAST_ATC_VSID, F_OTHER, F_SYNCS, F_TLBI_ASID,
  F_TLBI_VA, R_CONFIG, R_CONS, R_CONS_WAITERS, R_GERROR, R_GERRORN, R_PROD, R_STATUS, RingProducer, createRing, isHalted,
  slotByte, type MsiWrite, type RingView,
} from './ring.js';
import type { ServeSummary, ServeTask, SetupMessage } from './vcmdq-worker.js';
import { workerFile } from './worker-file.js';

export interface VcmdqPoolOptions {
  /** The pSMMU's IOTLB; its buffer is shared with the workers. */
  iotlb: Iotlb;
  /**
   * Where the workers send the CFGIs the host's queues execute: the log the pSMMU's translator
   * applies to its configuration cache (default: a new log, `pool.configLog`).
   */
  configLog?: ConfigInvalidations;
  /** The log ATC_INVs reach the devices' ATCs by (ATS); absent: no device behind has an ATC. */
  atcLog?: AtcInvalidations;
  /** Worker threads (default: available cores, at most 4). Queues are spread over them. */
  workers?: number;
  /** VINTFs of the CMDQV, VINTF0 included (default 4). */
  vintfs?: number;
  /** Global VCMDQs of the CMDQV, at most 128 (default 8). */
  vcmdqs?: number;
  /** SID_MATCH/SID_REPLACE pairs per VINTF (default 16). */
  sidPairs?: number;
  /** Longest doorbell sleep of an idle worker before it re-checks STOP (default 100 ms). */
  idleWaitMs?: number;
  /** Time allowed for the worker threads to come up (default 10 s). */
  startTimeoutMs?: number;
  /** Compiled worker entry (default: dist/worker-pool/vcmdq-worker.js). */
  workerFile?: string;
}

/** A halted VCMDQ as the host reports it to the VMM. */
export interface VEvent {
  /** Global VCMDQ index (its bit in the LVCMDQ error map). */
  queue: number;
  vintf: number;
  /** Logical index of the queue in its VINTF. */
  lidx: number;
  /** CONS.ERR (CERROR_ILL = 1...). */
  error: number;
  /** The CONS register: index+wrap of the refused command, ERR in [30:24]. */
  cons: number;
  /** Opcode of the refused command. */
  opcode: number;
}

export type SubmitResult =
  | { status: 'completed'; commands: number; msi: MsiWrite[] }
  | {
      status: 'halted';
      /** Commands of this submission consumed before the halt. */
      commands: number;
      /** Commands of this submission written into the ring (the rest were not: the queue halted first). */
      written: number;
      /** Index in this submission of the refused command; -1 when an earlier submission's command halted the queue. */
      badIndex: number;
      error: number;
      cons: number;
      opcode: number;
      msi: MsiWrite[];
    };

export interface VcmdqRegisters {
  prod: number;
  cons: number;
  config: number;
  status: number;
  gerror: number;
  gerrorn: number;
}

export interface VcmdqStats {
  commands: number;
  tlbiVa: number;
  tlbiAsid: number;
  atcInv: number;
  syncs: number;
  /** Host-queue commands other than the four above. */
  other: number;
  /** IOTLB entries this queue's commands dropped. */
  invalidated: number;
  halts: number;
  /** The last ATC_INV's vSID and the pSID it was rewritten to (-1 before any). */
  lastAtcVsid: number;
  lastAtcPsid: number;
}

export interface WorkerStats {
  worker: number;
  commands: number;
  /** Milliseconds spent consuming (drain passes that did work). */
  busyMs: number;
  wakeups: number;
  queues: number;
}

const STOP_GRACE_MS = 2000;
/** Most worker threads one CMDQV starts on its own: VMs' queues rarely keep more than two cores busy. */
const MAX_PROPORTIONATE_WORKERS = 2;

/**
 * Worker threads for one CMDQV when `cmdqvs` of them (one per pSMMU process with queues) share this
 * host's cores: an even split of the cores, at least one each, never more than its queues. Sixteen
 * pSMMUs on two cores start one thread each, not 32 threads that mostly wait for a core.
 */
export function proportionateWorkers(queues: number, cmdqvs: number, cores = availableParallelism()): number {
  const share = Math.floor(cores / Math.max(1, cmdqvs));
  return Math.max(1, Math.min(queues, MAX_PROPORTIONATE_WORKERS, share));
}

/** A setup message before the pool numbers it. */
type SetupBody = SetupMessage extends infer M ? (M extends SetupMessage ? Omit<M, 'seq'> : never) : never;

/** What a Vcmdq needs from its pool. */
interface PoolLink {
  readonly ctl: Int32Array;
  check(): void;
  acknowledged(queue: number): void;
}

/** A submission waiting for CONS to pass it: commands [start, start + n) of the queue's stream. */
interface Pending {
  start: number;
  n: number;
  resolve: (r: SubmitResult) => void;
  reject: (e: unknown) => void;
}

export class Vcmdq {
  readonly producer: RingProducer;
  private gone = false;
  /** A writer owns the ring's PROD side (it may wait for space); later writers queue in call order. */
  private writerBusy = false;
  private readonly writers: (() => void)[] = [];
  /** Submissions in stream order; one watcher (pump) waits on CONS for all of them. */
  private readonly pending: Pending[] = [];
  private pumping = false;

  constructor(
    private readonly pool: PoolLink,
    readonly view: RingView,
    /** Global VCMDQ index. */
    readonly queue: number,
    readonly vintf: number,
    readonly lidx: number,
    /** Worker thread serving the queue. */
    readonly worker: number,
  ) {
    this.producer = new RingProducer(view);
  }

  get log2(): number {
    return this.view.log2;
  }

  get halted(): boolean {
    return isHalted(this.view);
  }

  registers(): VcmdqRegisters {
    const a = this.view.i32;
    return {
      prod: Atomics.load(a, R_PROD) >>> 0,
      cons: Atomics.load(a, R_CONS) >>> 0,
      config: Atomics.load(a, R_CONFIG),
      status: Atomics.load(a, R_STATUS),
      gerror: Atomics.load(a, R_GERROR),
      gerrorn: Atomics.load(a, R_GERRORN),
    };
  }

  /** Consumer counters (approximate while the worker runs, exact once the queue is idle). */
  stats(): VcmdqStats {
    const f = this.view.f64;
    const pick = (i: number): number => f[i] ?? 0;
    const seenAtc = pick(F_ATC_INV) > 0;
    return {
      commands: pick(F_COMMANDS),
      tlbiVa: pick(F_TLBI_VA),
      tlbiAsid: pick(F_TLBI_ASID),
      atcInv: pick(F_ATC_INV),
      syncs: pick(F_SYNCS),
      other: pick(F_OTHER),
      invalidated: pick(F_INVALIDATED),
      halts: pick(F_HALTS),
      lastAtcVsid: seenAtc ? pick(F_LAST_ATC_VSID) : -1,
      lastAtcPsid: seenAtc ? pick(F_LAST_ATC_PSID) : -1,
    };
  }

  /**
   * MSI writes of completed CMD_SYNCs (CS=IRQ) not yet handed out, for the VMM to deliver to the
   * guest. submit() already returns those of its own syncs (and any older ones left unclaimed).
   */
  takeMsiWrites(): { writes: MsiWrite[]; lost: number } {
    return this.producer.takeMsiWrites();
  }

  /** Called by the pool when the queue is freed or the pool is destroyed; wakes every waiter. */
  retire(): void {
    this.gone = true;
    Atomics.notify(this.view.i32, R_CONS);
  }

  private check(): void {
    this.pool.check();
    if (this.gone) throw new VcmdqError('E_VCMDQ_GONE', `VCMDQ ${this.queue} (VINTF ${this.vintf} LVCMDQ ${this.lidx}) was freed`);
  }

  private async waitCons(expected: number): Promise<void> {
    const a = this.view.i32;
    Atomics.add(a, R_CONS_WAITERS, 1);
    try {
      // The worker stores CONS, then reads WAITERS: it either sees our count and notifies, or its
      // store came first and waitAsync sees the new value. Untimed (see atomics.ts): a failing or
      // stopping pool notifies CONS itself.
      await waitWhileEqual(a, R_CONS, expected);
    } finally {
      Atomics.sub(a, R_CONS_WAITERS, 1);
    }
  }

  /** Takes the write side; undefined when it was free (the common case costs no promise). */
  private acquireWrite(): Promise<void> | undefined {
    if (!this.writerBusy) {
      this.writerBusy = true;
      return undefined;
    }
    return new Promise<void>((resolve) => this.writers.push(resolve));
  }

  /** Hands the write side to the next queued writer (it stays busy, so nobody overtakes). */
  private releaseWrite(): void {
    const next = this.writers.shift();
    if (next) next();
    else this.writerBusy = false;
  }

  /**
   * Writes `commands` (whole 16-byte commands) at PROD, waiting for space when the ring is full,
   * rings the doorbell, and resolves once CONS has passed the last of them ('completed') or the
   * queue halted first ('halted', naming the refused command). Submissions on one queue are
   * written in call order. While the queue is halted nothing more is written. `msi` holds the
   * MSI writes of this submission's CMD_SYNCs with CS=IRQ (and older unclaimed ones).
   */
  async submit(commands: Uint8Array): Promise<SubmitResult> {
    if (commands.length === 0 || commands.length % CMD_SIZE !== 0) {
      throw new VcmdqError('E_VCMDQ_ARGUMENT', `submission of ${commands.length} bytes is not a non-empty multiple of ${CMD_SIZE}`);
    }
    this.check();
    const n = commands.length / CMD_SIZE;
    const turn = this.acquireWrite();
    if (turn) await turn;
    let start: number;
    let written = 0;
    try {
      start = this.producer.total;
      while (written < n) {
        this.check();
        const cons = this.producer.cons();
        const k = this.producer.write(commands, written, n - written, cons);
        if (k > 0) {
          // Hardware takes PROD writes while halted too; the commands run after recovery.
          written += k;
          ringDoorbell(this.pool.ctl, this.worker);
        } else if (this.halted) {
          break; // full and halted: CONS cannot move until the guest recovers the queue
        } else {
          await this.waitCons(cons); // the snapshot that showed no space (see RingProducer.write)
        }
      }
    } finally {
      this.releaseWrite();
    }
    if (written < n) return this.haltedResult(start, written);
    return this.track(start, n);
  }

  /** Resolves once every command written so far is consumed, or the queue halted. */
  async flush(): Promise<SubmitResult> {
    this.check();
    const turn = this.acquireWrite();
    if (turn) await turn;
    this.releaseWrite();
    const start = this.producer.consumedTotal();
    return this.track(start, this.producer.total - start);
  }

  private track(start: number, n: number): Promise<SubmitResult> {
    return new Promise<SubmitResult>((resolve, reject) => {
      this.pending.push({ start, n, resolve, reject });
      if (!this.pumping) void this.pump();
    });
  }

  /** The one CONS watcher of this queue: settles pending submissions in order as CONS passes them. */
  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.pending.length > 0) {
        try {
          this.check();
        } catch (err) {
          for (const p of this.pending.splice(0)) p.reject(err);
          return;
        }
        const cons = this.producer.cons();
        const consumed = this.producer.total - Q.used(this.producer.prodReg, cons, this.view.log2);
        let first = this.pending[0];
        while (first && first.start + first.n <= consumed) {
          this.pending.shift();
          first.resolve({ status: 'completed', commands: first.n, msi: this.producer.takeMsiWrites(first.start + first.n).writes });
          first = this.pending[0];
        }
        if (!first) return;
        if (this.halted) {
          // CONS is final once the halt is visible (the worker stores CONS before toggling GERROR).
          const at = this.producer.consumedTotal();
          for (const p of this.pending.splice(0)) {
            p.resolve(
              p.start + p.n <= at
                ? { status: 'completed', commands: p.n, msi: this.producer.takeMsiWrites(p.start + p.n).writes }
                : this.haltedResult(p.start, p.n, at),
            );
          }
          return;
        }
        await this.waitCons(cons);
      }
    } finally {
      this.pumping = false;
    }
  }

  private haltedResult(start: number, written: number, at = this.producer.consumedTotal()): SubmitResult {
    const cons = this.producer.cons();
    const end = start + written;
    return {
      status: 'halted',
      commands: Math.max(0, Math.min(at, end) - start),
      written,
      badIndex: at >= start && at < end ? at - start : -1,
      error: Q.consErr(cons),
      cons: cons >>> 0,
      opcode: (this.view.u8[slotByte(this.view, cons)] ?? 0) & 0xff,
      msi: this.producer.takeMsiWrites(Math.min(at, end)).writes,
    };
  }

  /**
   * Recovers a halted queue the Linux way: optionally overwrite the refused slot (Linux writes a
   * CMD_SYNC there for CERROR_ILL), then GERRORN = GERROR. The worker clears CONS.ERR and resumes
   * at CONS. Use flush() to wait for what was queued behind the refused command.
   */
  acknowledge(replacement?: Uint8Array): Result<void> {
    if (this.gone) return refuse('E_VCMDQ_GONE', `VCMDQ ${this.queue} was freed`);
    if (!this.halted) return refuse('E_VCMDQ_NOT_HALTED', `VCMDQ ${this.queue} is not halted`);
    if (replacement !== undefined && replacement.length !== CMD_SIZE) {
      return refuse('E_VCMDQ_ARGUMENT', `replacement slot of ${replacement.length} bytes, expected ${CMD_SIZE}`);
    }
    const a = this.view.i32;
    if (replacement) this.view.u8.set(replacement, slotByte(this.view, Atomics.load(a, R_CONS)));
    // Error bit first: if the queue halts again right after resuming, its new bit must survive.
    this.pool.acknowledged(this.queue);
    Atomics.store(a, R_GERRORN, Atomics.load(a, R_GERROR));
    ringDoorbell(this.pool.ctl, this.worker);
    return ok(undefined);
  }
}

/** vEVENTs kept for takeVevents() when nobody drains them. */
const VEVENT_BACKLOG = 256;

export class VcmdqPool implements PoolLink {
  readonly ctl: Int32Array;
  readonly workers: number;
  private readonly cmdqv: Cmdqv;
  private readonly queues: (Vcmdq | undefined)[];
  private readonly seqs: number[];
  private readonly reported = new Set<number>();
  private readonly listeners = new Set<(e: VEvent) => void>();
  private readonly events: VEvent[] = [];
  private tasks: Promise<ServeSummary | undefined>[] = [];
  private ports: MessagePort[] = [];
  private control: Promise<unknown> = Promise.resolve();
  private failure: VcmdqError | undefined;
  private stopping = false;
  private destroyed = false;
  private destroying: Promise<void> | undefined;

  private constructor(
    readonly iotlb: Iotlb,
    readonly configLog: ConfigInvalidations,
    private readonly piscina: Piscina<ServeTask, ServeSummary>,
    private readonly controlBuffer: SharedArrayBuffer,
    cmdqv: Cmdqv,
    workers: number,
    private readonly idleWaitMs: number,
    private readonly atcLog?: AtcInvalidations,
  ) {
    this.ctl = new Int32Array(controlBuffer);
    this.cmdqv = cmdqv;
    this.workers = workers;
    this.queues = new Array<Vcmdq | undefined>(cmdqv.numVcmdqs).fill(undefined);
    this.seqs = new Array<number>(workers).fill(0);
  }

  /** Starts the worker threads and waits until each serves its control block. */
  static async start(options: VcmdqPoolOptions): Promise<VcmdqPool> {
    const workers = options.workers ?? Math.min(4, availableParallelism());
    if (!Number.isInteger(workers) || workers < 1 || workers > 128) throw new VcmdqError('E_CMDQV_CONFIG', `worker count ${workers} out of range 1..128`);
    const cmdqv = new Cmdqv({ vintfs: options.vintfs ?? 4, vcmdqs: options.vcmdqs ?? 8, sidPairs: options.sidPairs ?? 16 });
    const filename = options.workerFile ?? workerFile();
    const piscina = new Piscina<ServeTask, ServeSummary>({
      filename,
      minThreads: workers,
      maxThreads: workers,
      // One never-ending task per thread; the thread runs no event loop while serving.
      concurrentTasksPerWorker: 1,
      atomics: 'disabled',
    });
    const pool = new VcmdqPool(options.iotlb, options.configLog ?? ConfigInvalidations.create(), piscina, new SharedArrayBuffer(controlBytes(workers)), cmdqv, workers, options.idleWaitMs ?? 100, options.atcLog);
    try {
      pool.launch();
      await pool.ready(options.startTimeoutMs ?? 10_000);
    } catch (err) {
      await pool.destroy();
      throw err;
    }
    void pool.watchEvents();
    return pool;
  }

  private launch(): void {
    for (let w = 0; w < this.workers; w++) {
      const { port1, port2 } = new MessageChannel();
      this.ports.push(port1);
      const task: ServeTask = {
        worker: w, control: this.controlBuffer, iotlb: this.iotlb.buffer, configLog: this.configLog.buffer, ...(this.atcLog ? { atcLog: this.atcLog.buffer } : {}),
        vintfTable: this.cmdqv.vintfTable, port: port2, idleWaitMs: this.idleWaitMs,
      };
      this.tasks.push(
        this.piscina.run(task, { transferList: [port2] }).then(
          (summary) => {
            if (!this.stopping) this.fail(new VcmdqError('E_VCMDQ_WORKER', `VCMDQ worker ${w} ended its task before the pool stopped`));
            return summary;
          },
          (err: unknown) => {
            if (!this.stopping) this.fail(new VcmdqError('E_VCMDQ_WORKER', `VCMDQ worker ${w} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
            return undefined;
          },
        ),
      );
    }
  }

  private async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let w = 0; w < this.workers; w++) {
      const at = workerBase(w) + W_READY;
      while (Atomics.load(this.ctl, at) === 0) {
        this.check();
        const left = deadline - Date.now();
        if (left <= 0) throw new VcmdqError('E_VCMDQ_WORKER', `VCMDQ worker ${w} did not start within ${timeoutMs} ms`);
        await waitWhileEqualFor(this.ctl, at, 0, left);
      }
    }
  }

  private fail(err: VcmdqError): void {
    if (this.failure) return;
    this.failure = err;
    this.wakeAll();
  }

  private wakeAll(): void {
    for (const q of this.queues) if (q) Atomics.notify(q.view.i32, R_CONS);
    Atomics.notify(this.ctl, C_EVENT_SEQ);
    for (let w = 0; w < this.workers; w++) {
      Atomics.notify(this.ctl, workerBase(w) + W_CTRL_ACK);
      Atomics.notify(this.ctl, workerBase(w) + W_READY);
    }
  }

  /** Throws the pool's failure, or E_VCMDQ_GONE once destroyed. */
  check(): void {
    if (this.failure) throw this.failure;
    if (this.destroyed || this.stopping) throw new VcmdqError('E_VCMDQ_GONE', 'the VCMDQ pool was destroyed');
  }

  acknowledged(queue: number): void {
    clearQueueError(this.ctl, queue);
    this.reported.delete(queue);
  }

  // ---- CMDQV programming (VMM side) ----

  vintf(index: number): VintfInfo | undefined {
    return this.cmdqv.vintf(index);
  }

  get numVintfs(): number {
    return this.cmdqv.numVintfs;
  }

  get numVcmdqs(): number {
    return this.cmdqv.numVcmdqs;
  }

  assignVintf(vintf: number, vmid: number): Result<void> {
    return this.cmdqv.assignVintf(vintf, vmid);
  }

  releaseVintf(vintf: number): Result<void> {
    return this.cmdqv.releaseVintf(vintf);
  }

  setSidPair(vintf: number, slot: number, vsid: number, psid: number): Result<void> {
    return this.cmdqv.setSidPair(vintf, slot, vsid, psid);
  }

  clearSidPair(vintf: number, slot: number): Result<void> {
    return this.cmdqv.clearSidPair(vintf, slot);
  }

  /** Which VINTF and logical index a global VCMDQ is allocated to. */
  queueOwner(queue: number): { vintf: number; lidx: number } | undefined {
    return this.cmdqv.queueOwner(queue);
  }

  /** The handle of an allocated logical VCMDQ. */
  queue(vintf: number, lidx: number): Vcmdq | undefined {
    const g = this.cmdqv.vintf(vintf)?.queues[lidx];
    return g === undefined ? undefined : this.queues[g];
  }

  // ---- queue allocation ----

  /** Runs control operations one at a time (allocation order rules hold across awaits). */
  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.control.then(op, op);
    this.control = run.catch(() => undefined);
    return run;
  }

  private async setup(worker: number, message: SetupBody): Promise<void> {
    const seq = (this.seqs[worker] ?? 0) + 1;
    this.seqs[worker] = seq;
    const base = workerBase(worker);
    this.ports[worker]?.postMessage({ ...message, seq });
    Atomics.store(this.ctl, base + W_CTRL_SEQ, seq);
    ringDoorbell(this.ctl, worker);
    for (;;) {
      const acked = Atomics.load(this.ctl, base + W_CTRL_ACK);
      if (acked >= seq) return;
      if (this.failure) throw this.failure;
      if (this.destroyed) throw new VcmdqError('E_VCMDQ_GONE', 'the VCMDQ pool was destroyed');
      await waitWhileEqual(this.ctl, base + W_CTRL_ACK, acked);
    }
  }

  private pickWorker(): number {
    const load = new Array<number>(this.workers).fill(0);
    for (const q of this.queues) if (q) load[q.worker] = (load[q.worker] ?? 0) + 1;
    let best = 0;
    for (let w = 1; w < this.workers; w++) if ((load[w] ?? 0) < (load[best] ?? 0)) best = w;
    return best;
  }

  /**
   * Allocates logical VCMDQ `lidx` of `vintf` with 2^log2Entries slots, on global VCMDQ `at` when
   * the host names one (default: the lowest free), and hands it to the least loaded worker. Rule
   * violations come back as a refused Result (E_LVCMDQ_ORDER, E_LVCMDQ_SIZE, E_VINTF_*,
   * E_VCMDQ_EXHAUSTED, E_VCMDQ_BUSY); the promise rejects only if the pool itself failed.
   */
  allocate(vintf: number, lidx: number, log2Entries: number, at?: number): Promise<Result<Vcmdq>> {
    return this.serial(async () => {
      this.check();
      const r = this.cmdqv.allocate(vintf, lidx, log2Entries, at);
      if (!r.ok) return r;
      const queue = r.value.queue;
      const view = createRing(log2Entries, { queue, vintf, lidx });
      const worker = this.pickWorker();
      try {
        await this.setup(worker, { type: 'add', ring: view.buffer, queue, vintf, vintfBase: this.cmdqv.vintfBase(vintf), hypOwn: vintf === 0 });
      } catch (err) {
        this.cmdqv.free(vintf, lidx);
        throw err;
      }
      const q = new Vcmdq(this, view, queue, vintf, lidx, worker);
      this.queues[queue] = q;
      Atomics.store(view.i32, R_CONFIG, CONFIG_EN);
      return ok(q);
    });
  }

  /** Frees logical VCMDQ `lidx` of `vintf` (descending order); pending submits on it reject with E_VCMDQ_GONE. */
  free(vintf: number, lidx: number): Promise<Result<void>> {
    return this.serial(async () => {
      this.check();
      const r = this.cmdqv.checkFree(vintf, lidx);
      if (!r.ok) return r;
      const queue = r.value.queue;
      const q = this.queues[queue];
      if (q) {
        Atomics.store(q.view.i32, R_CONFIG, 0);
        await this.setup(q.worker, { type: 'remove', queue });
        q.retire();
      }
      this.queues[queue] = undefined;
      this.acknowledged(queue);
      this.cmdqv.free(vintf, lidx);
      return ok(undefined);
    });
  }

  // ---- vEVENTs ----

  /** Calls `listener` for every vEVENT from now on; returns the unsubscribe function. */
  onVevent(listener: (e: VEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** vEVENTs received since the last call. */
  takeVevents(): VEvent[] {
    return this.events.splice(0);
  }

  private async watchEvents(): Promise<void> {
    let seen = Atomics.load(this.ctl, C_EVENT_SEQ);
    this.scanErrors();
    while (!this.stopping && !this.failure) {
      await waitWhileEqual(this.ctl, C_EVENT_SEQ, seen);
      seen = Atomics.load(this.ctl, C_EVENT_SEQ);
      if (this.stopping || this.failure) return;
      this.scanErrors();
    }
  }

  private scanErrors(): void {
    for (let word = 0; word < 4; word++) {
      let bits = Atomics.load(this.ctl, C_ERR_MAP + word);
      while (bits !== 0) {
        const bit = 31 - Math.clz32(bits);
        bits &= ~(1 << bit);
        const queue = word * 32 + bit;
        const q = this.queues[queue];
        if (!q || this.reported.has(queue)) continue;
        this.reported.add(queue);
        const cons = Atomics.load(q.view.i32, R_CONS) >>> 0;
        const e: VEvent = { queue, vintf: q.vintf, lidx: q.lidx, error: Q.consErr(cons), cons, opcode: (q.view.u8[slotByte(q.view, cons)] ?? 0) & 0xff };
        // Kept for takeVevents() up to a bound, as a vEVENTQ of fixed size would; listeners see all.
        if (this.events.length < VEVENT_BACKLOG) this.events.push(e);
        for (const l of this.listeners) {
          try {
            l(e);
          } catch (err) {
            process.emitWarning(`vEVENT listener threw: ${err instanceof Error ? err.message : String(err)}`);
          }
        }
      }
    }
  }

  // ---- inspection and teardown ----

  /** Live worker threads of the piscina pool (0 after destroy). */
  get threadCount(): number {
    return this.piscina.threads.length;
  }

  workerStats(): WorkerStats[] {
    const f = new Float64Array(this.controlBuffer);
    const out: WorkerStats[] = [];
    for (let w = 0; w < this.workers; w++) {
      const base = workerBase(w);
      out.push({
        worker: w,
        commands: f[(base >> 1) + W_F_COMMANDS] ?? 0,
        busyMs: f[(base >> 1) + W_F_BUSY_MS] ?? 0,
        wakeups: Atomics.load(this.ctl, base + W_WAKEUPS),
        queues: this.queues.filter((q) => q?.worker === w).length,
      });
    }
    return out;
  }

  /**
   * Stops every worker task (STOP, then each doorbell), waits for the tasks to return, destroys the
   * piscina pool (terminating any thread that did not stop in time) and rejects pending submits
   * with E_VCMDQ_GONE. Idempotent.
   */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.stopping = true;
      Atomics.store(this.ctl, C_STOP, 1);
      for (let w = 0; w < this.workers; w++) {
        Atomics.add(this.ctl, workerBase(w) + W_DOORBELL, 1);
        Atomics.notify(this.ctl, workerBase(w) + W_DOORBELL);
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(this.tasks),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, STOP_GRACE_MS);
        }),
      ]);
      clearTimeout(timer);
      this.destroyed = true;
      for (const q of this.queues) q?.retire();
      this.wakeAll();
      for (const p of this.ports) p.close();
      await this.piscina.destroy();
    })();
    return this.destroying;
  }
}
