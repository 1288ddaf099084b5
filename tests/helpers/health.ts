import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProto } from 'grpc-health-check';

type Status = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

interface HealthClient extends grpc.Client {
  Check(req: { service: string }, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { status: Status }) => void): void;
  Watch(req: { service: string }): grpc.ClientReadableStream<{ status: Status }>;
}

type HealthCtor = new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => HealthClient;

let ctor: HealthCtor | undefined;

/** A plain grpc-js client of grpc.health.v1.Health, loaded from the standard proto (no vmmsim code). */
function Health(): HealthCtor {
  if (ctor) return ctor;
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(healthProto, { keepCase: false, enums: String, defaults: true }));
  const v1 = ((pkg['grpc'] as grpc.GrpcObject)['health'] as grpc.GrpcObject)['v1'] as grpc.GrpcObject;
  ctor = v1['Health'] as unknown as HealthCtor;
  return ctor;
}

/** Health/Check of the server as a whole (service ""); rejects with the gRPC error. */
export function healthCheck(address: string, creds = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}, deadlineMs = 5000): Promise<Status> {
  const client = new (Health())(address, creds, options);
  return new Promise<Status>((resolve, reject) => {
    client.Check({ service: '' }, { deadline: Date.now() + deadlineMs }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res?.status ?? 'UNKNOWN');
    });
  });
}

/** Health/Watch of service "": every status the server sends until the stream ends. */
export function healthWatch(address: string): { statuses: Status[]; ended: Promise<void>; first: Promise<Status> } {
  const client = new (Health())(address, grpc.credentials.createInsecure());
  const statuses: Status[] = [];
  const call = client.Watch({ service: '' });
  let gotFirst: (s: Status) => void = () => undefined;
  const first = new Promise<Status>((resolve) => (gotFirst = resolve));
  call.on('data', (m: { status: Status }) => {
    statuses.push(m.status);
    gotFirst(m.status);
  });
  const ended = new Promise<void>((resolve) => {
    const done = (): void => {
      client.close();
      resolve();
    };
    call.on('error', done);
    call.on('end', done);
  });
  return { statuses, ended, first };
}
