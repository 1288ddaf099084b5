import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { nowNs } from '../clock.js';
import { VmmsimError } from '../errors.js';

/** A TCP address (host, port); IPv6 hosts without brackets. */
export interface HostPort {
  host: string;
  port: number;
}

/** Parses HOST:PORT (IPv6 as [addr]:port). */
export function parseHostPort(s: string, what: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(s);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new VmmsimError('E_USAGE', `${what} must be HOST:PORT, got "${s}"`);
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Parses a delay such as 2ms, 500us, 0.5ms or 1s into milliseconds. */
export function parseDelay(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(us|ms|s)$/.exec(s);
  if (!m) throw new VmmsimError('E_USAGE', `--delay must be a time such as 2ms, 500us or 1s, got "${s}"`);
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 's' ? n * 1000 : n;
}

/**
 * Bytes a connection may hold for their delay before the relay stops reading its client: memory
 * stays bounded, and only a sender faster than this much per delay waits longer than the delay.
 */
export const HIGH_WATER_BYTES = 16 * 1024 * 1024;

/**
 * One relayed connection: bytes from the client reach the target `delayMs` after they arrived
 * (in order), bytes back pass at once. A delay on one direction of one link, in user space, for
 * kernels without sch_netem (deploy/netns/run.sh).
 *
 * Both sockets are half-open capable, so a FIN is forwarded only after everything sent before it:
 * the client's FIN after the last delayed chunk, the target's after the replies. Each direction
 * pauses its source while its sink's buffer is full. An error or reset on either side aborts both.
 */
class DelayedPipe {
  private readonly queue: { dueNs: number; chunk: Buffer }[] = [];
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  /** upstream.write() returned false: nothing more is written until 'drain'. */
  private upstreamFull = false;
  private clientEnded = false;
  private upstreamEnding = false;
  private closedSockets = 0;
  private aborted = false;

  constructor(
    private readonly client: Socket,
    private readonly upstream: Socket,
    private readonly delayNs: number,
    private readonly onDone: () => void,
  ) {
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('data', (chunk: Buffer) => {
      this.queue.push({ dueNs: nowNs() + this.delayNs, chunk });
      this.queuedBytes += chunk.length;
      this.flow();
      this.arm();
    });
    client.on('end', () => {
      this.clientEnded = true;
      this.arm();
    });
    upstream.on('drain', () => {
      this.upstreamFull = false;
      this.flush();
    });
    // The way back is not delayed: a plain pipe with backpressure.
    upstream.on('data', (chunk: Buffer) => {
      if (!client.write(chunk)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
    upstream.on('end', () => client.end());
    const abort = (): void => this.abort();
    client.on('error', abort);
    upstream.on('error', abort);
    // A clean close of the client comes after its FIN: what it sent is still owed to the target.
    client.on('close', (hadError: boolean) => this.closed(hadError || !this.clientEnded));
    // The target's side closes cleanly only once the relay has ended it, after the queue.
    upstream.on('close', (hadError: boolean) => this.closed(hadError || !this.upstreamEnding));
  }

  /** Bytes this connection holds in memory: queued for their delay or buffered for a socket. */
  held(): number {
    return this.queuedBytes + this.upstream.writableLength + this.client.writableLength;
  }

  private closed(early: boolean): void {
    if (early) this.abort();
    if (++this.closedSockets === 2) this.onDone();
  }

  /** Reads the client only while the target takes bytes and the queue is under its bound. */
  private flow(): void {
    const hold = this.upstreamFull || this.queuedBytes >= HIGH_WATER_BYTES;
    if (hold) this.client.pause();
    else if (this.client.isPaused()) this.client.resume();
  }

  private arm(): void {
    if (this.timer || this.upstreamFull || this.aborted) return;
    const head = this.queue[0];
    if (!head) {
      if (this.clientEnded && !this.upstreamEnding) {
        this.upstreamEnding = true;
        this.upstream.end();
      }
      return;
    }
    const waitMs = (head.dueNs - nowNs()) / 1e6;
    this.timer = setTimeout(this.flush, Math.max(0, waitMs));
  }

  /** Writes every chunk that is due; timers fire late, never early, so a chunk is never early. */
  private readonly flush = (): void => {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = nowNs();
    for (let head = this.queue[0]; head && head.dueNs <= now && !this.upstreamFull; head = this.queue[0]) {
      this.queue.shift();
      this.queuedBytes -= head.chunk.length;
      if (!this.upstream.write(head.chunk)) this.upstreamFull = true;
    }
    this.flow();
    this.arm();
  };

  /** Drops both sockets and whatever is queued: an error, a reset, or the relay shutting down. */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.client.destroy();
    this.upstream.destroy();
  }
}

/** A TCP relay that delays one direction of every connection through it by a fixed time. */
export class DelayRelay {
  private server: Server | undefined;
  private readonly pipes = new Set<DelayedPipe>();

  constructor(
    readonly listen: HostPort,
    readonly target: HostPort,
    readonly delayMs: number,
  ) {}

  /** Listens; resolves with the bound address (port 0 picks a free one). */
  async start(): Promise<HostPort> {
    const delayNs = Math.round(this.delayMs * 1e6);
    // Half-open on both sides: the relay ends each socket itself once the bytes owed to it are out.
    const server = createServer({ allowHalfOpen: true }, (client) => {
      const upstream = createConnection({ ...this.target, allowHalfOpen: true });
      const pipe: DelayedPipe = new DelayedPipe(client, upstream, delayNs, () => this.pipes.delete(pipe));
      this.pipes.add(pipe);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new VmmsimError('E_LISTEN', `cannot listen on ${this.listen.host}:${this.listen.port}: ${err.message}`)));
      server.listen(this.listen.port, this.listen.host, resolve);
    });
    const a = server.address();
    return { host: this.listen.host, port: typeof a === 'object' && a ? a.port : this.listen.port };
  }

  /** Bytes held in memory for every connection: bounded by backpressure, whatever the senders do. */
  heldBytes(): number {
    let n = 0;
    for (const p of this.pipes) n += p.held();
    return n;
  }

  close(): Promise<void> {
    for (const p of this.pipes) p.abort();
    this.pipes.clear();
    const server = this.server;
    if (!server) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  }
}
