import * as grpc from '@grpc/grpc-js';
import type { ReflectionService } from '@grpc/reflection';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { VmmsimError } from '../errors.js';
import { protos } from '../proto.js';
import { INSECURE, type Security } from './credentials.js';
import { Health } from './health.js';
import { SERVER_OPTIONS } from './options.js';

export interface ServedProcess {
  server: grpc.Server;
  health: Health;
  /** grpc-js target a client dials: unix:///abs/path.sock, unix:/abs/path.sock or 127.0.0.1:port */
  address: string;
}

/**
 * Where a role listens: a socket named after it in the controller's private folder, a socket file
 * a user chose (`vmmsim serve --listen unix:/abs/path.sock`), or a TCP address.
 */
export type Listen = { kind: 'unix'; dir: string; name: string } | { kind: 'path'; path: string } | { kind: 'tcp'; host: string; port: number };

/**
 * A gRPC server with health checking (NOT_SERVING until the caller marks it ready) and server
 * reflection over vmmsim's protos, bound to a Unix socket or a TCP address. Under mutual TLS
 * (`security`) every service, health and reflection included, requires a client certificate.
 */
export async function serve(listen: Listen, register: (server: grpc.Server) => void, security: Security = INSECURE): Promise<ServedProcess> {
  const server = new grpc.Server(SERVER_OPTIONS);
  const health = new Health({ '': 'NOT_SERVING' });
  health.addToServer(server);
  addLazyReflection(server);
  register(server);
  const bindTo = listen.kind === 'unix' ? `unix://${join(listen.dir, `${listen.name}.sock`)}` : listen.kind === 'path' ? `unix://${listen.path}` : `${listen.host}:${listen.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(bindTo, security.server(), (err, p) => (err ? reject(new VmmsimError('E_LISTEN', `cannot listen on ${bindTo}: ${err.message}`)) : resolve(p)));
  });
  const address = listen.kind === 'unix' ? bindTo : listen.kind === 'path' ? `unix:${listen.path}` : `${listen.host}:${port}`;
  return { server, health, address };
}

const REFLECTION_PATHS = ['/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo'];

/** A reflection method as @grpc/reflection registers it: its definition and its handler. */
interface Reflected {
  def: grpc.MethodDefinition<unknown, unknown>;
  handle: (stream: EventEmitter & { write(m: unknown): void; end(): void }) => void;
}

let reflected: Map<string, Reflected> | undefined;

/** @grpc/reflection over vmmsim's protos, built once, on the first reflection call. */
function reflection(): Map<string, Reflected> {
  if (reflected) return reflected;
  const { ReflectionService: Service } = createRequire(import.meta.url)('@grpc/reflection') as { ReflectionService: typeof ReflectionService };
  const captured = new Map<string, Reflected>();
  // It registers its two versions on a server: here, on a recorder of what it registers.
  const recorder = {
    addService: (def: grpc.ServiceDefinition, impl: Record<string, Reflected['handle']>) => {
      for (const [name, m] of Object.entries(def)) {
        const handle = impl[name] ?? impl[m.originalName ?? ''];
        if (handle) captured.set(m.path, { def: m as grpc.MethodDefinition<unknown, unknown>, handle });
      }
    },
  };
  new Service(protos().definition).addToServer(recorder as unknown as grpc.Server);
  reflected = captured;
  return captured;
}

/**
 * Server reflection (v1 and v1alpha) on every process, so standard tools (grpcurl) can list and
 * describe its services, loaded only when a tool first asks: building it (@grpc/reflection parses
 * its own protos and walks vmmsim's) cost every process about 90 ms of CPU at start. Until then the
 * two methods are registered with raw bytes, handed to the real implementation once it is built.
 */
function addLazyReflection(server: grpc.Server): void {
  const same = (b: Buffer): Buffer => b;
  for (const path of REFLECTION_PATHS) {
    const def: grpc.MethodDefinition<Buffer, Buffer> = { path, requestStream: true, responseStream: true, requestSerialize: same, requestDeserialize: same, responseSerialize: same, responseDeserialize: same, originalName: 'serverReflectionInfo' };
    server.addService({ ServerReflectionInfo: def }, {
      ServerReflectionInfo: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        let real: Reflected | undefined;
        try {
          real = reflection().get(path);
        } catch (err) {
          call.emit('error', { code: grpc.status.INTERNAL, details: `server reflection is unavailable: ${(err as Error).message}`, metadata: new grpc.Metadata() });
          return;
        }
        if (!real) {
          call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: `no reflection for ${path}`, metadata: new grpc.Metadata() });
          return;
        }
        const { def: m, handle } = real;
        const stream = Object.assign(new EventEmitter(), {
          write: (msg: unknown) => call.write(m.responseSerialize(msg)),
          end: () => call.end(),
        });
        handle(stream);
        call.on('data', (b: Buffer) => {
          let msg: unknown;
          try {
            msg = m.requestDeserialize(b);
          } catch {
            call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'not a reflection request', metadata: new grpc.Metadata() });
            return;
          }
          stream.emit('data', msg);
        });
        call.on('end', () => stream.emit('end'));
        call.on('error', () => undefined);
      },
    });
  }
}

export function shutdown(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 1000);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
