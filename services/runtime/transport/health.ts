/**
 * The standard gRPC health service (grpc.health.v1.Health: Check, Watch, List) as every vmmsim
 * process serves it, with its three small messages encoded by hand in protobuf's wire format. It
 * behaves as grpc-health-check's HealthImplementation (which the controller's client side still
 * uses), without that package's cost at every process's start: it parses health.proto with
 * protobufjs when it is loaded, about 40 ms of CPU for each of the 26 processes of a large tree.
 */
import * as grpc from '@grpc/grpc-js';

export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';
const STATUSES: readonly ServingStatus[] = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/** Services listed by List at most (as grpc-health-check). */
const LIST_LIMIT = 100;

function varint(v: number): number[] {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

/** Field `field` of a message as a length-delimited value. */
function lenField(field: number, bytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...varint(bytes.length)]), bytes]);
}

/** HealthCheckResponse { ServingStatus status = 1 }. */
function encodeStatus(status: ServingStatus): Buffer {
  const n = STATUSES.indexOf(status);
  return n > 0 ? Buffer.from([0x08, n]) : Buffer.alloc(0);
}

/** HealthListResponse { map<string, HealthCheckResponse> statuses = 1 }. */
function encodeList(statuses: [string, ServingStatus][]): Buffer {
  return Buffer.concat(statuses.map(([name, st]) => lenField(1, Buffer.concat([lenField(1, Buffer.from(name, 'utf8')), lenField(2, encodeStatus(st))]))));
}

/** HealthCheckRequest { string service = 1 }; other fields skipped. Throws on bytes that are no message. */
function decodeRequest(buf: Buffer): { service: string } {
  let at = 0;
  let service = '';
  const read = (): number => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (at >= buf.length) throw new Error('truncated health request');
      const b = buf[at++] as number;
      value += (b & 0x7f) * scale;
      scale *= 128;
      if ((b & 0x80) === 0) return value;
    }
    throw new Error('bad varint in a health request');
  };
  while (at < buf.length) {
    const tag = read();
    const wire = tag & 7;
    if (wire === 0) read();
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const len = read();
      if (at + len > buf.length) throw new Error('truncated health request');
      if (tag >>> 3 === 1) service = buf.toString('utf8', at, at + len);
      at += len;
    } else throw new Error(`wire type ${wire} in a health request`);
  }
  return { service };
}

const same = (b: Buffer): Buffer => b;
const method = (name: string, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> => ({
  path: `/grpc.health.v1.Health/${name}`,
  requestStream: false,
  responseStream,
  requestSerialize: same,
  requestDeserialize: same,
  responseSerialize: same,
  responseDeserialize: same,
  originalName: name.toLowerCase(),
});

export const HEALTH_SERVICE: grpc.ServiceDefinition = { Check: method('Check', false), Watch: method('Watch', true), List: method('List', false) };

/** The health of a process's services, by name ('' is the server as a whole). */
export class Health {
  private readonly statusMap = new Map<string, ServingStatus>();
  private readonly watchers = new Map<string, Set<(s: ServingStatus) => void>>();

  constructor(initial: Record<string, ServingStatus> = {}) {
    for (const [k, v] of Object.entries(initial)) this.statusMap.set(k, v);
  }

  setStatus(service: string, status: ServingStatus): void {
    this.statusMap.set(service, status);
    for (const w of this.watchers.get(service) ?? []) w(status);
  }

  addToServer(server: grpc.Server): void {
    const bad = (err: unknown): grpc.ServiceError => Object.assign(new Error('bad health request'), { code: grpc.status.INVALID_ARGUMENT, details: err instanceof Error ? err.message : String(err), metadata: new grpc.Metadata() });
    server.addService(HEALTH_SERVICE, {
      Check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        let name: string;
        try {
          name = decodeRequest(call.request).service;
        } catch (err) {
          return cb(bad(err));
        }
        const status = this.statusMap.get(name);
        if (status) cb(null, encodeStatus(status));
        else cb({ code: grpc.status.NOT_FOUND, details: `Health status unknown for service ${name}` });
      },
      Watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        let name: string;
        try {
          name = decodeRequest(call.request).service;
        } catch (err) {
          call.emit('error', bad(err));
          return;
        }
        const watcher = (s: ServingStatus): void => {
          call.write(encodeStatus(s));
        };
        const set = this.watchers.get(name) ?? new Set<(s: ServingStatus) => void>();
        this.watchers.set(name, set);
        set.add(watcher);
        call.on('cancelled', () => this.watchers.get(name)?.delete(watcher));
        call.write(encodeStatus(this.statusMap.get(name) ?? 'SERVICE_UNKNOWN'));
      },
      List: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        if (this.statusMap.size > LIST_LIMIT) return cb({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'Too many services to list.' });
        cb(null, encodeList([...this.statusMap.entries()]));
      },
    });
  }
}
