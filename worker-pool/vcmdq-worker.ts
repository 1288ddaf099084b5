/**
 * The piscina worker: one long-running task per worker thread, serving every VCMDQ the pool gives
 * it until the pool's STOP word is set. The pool runs it with `atomics: 'disabled'` and one task
 * per thread; the task never returns to the event loop while serving, so:
 *
 * - it sleeps on its DOORBELL word with Atomics.wait (a timeout bounds a missed wake-up and lets
 *   it notice STOP even then);
 * - setup messages (add/remove a queue) come over a MessagePort read synchronously with
 *   receiveMessageOnPort when CTRL_SEQ moves, and are acknowledged through CTRL_ACK. Commands never
 *   travel as messages: they are in the rings.
 */
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { AtcInvalidations } from './atc-invalidations.js';
import { ConfigInvalidations } from './config-invalidations.js';
import { C_STOP, W_CTRL_ACK, W_CTRL_SEQ, W_DOORBELL, W_F_BUSY_MS, W_F_COMMANDS, W_READY, W_SLEEPING, W_WAKEUPS, workerBase } from './control.js';
import { consumerQueue, drain, type ConsumerEnv, type ConsumerQueue } from './engine.js';
import { Iotlb } from './iotlb.js';

export interface ServeTask {
  /** Which stretch of the control block is this worker's. */
  worker: number;
  control: SharedArrayBuffer;
  iotlb: SharedArrayBuffer;
  /** The log that carries CFGIs to the psmmu main thread's configuration cache. */
  configLog: SharedArrayBuffer;
  /** The log ATC_INVs reach the devices' ATCs by (absent: no device behind has an ATC). */
  atcLog?: SharedArrayBuffer;
  vintfTable: SharedArrayBuffer;
  port: MessagePort;
  /** Longest sleep on the doorbell before looking at STOP again. */
  idleWaitMs: number;
}

export type SetupMessage =
  | { seq: number; type: 'add'; ring: SharedArrayBuffer; queue: number; vintf: number; vintfBase: number; hypOwn: boolean }
  | { seq: number; type: 'remove'; queue: number };

export interface ServeSummary {
  worker: number;
  commands: number;
  wakeups: number;
  busyMs: number;
}

export default function serve(task: ServeTask): ServeSummary {
  const ctl = new Int32Array(task.control);
  const stats = new Float64Array(task.control);
  const base = workerBase(task.worker);
  const fBase = base >> 1;
  const vintfTable = new Int32Array(task.vintfTable);
  const env: ConsumerEnv = { iotlb: Iotlb.attach(task.iotlb), config: ConfigInvalidations.attach(task.configLog), ...(task.atcLog ? { atc: AtcInvalidations.attach(task.atcLog) } : {}), ctl };
  let queues: ConsumerQueue[] = [];
  let applied = 0;
  let commands = 0;
  let busyMs = 0;
  let wakeups = 0;

  const applySetup = (): void => {
    for (let m = receiveMessageOnPort(task.port); m !== undefined; m = receiveMessageOnPort(task.port)) {
      const msg = m.message as SetupMessage;
      if (msg.type === 'add') queues = [...queues, consumerQueue(msg.ring, msg.queue, msg.vintf, vintfTable, msg.vintfBase, msg.hypOwn)];
      else queues = queues.filter((q) => q.queue !== msg.queue);
      applied = msg.seq;
    }
    Atomics.store(ctl, base + W_CTRL_ACK, applied);
    Atomics.notify(ctl, base + W_CTRL_ACK);
  };

  Atomics.store(ctl, base + W_READY, 1);
  Atomics.notify(ctl, base + W_READY);
  try {
    while (Atomics.load(ctl, C_STOP) === 0) {
      if (Atomics.load(ctl, base + W_CTRL_SEQ) !== applied) {
        applySetup();
        // postMessage enqueues before CTRL_SEQ moves, so this is only a guard: never sleep on a pending setup.
        if (Atomics.load(ctl, base + W_CTRL_SEQ) !== applied) continue;
      }
      // Read before draining: a PROD published after this read moves the doorbell, so the wait below returns at once.
      const seen = Atomics.load(ctl, base + W_DOORBELL);
      const t0 = performance.now();
      let work = 0;
      for (const q of queues) work += drain(q, env);
      if (work > 0) {
        commands += work;
        busyMs += performance.now() - t0;
        stats[fBase + W_F_BUSY_MS] = busyMs;
        stats[fBase + W_F_COMMANDS] = commands;
        continue;
      }
      Atomics.store(ctl, base + W_SLEEPING, 1);
      Atomics.wait(ctl, base + W_DOORBELL, seen, task.idleWaitMs);
      Atomics.store(ctl, base + W_SLEEPING, 0);
      wakeups++;
      Atomics.store(ctl, base + W_WAKEUPS, wakeups);
    }
  } finally {
    task.port.close();
  }
  return { worker: task.worker, commands, wakeups, busyMs };
}
