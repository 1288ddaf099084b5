/**
 * `npm run bench -- transport`: what one vmmsim hop costs compared with the layers under it, all
 * measured in one run on the same machine state and the same topology (this process + one child):
 *
 *   rawUdsRttUs      a raw Unix-socket ping-pong (node:net), the floor;
 *   grpcStreamRttUs  a bare grpc-js bidirectional-stream ping-pong (proto/bench/v1/echo.proto);
 *   vmmsimHopRttUs   one ECHO request through a LinkClient to a real role process (psmmu-0).
 *
 * Every measurement sends one message and waits for its answer before sending the next. The three
 * run interleaved in rounds (the order rotates each round) so machine noise hits all three alike;
 * each headline number is the median of the round p50s. The target is vmmsimHop / grpcStream <= 1.3.
 * Then what provenance (step counts, services/cost/step-vector.ts) adds to a data-path reply and to a
 * timeline entry, in bytes and in encode + decode time (provenance-wire.ts).
 */
import { benchArgs } from './args.js';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { VmmsimError } from '../services/runtime/errors.js';
import { createLogger } from '../services/runtime/logger.js';
import { packageRoot } from '../services/runtime/paths.js';
import { LOADER_OPTIONS } from '../services/runtime/proto.js';
import { CHANNEL_OPTIONS } from '../services/runtime/transport/options.js';
import { LinkClient } from '../services/runtime/transport/link.js';
import { linkMetrics } from '../services/runtime/transport/link-metrics.js';
import { Registry } from 'prom-client';
import { ProcessTree } from '../services/controller/launcher.js';
import { provenanceWire } from './provenance-wire.js';
import { INSECURE, withToken, type Security } from '../services/runtime/transport/credentials.js';

// ---------------------------------------------------------------------------------------------
// The bare echo service, shared with bench/transport-peer.ts (typed by hand: bench protos are not
// part of services/runtime/generated).

export interface Chunk {
  data: Buffer;
}

export interface EchoClient extends grpc.Client {
  Stream(): grpc.ClientDuplexStream<Chunk, Chunk>;
}

export interface EchoConstructor {
  new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions): EchoClient;
  service: grpc.ServiceDefinition;
}

/** Loads proto/bench/v1/echo.proto with the same loader options as vmmsim's own protos. */
export function loadEcho(): EchoConstructor {
  const definition = protoLoader.loadSync('bench/v1/echo.proto', { ...LOADER_OPTIONS, includeDirs: [join(packageRoot(), 'proto')] });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as { bench: { v1: { Echo: EchoConstructor } } };
  return pkg.bench.v1.Echo;
}

/** What bench/transport-peer.js sends over IPC once both of its echo servers listen. */
export interface PeerReady {
  type: 'ready';
  pid: number;
  /** Path of the raw Unix-socket echo server. */
  rawPath: string;
  /** grpc-js target of the Echo server (unix:///...). */
  grpcAddress: string;
}

// ---------------------------------------------------------------------------------------------
// Options

const USAGE = `usage: npm run bench -- transport [options]

Measures, interleaved in one run, the p50 round-trip time of a raw Unix-socket ping-pong, a bare
grpc-js bidi-stream ping-pong and one vmmsim hop (LinkClient ECHO to a psmmu role process), each
between this process and one child, and the ratio vmmsimHop / grpcStream (target <= 1.3). Then
what provenance (each operation's step counts) adds to a data-path reply and to a timeline entry:
encoded bytes, and encode + decode time.

options:
  --iterations N   measured round trips per transport, split over the rounds (default 20000)
  --warmup N       round trips per transport before measuring, not recorded (default 2000)
  --rounds N       interleaved rounds (default 10); the result is the median of the round p50s
  --size N         payload bytes (default 64)
  --json           print one JSON object on stdout (progress still goes to stderr)
  --check          exit 1 when the ratio misses the target
  --metrics        observe each hop in a Prometheus registry, as a role serving --metrics-port does
                   (psmmu-0 serves metrics too), to measure what the hop histograms cost
  -h, --help       this text
`;

interface Options {
  iterations: number;
  warmup: number;
  rounds: number;
  size: number;
  json: boolean;
  check: boolean;
  metrics: boolean;
}

const TARGET_RATIO = 1.3;

function parseOptions(argv: string[]): Options | undefined {
  const a = benchArgs('transport', USAGE, argv, {
    iterations: { type: 'string', default: '20000' },
    warmup: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '10' },
    size: { type: 'string', default: '64' },
    json: { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
    metrics: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (!a) return undefined;
  const { values, number } = a;
  return {
    iterations: number('iterations', values.iterations, 1),
    warmup: number('warmup', values.warmup, 0),
    rounds: number('rounds', values.rounds, 1),
    size: number('size', values.size, 1),
    json: values.json,
    check: values.check,
    metrics: values.metrics,
  };
}

// ---------------------------------------------------------------------------------------------
// The three transports, each as "one round trip" behind the same promise-based harness.

type Key = 'rawUds' | 'grpcStream' | 'vmmsimHop';

interface Transport {
  key: Key;
  /** Sends one message and resolves when its answer is back. */
  roundTrip(): Promise<void>;
  /** Called after each measured round trip, outside the timed region. */
  after?(t0Ns: number, t1Ns: number): void;
  /** Fails the round trip in flight, if any (peer gone, interrupted). */
  abort(err: Error): void;
  close(): void;
}

function peerLost(what: string): VmmsimError {
  return new VmmsimError('E_PEER_LOST', `bench peer: ${what}`);
}

/** One outstanding round trip at a time: its settle functions. */
class Waiter {
  private resolveFn: (() => void) | undefined;
  private rejectFn: ((err: Error) => void) | undefined;
  private failure: Error | undefined;

  arm(resolve: () => void, reject: (err: Error) => void): boolean {
    if (this.failure) {
      reject(this.failure);
      return false;
    }
    this.resolveFn = resolve;
    this.rejectFn = reject;
    return true;
  }

  resolve(): void {
    const r = this.resolveFn;
    this.resolveFn = undefined;
    this.rejectFn = undefined;
    r?.();
  }

  reject(err: Error): void {
    this.failure ??= err;
    const r = this.rejectFn;
    this.resolveFn = undefined;
    this.rejectFn = undefined;
    r?.(this.failure);
  }
}

async function rawUds(path: string, payload: Buffer): Promise<Transport> {
  const sock: Socket = createConnection(path);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const waiter = new Waiter();
  const size = payload.length;
  let received = 0;
  sock.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received >= size) {
      received -= size;
      waiter.resolve();
    }
  });
  sock.on('error', (err) => waiter.reject(peerLost(`raw echo socket: ${err.message}`)));
  sock.on('close', () => waiter.reject(peerLost('it closed the raw echo socket')));
  return {
    key: 'rawUds',
    roundTrip: () =>
      new Promise<void>((resolve, reject) => {
        if (waiter.arm(resolve, reject)) sock.write(payload);
      }),
    abort: (err) => waiter.reject(err),
    close: () => sock.destroy(),
  };
}

async function grpcStream(address: string, payload: Buffer): Promise<Transport> {
  const Echo = loadEcho();
  const client = new Echo(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  await new Promise<void>((resolve, reject) => {
    client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(peerLost(`cannot connect: ${err.message}`)) : resolve()));
  });
  const call = client.Stream();
  const waiter = new Waiter();
  const size = payload.length;
  call.on('data', (c: Chunk) => {
    if (c.data.length !== size) waiter.reject(new VmmsimError('E_RUN', `the gRPC echo came back with ${c.data.length} bytes, not ${size}`));
    else waiter.resolve();
  });
  call.on('error', (err: grpc.ServiceError) => waiter.reject(peerLost(`gRPC echo stream: ${err.details || err.message}`)));
  call.on('end', () => waiter.reject(peerLost('it ended the gRPC echo stream')));
  const msg: Chunk = { data: payload };
  return {
    key: 'grpcStream',
    roundTrip: () =>
      new Promise<void>((resolve, reject) => {
        if (waiter.arm(resolve, reject)) call.write(msg);
      }),
    abort: (err) => waiter.reject(err),
    close: () => {
      call.removeAllListeners('data');
      call.on('error', () => undefined);
      call.cancel();
      client.close();
    },
  };
}

/** Where the time of one vmmsim hop goes, from the hop records (one monotonic clock for both processes). */
const SEGMENTS = ['clientSend', 'requestTransit', 'peerTurnaround', 'replyTransit', 'clientReceive'] as const;
type Segment = (typeof SEGMENTS)[number];
const SEGMENT_HELP: Record<Segment, string> = {
  clientSend: 'request() called -> batch flushed to grpc-js (client: flush scheduling)',
  requestTransit: 'flushed -> Batch decoded at the role process (serialize, HTTP/2, kernel, deserialize)',
  peerTurnaround: 'decoded -> reply batch flushed (role process: handler, hop records, flush scheduling)',
  replyTransit: 'flushed -> reply Batch decoded at the client',
  clientReceive: 'reply decoded -> request() promise resumed the caller',
};

async function vmmsimHop(address: string, payload: Buffer, segments: Record<Segment, RecordableHistogram>, metrics: boolean, security: Security): Promise<Transport> {
  const link = new LinkClient({ selfId: 0, selfName: 'bench', peerId: 1, peerName: 'psmmu-0' }, address, 10_000, security);
  if (metrics) link.observeWith(linkMetrics(new Registry()).forLink('bench', 'psmmu-0'));
  await link.open();
  const size = payload.length;
  let opId = 0;
  let last: { sent: number; peerReceived: number; peerSent: number; received: number } | undefined;
  return {
    key: 'vmmsimHop',
    roundTrip: async () => {
      opId = (opId + 1) >>> 0;
      const env = await link.request({ kind: 'ECHO', opId, payload, modeledNs: 0 });
      if (env.status !== 0 || env.payload.length !== size) throw new VmmsimError('E_RUN', `ECHO came back with status ${env.status} and ${env.payload.length} bytes`);
      const [out, back] = env.hops;
      last = out && back ? { sent: out.sentNs, peerReceived: out.receivedNs, peerSent: back.sentNs, received: back.receivedNs } : undefined;
    },
    after: (t0, t1) => {
      if (!last) return;
      const rec = (s: Segment, ns: number): void => segments[s].record(Math.max(1, Math.round(ns)));
      rec('clientSend', last.sent - t0);
      rec('requestTransit', last.peerReceived - last.sent);
      rec('peerTurnaround', last.peerSent - last.peerReceived);
      rec('replyTransit', last.received - last.peerSent);
      rec('clientReceive', t1 - last.received);
    },
    abort: () => link.close(),
    close: () => link.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// Child processes

async function startPeer(socketDir: string): Promise<{ child: ChildProcess; ready: PeerReady }> {
  const entry = join(dirname(fileURLToPath(import.meta.url)), 'transport-peer.js');
  const child = spawn(process.execPath, [entry, '--socket-dir', socketDir], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  try {
    const ready = await new Promise<PeerReady>((resolve, reject) => {
      const timer = setTimeout(() => reject(new VmmsimError('E_START_TIMEOUT', `bench peer (pid ${child.pid ?? '?'}) did not report ready within 10 s`)), 10_000);
      child.on('message', (m: PeerReady) => {
        if (m.type !== 'ready') return;
        clearTimeout(timer);
        resolve(m);
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new VmmsimError('E_SPAWN', `cannot start the bench peer: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new VmmsimError('E_PROCESS_EXITED', `bench peer ${signal ? `was killed by ${signal}` : `exited with code ${code}`} before it was ready`));
      });
    });
    return { child, ready };
  } catch (err) {
    await stopChild(child);
    throw err;
  }
}

function alive(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}

async function stopChild(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (!alive(child)) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const late = await Promise.race([gone.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), graceMs).unref())]);
  if (late && alive(child)) {
    child.kill('SIGKILL');
    await gone;
  }
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface Stats {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  count: number;
  roundP50s: number[];
  roundP99s: number[];
}

const us = (ns: number): number => Math.round(ns / 10) / 100;

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

function summarize(h: RecordableHistogram): Omit<Stats, 'roundP50s' | 'roundP99s'> {
  return {
    p50: us(h.percentile(50)),
    p90: us(h.percentile(90)),
    p99: us(h.percentile(99)),
    p999: us(h.percentile(99.9)),
    max: us(h.max),
    mean: us(h.mean),
    count: h.count,
  };
}

export async function transportBench(argv: string[]): Promise<void> {
  const opts = parseOptions(argv);
  if (!opts) return;
  const progress = (line: string): void => {
    process.stderr.write(`bench transport: ${line}\n`);
  };
  const payload = randomBytes(opts.size);
  const perRound = Math.ceil(opts.iterations / opts.rounds);
  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-bench-'));
  const log = createLogger({ bench: 'transport' }, 'warn');
  const tree = new ProcessTree({ socketDir, transport: 'unix', logLevel: 'warn', startTimeoutMs: 10_000, log, ...(opts.metrics ? { telemetry: { metricsBase: 0 } } : {}) });
  const segments = Object.fromEntries(SEGMENTS.map((s) => [s, createHistogram()])) as Record<Segment, RecordableHistogram>;
  const transports: Transport[] = [];
  let peer: ChildProcess | undefined;
  let interrupted: VmmsimError | undefined;
  let lost: Error | undefined;
  const abortAll = (err: Error): void => {
    for (const t of transports) t.abort(err);
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupted ??= new VmmsimError('E_INTERRUPTED', `interrupted by ${signal}`, 'nothing to fix; rerun the bench');
    abortAll(interrupted);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const check = (): void => {
    if (interrupted) throw interrupted;
    if (lost) throw lost;
  };
  try {
    progress(`starting the echo peer and psmmu-0 in ${socketDir}`);
    const started = await startPeer(socketDir);
    peer = started.child;
    peer.on('exit', (code, signal) => {
      lost ??= new VmmsimError('E_PROCESS_EXITED', `bench peer (pid ${started.ready.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`);
      abortAll(lost);
    });
    tree.on('exit', (err) => {
      lost ??= err;
      abortAll(err);
    });
    const [psmmu] = await tree.start([{ role: 'psmmu', index: 0 }]);
    if (!psmmu) throw new VmmsimError('E_RUN', 'psmmu-0 did not start');
    check();
    transports.push(await rawUds(started.ready.rawPath, payload));
    transports.push(await grpcStream(started.ready.grpcAddress, payload));
    transports.push(await vmmsimHop(psmmu.address, payload, segments, opts.metrics, withToken(INSECURE, tree.token)));
    check();

    const run = async (t: Transport, n: number, h: RecordableHistogram | undefined): Promise<void> => {
      try {
        for (let i = 0; i < n; i++) {
          const t0 = process.hrtime.bigint();
          await t.roundTrip();
          const t1 = process.hrtime.bigint();
          if (h) {
            h.record(Math.max(1, Number(t1 - t0)));
            t.after?.(Number(t0), Number(t1));
          }
        }
      } catch (err) {
        check(); // an interrupt or a lost child explains the failure better than the transport's error
        throw err;
      }
      check();
    };

    progress(`warming up: ${opts.warmup} round trips each`);
    for (const t of transports) await run(t, opts.warmup, undefined);

    const all = new Map<Key, RecordableHistogram>(transports.map((t) => [t.key, createHistogram()]));
    const rounds = new Map<Key, { p50: number; p99: number }[]>(transports.map((t) => [t.key, []]));
    for (let r = 0; r < opts.rounds; r++) {
      const line: string[] = [];
      for (let k = 0; k < transports.length; k++) {
        const t = transports[(r + k) % transports.length];
        if (!t) continue;
        const h = createHistogram();
        await run(t, perRound, h);
        all.get(t.key)?.add(h);
        rounds.get(t.key)?.push({ p50: h.percentile(50), p99: h.percentile(99) });
        line.push(`${t.key} p50 ${us(h.percentile(50))} us`);
      }
      progress(`round ${r + 1}/${opts.rounds} (${perRound} each): ${line.join(', ')}`);
    }

    const stats = (key: Key): Stats => {
      const rs = rounds.get(key) ?? [];
      const h = all.get(key);
      if (!h) throw new Error(`no histogram for ${key}`);
      return { ...summarize(h), roundP50s: rs.map((x) => us(x.p50)), roundP99s: rs.map((x) => us(x.p99)) };
    };
    const p50 = (key: Key): number => median((rounds.get(key) ?? []).map((x) => x.p50));
    const raw = p50('rawUds');
    const grpcP50 = p50('grpcStream');
    const hop = p50('vmmsimHop');
    const ratio = Math.round((hop / grpcP50) * 1000) / 1000;
    const pass = ratio <= TARGET_RATIO;
    const breakdown = Object.fromEntries(SEGMENTS.map((s) => [s, { p50: us(segments[s].percentile(50)), mean: us(segments[s].mean) }]));
    // The same ratio paired round by round: each round's vmmsimHop p50 over that round's grpcStream p50.
    const grpcRounds = rounds.get('grpcStream') ?? [];
    const roundRatios = (rounds.get('vmmsimHop') ?? []).map((x, i) => Math.round((x.p50 / (grpcRounds[i]?.p50 ?? NaN)) * 1000) / 1000);
    progress('provenance on the wire: encoding and decoding a reply and a timeline entry with and without step counts');
    const provenance = provenanceWire();
    const result = {
      bench: 'transport',
      rawUdsRttUs: us(raw),
      grpcStreamRttUs: us(grpcP50),
      vmmsimHopRttUs: us(hop),
      ratioVsGrpcStream: ratio,
      target: { ratioVsGrpcStream: TARGET_RATIO },
      pass,
      detail: {
        rawUds: stats('rawUds'),
        grpcStream: stats('grpcStream'),
        vmmsimHop: { ...stats('vmmsimHop'), breakdownUs: breakdown },
        roundRatios,
      },
      provenance,
      config: { iterations: perRound * opts.rounds, perRound, warmup: opts.warmup, rounds: opts.rounds, payloadBytes: opts.size, order: 'rotating per round', metrics: opts.metrics },
      machine: { node: process.version, cpus: cpus().length, platform: process.platform, arch: process.arch },
    };

    if (opts.json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } else {
      const f = (x: number): string => x.toFixed(1).padStart(8);
      const rows: [string, Stats][] = [
        ['rawUds', result.detail.rawUds],
        ['grpcStream', result.detail.grpcStream],
        ['vmmsimHop', result.detail.vmmsimHop],
      ];
      const out = [
        `transport bench: ${opts.rounds} rounds x ${perRound} round trips each, ${opts.warmup} warm-up, ${opts.size}-byte payload, node ${process.version}, ${cpus().length} cpus`,
        '',
        `  rawUdsRttUs        ${result.rawUdsRttUs.toFixed(1)}`,
        `  grpcStreamRttUs    ${result.grpcStreamRttUs.toFixed(1)}`,
        `  vmmsimHopRttUs     ${result.vmmsimHopRttUs.toFixed(1)}`,
        `  ratioVsGrpcStream  ${ratio.toFixed(3)}   (target <= ${TARGET_RATIO}: ${pass ? 'met' : 'MISSED'}; per round: ${roundRatios.map((x) => x.toFixed(2)).join(' ')})`,
        '',
        'detail (us; percentiles over all rounds, headline = median of round p50s)',
        `  ${'transport'.padEnd(12)}${'p50'.padStart(8)}${'p90'.padStart(8)}${'p99'.padStart(8)}${'p99.9'.padStart(8)}${'max'.padStart(8)}${'mean'.padStart(8)}   round p50s`,
        ...rows.map(([k, s]) => `  ${k.padEnd(12)}${f(s.p50)}${f(s.p90)}${f(s.p99)}${f(s.p999)}${f(s.max)}${f(s.mean)}   ${s.roundP50s.map((x) => x.toFixed(1)).join(' ')}`),
        '',
        `vmmsimHop breakdown from its hop records (us)`,
        `  ${'segment'.padEnd(16)}${'p50'.padStart(8)}${'mean'.padStart(8)}`,
        ...SEGMENTS.map((s) => `  ${s.padEnd(16)}${f(breakdown[s]?.p50 ?? 0)}${f(breakdown[s]?.mean ?? 0)}   ${SEGMENT_HELP[s]}`),
        '',
        'provenance on the wire (a strict nested-smmuv3 unmap: the reply KVM sends the guest; one timeline entry)',
        `  ${'message'.padEnd(16)}${'bytes'.padStart(8)}${'+steps'.padStart(8)}${'codec us'.padStart(10)}${'+steps'.padStart(8)}`,
        ...([['reply', provenance.reply], ['timelineOp', provenance.timelineOp]] as const).map(([k, c]) => `  ${k.padEnd(16)}${String(c.bytes.without).padStart(8)}${`+${c.bytes.added}`.padStart(8)}${c.codecUs.without.toFixed(2).padStart(10)}${`+${c.codecUs.added.toFixed(2)}`.padStart(8)}`),
      ];
      process.stdout.write(`${out.join('\n')}\n`);
    }
    if (opts.check && !pass) process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const t of transports) t.close();
    peer?.removeAllListeners('exit');
    tree.removeAllListeners('exit');
    await Promise.all([tree.stop().catch(() => tree.killAll()), peer ? stopChild(peer) : Promise.resolve()]);
    tree.killAll();
    rmSync(socketDir, { recursive: true, force: true });
  }
}
