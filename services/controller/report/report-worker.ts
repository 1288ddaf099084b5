/**
 * The worker thread `vmmsim report` builds its page in (write.ts): its heap limit bounds the
 * memory a large or pathological results file can take. It reads the file, writes the page and
 * sends back the page's path, or the VmmsimError that stopped it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { asVmmsimError } from '../../runtime/errors.js';
import { buildReport, type WorkerReply } from './write.js';

const { file, html } = workerData as { file: string; html: string };
let reply: WorkerReply;
try {
  reply = { path: buildReport(file, html) };
} catch (err) {
  const e = asVmmsimError(err);
  reply = { error: { code: e.code, message: e.message, fix: e.fix } };
}
parentPort?.postMessage(reply);
