/**
 * The transport floor: what a message costs on the bare layers under a vmmsim link, measured on
 * this host so that measured figures can stand beside what the host gives at best.
 *
 *  - a bare grpc-js bidirectional stream (`/vmmsim.floor.v1.Floor/Echo`): raw bytes in grpc-js's
 *    own framing, no message codec, no vmmsim code on either side; every role serves it, and a
 *    guest asked to (Topology.floor_peer) times it against that peer between its operations, so
 *    the floor is taken between two of the run's own processes in the same machine state;
 *  - a bare Unix-socket ping-pong (node:net), served by the floor peer (floor-main.ts) only.
 *
 * One way is half a round trip: both directions cross the same layers.
 */
import * as grpc from '@grpc/grpc-js';
import { nowNs } from '../clock.js';
import { VmmsimError } from '../errors.js';
import { callerMetadata, type Admission } from './auth.js';
import { INSECURE, type Security } from './credentials.js';
import { CHANNEL_OPTIONS } from './options.js';

export const FLOOR_SERVICE_NAME = 'vmmsim.floor.v1.Floor';
/** Largest echo a floor stream carries: a floor message is tens of bytes. */
export const FLOOR_MAX_BYTES = 4096;
/** Bytes of each probe: the size of a small vmmsim request. */
export const FLOOR_PAYLOAD_BYTES = 64;

const identity = (b: Buffer): Buffer => b;

const rawStream = (name: string): grpc.MethodDefinition<Buffer, Buffer> => ({
  path: `/${FLOOR_SERVICE_NAME}/${name}`,
  requestStream: true,
  responseStream: true,
  requestSerialize: identity,
  requestDeserialize: identity,
  responseSerialize: identity,
  responseDeserialize: identity,
  originalName: name,
});

/** The bare echo service: a bidirectional stream of raw bytes (grpc-js framing, no codec). */
export const FLOOR_SERVICE: grpc.ServiceDefinition = { Echo: rawStream('Echo') };

/**
 * A bare relay (the path bench's reference, floor-main.ts --relay): each message passed on to the
 * next process over a bare stream and its answer passed back, as a path's processes do with no
 * runtime, codec or model in the way. Served with Echo by the relay's processes only.
 */
export const RELAY_SERVICE: grpc.ServiceDefinition = { Echo: rawStream('Echo'), Relay: rawStream('Relay') };

/**
 * The server side: every message straight back on the same stream, after the caller proved its
 * name at open (the same check as a link's). A message above FLOOR_MAX_BYTES ends the stream;
 * while the answers are not drained the stream is not read, so a caller cannot make it hold more.
 */
export function floorHandlers(admit: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => Admission): grpc.UntypedServiceImplementation {
  return {
    Echo: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      const refuse = (code: grpc.status, details: string): void => {
        call.removeAllListeners('data');
        call.on('error', () => undefined);
        call.emit('error', { code, details, metadata: new grpc.Metadata() });
      };
      const a = admit(call);
      if ('code' in a) return refuse(a.code, a.details);
      call.on('data', (b: Buffer) => {
        if (b.length > FLOOR_MAX_BYTES) return refuse(grpc.status.RESOURCE_EXHAUSTED, `a floor echo carries at most ${FLOOR_MAX_BYTES} bytes`);
        if (!call.write(b)) {
          call.pause();
          call.once('drain', () => call.resume());
        }
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  };
}

const FloorClient = grpc.makeGenericClientConstructor(RELAY_SERVICE, 'Floor');

/**
 * A caller of a bare echo stream: one round trip at a time, each timed from the write to the
 * echo's arrival on the monotonic clock.
 */
export class FloorProbe {
  private readonly waiting: { t0: number; resolve: (ns: number) => void; reject: (err: Error) => void }[] = [];
  private failure: Error | undefined;
  private readonly payload = Buffer.alloc(FLOOR_PAYLOAD_BYTES, 0x5a);

  private constructor(
    private readonly client: grpc.Client,
    private readonly call: grpc.ClientDuplexStream<Buffer, Buffer>,
    readonly peer: string,
  ) {
    call.on('data', () => {
      const w = this.waiting.shift();
      if (w) w.resolve(nowNs() - w.t0);
    });
    call.on('error', (err: grpc.ServiceError) => this.fail(new VmmsimError('E_PEER_LOST', `floor stream to ${peer}: ${err.details || err.message}`)));
    call.on('end', () => this.fail(new VmmsimError('E_PEER_LOST', `${peer} ended the floor stream`)));
  }

  /** Opens a floor stream (or a bare relay's, `method` Relay) to `address` as `self` (proved with the run's token when there is one). */
  static async open(self: string, peer: string, address: string, security: Security = INSECURE, timeoutMs = 10_000, method: 'Echo' | 'Relay' = 'Echo'): Promise<FloorProbe> {
    const client = new FloorClient(address, security.channel(), { ...CHANNEL_OPTIONS, ...security.options });
    await new Promise<void>((resolve, reject) => {
      client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(new VmmsimError('E_PEER_LOST', `${self} could not open a floor stream to ${peer}: ${err.message}`)) : resolve()));
    });
    const call = (client as unknown as Record<'Echo' | 'Relay', (md: grpc.Metadata) => grpc.ClientDuplexStream<Buffer, Buffer>>)[method](callerMetadata(self, security.token));
    return new FloorProbe(client, call, peer);
  }

  /** One round trip: resolves with its length in ns. */
  roundTrip(): Promise<number> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<number>((resolve, reject) => {
      this.waiting.push({ t0: nowNs(), resolve, reject });
      this.call.write(this.payload);
    });
  }

  close(): void {
    this.fail(new VmmsimError('E_PEER_LOST', `floor stream to ${this.peer} closed`));
    this.call.removeAllListeners('data');
    this.call.on('error', () => undefined);
    this.call.cancel();
    this.client.close();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(this.failure);
  }
}
