/**
 * `npm run bench -- vcmdq`: command throughput of the VCMDQ workers (worker-pool/).
 *
 * The main thread plays the guests: per queue it submits batches of TLBI_NH_VA commands closed by a
 * CMD_SYNC (Linux batches up to 64 commands), keeping several batches in flight so the worker never
 * waits on the producer's round trip. The workers consume them against a shared IOTLB that is
 * refilled before every round, so each TLBI finds (and drops) a real entry.
 *
 * Reported per configuration (1, 2 and 4 VCMDQs by default, each in its own VINTF/VMID, spread over
 * min(queues, --workers) worker threads):
 *   commandsPerSec         aggregate, commands consumed / wall time of the timed phases;
 *   perWorker[].commandsPerSec   each worker's commands / the time it spent consuming (its own
 *                          speed, independent of how fast the single producer thread fed it).
 * The headline `commandsPerSec` is the one-queue, one-worker configuration. Target: >= 3,000,000
 * commands/s per worker.
 */
import { benchArgs } from './args.js';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { VmmsimError } from '../services/runtime/errors.js';
import { CMD_SIZE, cmdSync, encodeCommand, tlbiNhVa } from '../services/formats/smmu/commands.js';
import { Iotlb } from '../worker-pool/iotlb.js';
import { VcmdqPool, type Vcmdq, type SubmitResult } from '../worker-pool/pool.js';

const USAGE = `usage: npm run bench -- vcmdq [options]

Commands per second through the VCMDQ worker threads: batches of TLBI_NH_VA + CMD_SYNC submitted by
the main thread into each VCMDQ ring, consumed by the workers against a filled, shared IOTLB.

options:
  --queues LIST    VCMDQ counts to measure, comma separated (default 1,2,4)
  --workers N      worker threads at most (default: available cores, ${availableParallelism()} here)
  --seconds S      timed seconds per configuration (default 2)
  --batch N        commands per submission, the last one a CMD_SYNC (default 64)
  --log2 N         ring size, 2^N entries (default 10)
  --iotlb N        IOTLB entries, shared by the queues' VMs (default 16384)
  --json           print one JSON object on stdout (progress still goes to stderr)
`;

interface Options {
  queues: number[];
  workers: number;
  seconds: number;
  batch: number;
  log2: number;
  iotlb: number;
  json: boolean;
}

function parseOptions(argv: string[]): Options | undefined {
  const a = benchArgs('vcmdq', USAGE, argv, {
    queues: { type: 'string', default: '1,2,4' },
    workers: { type: 'string', default: String(availableParallelism()) },
    seconds: { type: 'string', default: '2' },
    batch: { type: 'string', default: '64' },
    log2: { type: 'string', default: '10' },
    iotlb: { type: 'string', default: '16384' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (!a) return undefined;
  const { values, number } = a;
  const log2 = number('log2', values.log2, 1, 19);
  return {
    queues: values.queues.split(',').map((q) => number('queues', q.trim(), 1, 32)),
    workers: number('workers', values.workers, 1, 64),
    seconds: number('seconds', values.seconds, 0.05, 3600, false),
    batch: number('batch', values.batch, 2, 1 << log2),
    log2,
    iotlb: number('iotlb', values.iotlb, 64, 1 << 22),
    json: values.json,
  };
}

const VMID_BASE = 0x100;
const ASID = 1;

interface Feed {
  queue: Vcmdq;
  vmid: number;
  /** Pages of this VM kept in the IOTLB (its share of the capacity). */
  pages: number;
  /** One round of commands: a TLBI_NH_VA for every page, in batches closed by a CMD_SYNC. */
  stream: Buffer;
  batches: number;
}

function buildStream(vmid: number, pages: number, batch: number): { stream: Buffer; batches: number } {
  const tlbisPerBatch = batch - 1;
  const batches = Math.ceil(pages / tlbisPerBatch);
  const stream = Buffer.alloc(batches * batch * CMD_SIZE);
  let page = 0;
  for (let b = 0; b < batches; b++) {
    for (let i = 0; i < tlbisPerBatch; i++, page++) {
      // The guest writes its own VMID field; the VINTF's VMID is what counts. TG=1 NUM=0: one 4K page.
      encodeCommand(tlbiNhVa({ vmid: 0, asid: ASID, va: BigInt((page % pages) * 4096), tg: 1, leaf: 1 }), stream, (b * batch + i) * CMD_SIZE);
    }
    encodeCommand(cmdSync(), stream, (b * batch + tlbisPerBatch) * CMD_SIZE);
  }
  return { stream, batches };
}

function fill(iotlb: Iotlb, feeds: readonly Feed[]): void {
  for (const f of feeds) {
    for (let p = 0; p < f.pages; p++) {
      iotlb.insert({ vmid: f.vmid, asid: ASID, stage2Only: false, page: p * 4096, pa: 0x8000_0000 + p * 4096, writable: true, ipa: 0x4000_0000 + p * 4096, leafDescAddr: 0x1000_0000 + p * 8 });
    }
  }
}

/** Submits one round of a feed with up to `depth` batches in flight. */
async function runRound(f: Feed, batch: number, depth: number): Promise<void> {
  const inflight: Promise<SubmitResult>[] = [];
  const bytes = batch * CMD_SIZE;
  for (let b = 0; b < f.batches; b++) {
    inflight.push(f.queue.submit(f.stream.subarray(b * bytes, (b + 1) * bytes)));
    if (inflight.length >= depth) check(await inflight.shift());
  }
  for (const p of inflight) check(await p);
}

function check(r: SubmitResult | undefined): void {
  if (r && r.status !== 'completed') throw new VmmsimError('E_RUN', `VCMDQ halted during the bench: ${JSON.stringify(r)}`);
}

interface WorkerResult {
  worker: number;
  queues: number;
  commands: number;
  busyMs: number;
  commandsPerSec: number;
}

interface ConfigResult {
  queues: number;
  workers: number;
  commands: number;
  seconds: number;
  commandsPerSec: number;
  perWorker: WorkerResult[];
  /** IOTLB entries dropped per TLBI_NH_VA (1 = every TLBI found its entry). */
  invalidatedPerTlbi: number;
  /** Share of the timed phases the main thread (the one producer for every queue) was busy. */
  producerUtilization: number;
  rounds: number;
}

async function measure(opts: Options, queues: number, progress: (l: string) => void): Promise<ConfigResult> {
  const workers = Math.min(queues, opts.workers);
  const iotlb = Iotlb.create(opts.iotlb);
  const pool = await VcmdqPool.start({ iotlb, workers, vintfs: queues + 1, vcmdqs: 2 * (queues + 1) });
  try {
    const feeds: Feed[] = [];
    // Each VM gets half its share of the IOTLB, so its pages do not evict each other.
    const pages = Math.max(1, Math.floor(opts.iotlb / queues / 2));
    for (let k = 0; k < queues; k++) {
      const vintf = k + 1;
      const vmid = VMID_BASE + k;
      const a = pool.assignVintf(vintf, vmid);
      if (!a.ok) throw a.error;
      const r = await pool.allocate(vintf, 0, opts.log2);
      if (!r.ok) throw r.error;
      feeds.push({ queue: r.value, vmid, pages, ...buildStream(vmid, pages, opts.batch) });
    }
    const depth = Math.max(1, Math.floor((1 << opts.log2) / opts.batch));
    // Warm-up round: JIT both sides.
    fill(iotlb, feeds);
    await Promise.all(feeds.map((f) => runRound(f, opts.batch, depth)));
    const before = pool.workerStats();
    const statsBefore = feeds.map((f) => f.queue.stats());
    let timedNs = 0n;
    let rounds = 0;
    let active = 0;
    let idle = 0;
    while (Number(timedNs) / 1e9 < opts.seconds) {
      fill(iotlb, feeds);
      const t0 = process.hrtime.bigint();
      const elu0 = performance.eventLoopUtilization();
      await Promise.all(feeds.map((f) => runRound(f, opts.batch, depth)));
      const elu = performance.eventLoopUtilization(elu0);
      timedNs += process.hrtime.bigint() - t0;
      active += elu.active;
      idle += elu.idle;
      rounds++;
    }
    const after = pool.workerStats();
    const seconds = Number(timedNs) / 1e9;
    let commands = 0;
    let tlbis = 0;
    let invalidated = 0;
    feeds.forEach((f, i) => {
      const s = f.queue.stats();
      const s0 = statsBefore[i];
      commands += s.commands - (s0?.commands ?? 0);
      tlbis += s.tlbiVa - (s0?.tlbiVa ?? 0);
      invalidated += s.invalidated - (s0?.invalidated ?? 0);
    });
    const perWorker = after.map((w, i): WorkerResult => {
      const c = w.commands - (before[i]?.commands ?? 0);
      const busy = w.busyMs - (before[i]?.busyMs ?? 0);
      return { worker: w.worker, queues: w.queues, commands: c, busyMs: Math.round(busy * 10) / 10, commandsPerSec: busy > 0 ? Math.round(c / (busy / 1000)) : 0 };
    });
    const result: ConfigResult = {
      queues,
      workers,
      commands,
      seconds: Math.round(seconds * 1000) / 1000,
      commandsPerSec: Math.round(commands / seconds),
      perWorker,
      invalidatedPerTlbi: tlbis > 0 ? Math.round((invalidated / tlbis) * 1000) / 1000 : 0,
      producerUtilization: active + idle > 0 ? Math.round((active / (active + idle)) * 100) / 100 : 0,
      rounds,
    };
    progress(
      `${queues} VCMDQ(s) on ${workers} worker(s): ${fmt(result.commandsPerSec)} commands/s aggregate; per worker ` +
        perWorker.map((w) => `#${w.worker} ${fmt(w.commandsPerSec)}/s busy (${w.queues} queue(s))`).join(', ') +
        `; ${result.invalidatedPerTlbi} entries dropped per TLBI; producer thread busy ${Math.round(result.producerUtilization * 100)}%`,
    );
    return result;
  } finally {
    await pool.destroy();
  }
}

function fmt(n: number): string {
  return n.toLocaleString('en-US');
}

export async function vcmdqBench(argv: string[]): Promise<void> {
  const opts = parseOptions(argv);
  if (!opts) return;
  const progress = (line: string): void => {
    process.stderr.write(`bench vcmdq: ${line}\n`);
  };
  progress(`batch ${opts.batch} (${opts.batch - 1} TLBI_NH_VA + CMD_SYNC), ring 2^${opts.log2}, IOTLB ${opts.iotlb} entries, ${opts.seconds} s per configuration`);
  const configs: ConfigResult[] = [];
  for (const q of opts.queues) configs.push(await measure(opts, q, progress));
  const one = configs.find((c) => c.queues === 1) ?? configs[0];
  const doc = {
    bench: 'vcmdq',
    node: process.version,
    cores: availableParallelism(),
    batch: opts.batch,
    log2: opts.log2,
    iotlbEntries: opts.iotlb,
    commandsPerSec: one?.commandsPerSec ?? 0,
    workerCommandsPerSec: one?.perWorker[0]?.commandsPerSec ?? 0,
    target: 3_000_000,
    configs,
  };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    return;
  }
  const lines = [
    `commandsPerSec ${fmt(doc.commandsPerSec)} (1 VCMDQ, 1 worker, end to end; worker busy-rate ${fmt(doc.workerCommandsPerSec)}/s; target ${fmt(doc.target)})`,
    '',
    'queues  workers  aggregate cmd/s   per-worker cmd/s (busy time)            dropped/TLBI  producer busy',
    ...configs.map(
      (c) =>
        `${String(c.queues).padStart(6)}  ${String(c.workers).padStart(7)}  ${fmt(c.commandsPerSec).padStart(15)}   ${c.perWorker
          .map((w) => fmt(w.commandsPerSec))
          .join(' / ')
          .padEnd(38)}  ${String(c.invalidatedPerTlbi).padEnd(12)}  ${Math.round(c.producerUtilization * 100)}%`,
    ),
    '',
  ];
  process.stdout.write(lines.join('\n'));
}
