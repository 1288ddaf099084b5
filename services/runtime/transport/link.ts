import * as grpc from '@grpc/grpc-js';
import { VmmsimError } from '../errors.js';
import type { Batch, Batch__Output } from '../generated/vmmsim/v1/Batch.js';
import type { Envelope, Envelope__Output } from '../generated/vmmsim/v1/Envelope.js';
import type { Hold, Hold__Output } from '../generated/vmmsim/v1/Hold.js';
import type { Hop, Hop__Output } from '../generated/vmmsim/v1/Hop.js';
import type { Kind__Output } from '../generated/vmmsim/v1/Kind.js';
import type { LinkHandlers } from '../generated/vmmsim/v1/Link.js';
import type { MemoryRange, MemoryRange__Output } from '../generated/vmmsim/v1/MemoryRange.js';
import type { TraceEvent } from '../generated/vmmsim/v1/TraceEvent.js';
import { nowNs } from '../clock.js';
import { BatchLimitError, decodeBatch, encodeBatch } from './batch-codec.js';
import { callerMetadata, type Admission } from './auth.js';
import { INSECURE, type Security } from './credentials.js';
import type { LinkInstruments } from './link-metrics.js';
import { CHANNEL_OPTIONS, LINK_HELLO_MS, MAX_IN_FLIGHT_PER_STREAM, MAX_LINK_STREAMS } from './options.js';

export type Kind = Kind__Output;
export type { Envelope, Envelope__Output, Hold, Hold__Output, Hop, Hop__Output, MemoryRange, MemoryRange__Output };

/** A request as a sender hands it to a link. */
export interface OutgoingRequest {
  kind: Kind;
  opId: number;
  payload: Buffer;
  guestMemory?: readonly MemoryRange[];
  modeledNs: number;
  /** vmmsim explain: the receiver records what it does for this operation and sends it back. */
  explain?: boolean;
}

/** What a handler answers; the link adds the correlation id and the hop records. */
export interface ReplyBody {
  status: number;
  payload: Buffer;
  guestMemory?: MemoryRange[];
  modeledNs: number;
  /** Hops taken below the replying process while it served the request, oldest first. */
  hops: Hop[];
  /** Contended resources held below and in the replying process (absent: none). */
  holds?: Hold__Output[];
  /** What modeledNs and the holds are made of (Envelope.provenance; absent: nothing). */
  provenance?: Buffer;
  /** Parallel branches with unordered step counts met here or below (Envelope.branched). */
  branched?: boolean;
  /** On a request with explain: what this process did for it (absent: not traced). */
  explained?: TraceEvent[];
}

/** The stream operations a BatchWriter needs: grpc-js duplex streams on either side. */
interface Writable {
  write(batch: Batch): boolean;
  once(event: 'drain', cb: () => void): unknown;
}

/** A settled promise whose then() queues a microtask without queueMicrotask's AsyncResource per call. */
const SETTLED = Promise.resolve();

/**
 * Collects envelopes and writes everything that is ready as one Batch. A flush is scheduled as a
 * microtask, so envelopes produced while one batch of input is handled (the handlers' promise
 * callbacks run in the same microtask drain) leave together, and a lone envelope leaves before the
 * event loop turns: a setImmediate flush cost an extra loop iteration per message on each side,
 * ~6 us per round trip (`npm run bench -- transport`). When the stream pushes back, envelopes wait
 * for 'drain' and leave as a bigger batch. Each envelope's last hop gets its send stamp at flush.
 */
export class BatchWriter {
  private queue: Envelope[] = [];
  private scheduled = false;
  private blocked = false;
  private closed = false;
  batches = 0;
  envelopes = 0;

  constructor(private readonly stream: Writable) {}

  push(env: Envelope): void {
    if (this.closed) return;
    this.queue.push(env);
    if (!this.scheduled && !this.blocked) {
      this.scheduled = true;
      void SETTLED.then(this.flush);
    }
  }

  close(): void {
    this.closed = true;
    this.queue = [];
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.closed || this.queue.length === 0) return;
    const envelopes = this.queue;
    this.queue = [];
    const t = nowNs();
    for (const env of envelopes) {
      const hops = env.hops as Hop[];
      const last = hops[hops.length - 1];
      if (last) last.sentNs = t;
    }
    this.batches += 1;
    this.envelopes += envelopes.length;
    const ok = this.stream.write({ envelopes });
    if (!ok) {
      this.blocked = true;
      this.stream.once('drain', () => {
        this.blocked = false;
        if (this.queue.length > 0 && !this.scheduled) {
          this.scheduled = true;
          void SETTLED.then(this.flush);
        }
      });
    }
  };
}

/** Stamps the receive time on the hop that carried each envelope of a batch. */
function stampReceived(batch: Batch__Output): void {
  const t = nowNs();
  for (const env of batch.envelopes) {
    const last = env.hops[env.hops.length - 1];
    if (last && last.receivedNs === 0) last.receivedNs = t;
  }
}

interface Pending {
  resolve: (env: Envelope__Output) => void;
  reject: (err: Error) => void;
  sentAtMs: number;
}

export interface LinkEnds {
  selfId: number;
  selfName: string;
  peerId: number;
  peerName: string;
}

/**
 * The client end of a link: the process nearer the guest. It keeps one bidirectional stream open
 * to its peer and matches replies to requests by correlation id. If the peer goes away or stops
 * answering, every waiting request fails with an error naming the peer instead of hanging.
 */
export class LinkClient {
  private readonly client: grpc.Client & { Open(metadata: grpc.Metadata): grpc.ClientDuplexStream<Batch, Batch__Output> };
  private call: grpc.ClientDuplexStream<Batch, Batch__Output> | undefined;
  private writer: BatchWriter | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failure: VmmsimError | undefined;
  private sweep: NodeJS.Timeout | undefined;
  private metrics: LinkInstruments | undefined;
  private readonly security: Security;

  constructor(
    readonly ends: LinkEnds,
    address: string,
    private readonly deadlineMs: number,
    security: Security = INSECURE,
  ) {
    this.security = security;
    this.client = new (linkClientConstructor())(address, security.channel(), { ...CHANNEL_OPTIONS, ...security.options }) as unknown as LinkClient['client'];
  }

  /** Waits for the connection and opens the stream. */
  async open(timeoutMs = 10_000): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) =>
        err ? reject(new VmmsimError('E_PEER_LOST', `${this.ends.selfName} could not connect to ${this.ends.peerName}: ${err.message}`)) : resolve(),
      );
    });
    // The peer serves this stream as selfName, which the run's token (or certificate) proves.
    const call = this.client.Open(callerMetadata(this.ends.selfName, this.security.token));
    this.call = call;
    this.writer = new BatchWriter(call);
    // An empty batch says the stream is in use: the server ends streams that stay silent.
    call.write({ envelopes: [] });
    call.on('data', (batch: Batch__Output) => {
      stampReceived(batch);
      for (const env of batch.envelopes) {
        const p = this.pending.get(env.correlationId);
        if (!p) continue; // a reply after its deadline: the request already failed
        this.pending.delete(env.correlationId);
        this.metrics?.replied(env.hops);
        p.resolve(env);
      }
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (err.code === grpc.status.CANCELLED && this.failure) return;
      this.fail(new VmmsimError('E_PEER_LOST', `link ${this.ends.selfName} -> ${this.ends.peerName} failed: ${err.details || err.message}`));
    });
    call.on('end', () => this.fail(new VmmsimError('E_PEER_LOST', `${this.ends.peerName} closed its link from ${this.ends.selfName}`)));
    const period = Math.max(50, Math.min(1000, this.deadlineMs / 4));
    this.sweep = setInterval(() => this.expire(), period);
    this.sweep.unref();
  }

  request(req: OutgoingRequest): Promise<Envelope__Output> {
    if (this.failure) return Promise.reject(this.failure);
    const writer = this.writer;
    if (!writer) return Promise.reject(new VmmsimError('E_PEER_LOST', `link ${this.ends.selfName} -> ${this.ends.peerName} is not open`));
    const correlationId = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1;
    return new Promise<Envelope__Output>((resolve, reject) => {
      this.pending.set(correlationId, { resolve, reject, sentAtMs: Date.now() });
      writer.push({
        correlationId,
        opId: req.opId,
        kind: req.kind,
        payload: req.payload,
        // The encoder only reads it.
        guestMemory: (req.guestMemory ?? []) as MemoryRange[],
        modeledNs: req.modeledNs,
        hops: [{ from: this.ends.selfId, to: this.ends.peerId, sentNs: 0, receivedNs: 0 }],
        // Only when set: an encoder writes a present field even at its default.
        ...(req.explain ? { explain: true } : {}),
      });
    });
  }

  /** Observes this link's crossings and waiting requests in the process's metrics (--metrics-port). */
  observeWith(metrics: LinkInstruments): void {
    this.metrics = metrics;
    if (!this.failure) metrics.attach(this);
  }

  get inFlight(): number {
    return this.pending.size;
  }

  close(): void {
    this.fail(new VmmsimError('E_PEER_LOST', `link ${this.ends.selfName} -> ${this.ends.peerName} closed`));
    this.client.close();
  }

  private expire(): void {
    if (this.pending.size === 0) return;
    const limit = Date.now() - this.deadlineMs;
    for (const [id, p] of this.pending) {
      if (p.sentAtMs > limit) continue;
      this.pending.delete(id);
      p.reject(new VmmsimError('E_DEADLINE', `${this.ends.peerName} did not answer ${this.ends.selfName} within ${this.deadlineMs} ms`));
    }
  }

  private fail(err: VmmsimError): void {
    if (!this.failure) this.failure = err;
    this.metrics?.detach(this);
    if (this.sweep) clearInterval(this.sweep);
    this.writer?.close();
    if (this.call) {
      this.call.removeAllListeners('data');
      this.call.on('error', () => undefined);
      this.call.cancel();
    }
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }
}

/** Serves one request from the named peer; never throws (a failure is a status). */
export type RequestHandler = (env: Envelope__Output, peer: string) => Promise<ReplyBody>;

/** Envelopes a stream hands its handler in one turn of the event loop before it lets others run. */
const HANDLE_CHUNK = 64;

export interface LinkServerOptions {
  /** This process's endpoint id in the current topology (0 before one is configured). */
  selfId: () => number;
  /** At stream open: the caller's proved name, or the status to refuse it with (auth.ts). */
  admit: (call: grpc.ServerDuplexStream<Batch__Output, Batch>) => Admission;
  handle: RequestHandler;
  onError: (err: unknown) => void;
}

/** One open stream of a peer, as the server tracks it. */
interface ServedStream {
  peer: string;
  end: (status?: { code: grpc.status; details: string }) => void;
}

/**
 * The server end of every link into a process. A stream is admitted at open by the caller's
 * proved name (never by the hop records it sends); each incoming request is handed to `handle`
 * with that name; the reply carries the request's hop (with its receive stamp), the hops below,
 * and a new hop back. What a peer can make the process hold is bounded: open streams per process,
 * requests in flight per stream (reading pauses, so HTTP/2 flow control pushes back), and a
 * stream's batch is handled in chunks with the event loop free between them, so health checks and
 * other peers are answered while a large batch is worked through. A stream that says nothing
 * within LINK_HELLO_MS of opening is ended (a LinkClient sends an empty batch at once).
 */
export class LinkServer {
  private readonly streams = new Set<ServedStream>();

  constructor(private readonly opts: LinkServerOptions) {}

  get openStreams(): number {
    return this.streams.size;
  }

  /** Ends every open stream (a new run is configured, or the run stops): its peers reopen theirs. */
  closeAll(): void {
    for (const s of [...this.streams]) s.end();
  }

  handlers(): LinkHandlers {
    return { Open: (call: grpc.ServerDuplexStream<Batch__Output, Batch>) => this.open(call) };
  }

  private open(call: grpc.ServerDuplexStream<Batch__Output, Batch>): void {
    const refuse = (code: grpc.status, details: string): void => {
      call.on('error', () => undefined);
      call.emit('error', { code, details, metadata: new grpc.Metadata() });
    };
    const admission = this.opts.admit(call);
    if ('code' in admission) return refuse(admission.code, admission.details);
    if (this.streams.size >= MAX_LINK_STREAMS) return refuse(grpc.status.RESOURCE_EXHAUSTED, `${MAX_LINK_STREAMS} link streams are open on this process`);
    const peer = admission.name;
    const writer = new BatchWriter(call);
    // Received requests not yet handed to the handler: queue[head..].
    let queue: Envelope__Output[] = [];
    let head = 0;
    let open = true;
    let draining = false;
    let inFlight = 0;
    let paused = false;
    const hello = setTimeout(() => served.end({ code: grpc.status.DEADLINE_EXCEEDED, details: `no message within ${LINK_HELLO_MS} ms of opening the stream` }), LINK_HELLO_MS);
    hello.unref();
    const served: ServedStream = {
      peer,
      end: (status) => {
        if (!open) return;
        open = false;
        clearTimeout(hello);
        this.streams.delete(served);
        writer.close();
        queue = [];
        head = 0;
        if (status) refuse(status.code, status.details);
        else call.end();
      },
    };
    this.streams.add(served);
    const backlog = (): number => inFlight + queue.length - head;
    const settle = (): void => {
      inFlight -= 1;
      if (paused && backlog() <= MAX_IN_FLIGHT_PER_STREAM / 2) {
        paused = false;
        call.resume();
      }
    };
    const reply = (env: Envelope__Output, body: ReplyBody): void => {
      if (!open) return;
      const inbound = env.hops[env.hops.length - 1];
      // The request's hop, the hops below, and the reply's own hop (stamped at flush).
      const below = body.hops;
      const hops: Hop[] = new Array<Hop>((inbound ? 1 : 0) + below.length + 1);
      let k = 0;
      if (inbound) hops[k++] = inbound;
      for (let i = 0; i < below.length; i++) hops[k++] = below[i] as Hop;
      hops[k] = { from: this.opts.selfId(), to: inbound ? inbound.from : 0, sentNs: 0, receivedNs: 0 };
      writer.push({
        correlationId: env.correlationId,
        opId: env.opId,
        kind: env.kind,
        reply: true,
        status: body.status,
        payload: body.payload,
        guestMemory: body.guestMemory ?? [],
        modeledNs: body.modeledNs,
        hops,
        holds: body.holds ?? [],
        ...(body.provenance && body.provenance.length > 0 ? { provenance: body.provenance } : {}),
        ...(body.branched ? { branched: true } : {}),
        ...(body.explained ? { explained: body.explained } : {}),
      });
    };
    // Handles what has arrived, HANDLE_CHUNK envelopes per turn of the event loop.
    const drain = (): void => {
      draining = false;
      let n = 0;
      while (open && head < queue.length && n < HANDLE_CHUNK) {
        const env = queue[head++] as Envelope__Output;
        n += 1;
        inFlight += 1;
        this.opts.handle(env, peer).then(
          (body) => {
            settle();
            reply(env, body);
          },
          (err: unknown) => {
            settle();
            this.opts.onError(err);
          },
        );
      }
      if (head === queue.length) {
        queue = [];
        head = 0;
      } else if (open) {
        draining = true;
        setImmediate(drain);
      }
    };
    call.on('data', (batch: Refusable) => {
      clearTimeout(hello);
      if (!open) return;
      const refused = batch[REFUSED];
      if (refused) return served.end({ code: grpc.status.RESOURCE_EXHAUSTED, details: `refused batch: ${refused}` });
      stampReceived(batch);
      for (const env of batch.envelopes) if (!env.reply) queue.push(env);
      if (!paused && backlog() > MAX_IN_FLIGHT_PER_STREAM) {
        paused = true;
        call.pause();
      }
      if (!draining) drain();
    });
    call.on('end', () => served.end());
    call.on('error', () => served.end());
    call.on('cancelled', () => served.end());
  }
}

/** Set on a batch the limits refused before decoding (linkServiceDefinition): the reason. */
const REFUSED = Symbol('refused');
type Refusable = Batch__Output & { [REFUSED]?: string };

/** The Link service's one method, as link.proto declares it (tests/unit/batch-codec.test.ts checks). */
export const LINK_OPEN_PATH = '/vmmsim.v1.Link/Open';

/** A reply batch: decoded without the request limits. */
const decodeReply = (buf: Buffer): Batch__Output => decodeBatch(buf, false);

/**
 * The Link service's definition, with the hand-written codec (batch-codec.ts) on both sides. The
 * batch limits (wire-limits.ts) are checked as a request is decoded: a batch over them costs the
 * process at most the limits' worth of objects, and ends its stream with RESOURCE_EXHAUSTED and
 * the reason. Replies are decoded without the limits (a lazy flush's reply carries every hop of
 * its invalidations, hundreds of them).
 */
export function linkServiceDefinition(): grpc.ServiceDefinition {
  return {
    Open: {
      path: LINK_OPEN_PATH,
      requestStream: true,
      responseStream: true,
      originalName: 'Open',
      requestSerialize: encodeBatch,
      requestDeserialize: (buf: Buffer): Batch__Output => {
        try {
          return decodeBatch(buf);
        } catch (err) {
          if (err instanceof BatchLimitError) return Object.assign({ envelopes: [] }, { [REFUSED]: err.message });
          throw err;
        }
      },
      responseSerialize: encodeBatch,
      // Replies come from the peer this process dialed, and without limits: as protobufjs read them.
      responseDeserialize: decodeReply,
    } satisfies grpc.MethodDefinition<Batch, Batch__Output>,
  };
}

let LinkConstructor: grpc.ServiceClientConstructor | undefined;

/** The generic client of the Link service (one per process). */
function linkClientConstructor(): grpc.ServiceClientConstructor {
  LinkConstructor ??= grpc.makeGenericClientConstructor(linkServiceDefinition(), 'Link');
  return LinkConstructor;
}
