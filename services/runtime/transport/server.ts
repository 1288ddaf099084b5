import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { join } from 'node:path';
import { VmmsimError } from '../errors.js';
import { protos } from '../proto.js';
import { INSECURE, type Security } from './credentials.js';
import { SERVER_OPTIONS } from './options.js';

export interface ServedProcess {
  server: grpc.Server;
  health: HealthImplementation;
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
  const health = new HealthImplementation({ '': 'NOT_SERVING' });
  health.addToServer(server);
  new ReflectionService(protos().definition).addToServer(server);
  register(server);
  const bindTo = listen.kind === 'unix' ? `unix://${join(listen.dir, `${listen.name}.sock`)}` : listen.kind === 'path' ? `unix://${listen.path}` : `${listen.host}:${listen.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(bindTo, security.server(), (err, p) => (err ? reject(new VmmsimError('E_LISTEN', `cannot listen on ${bindTo}: ${err.message}`)) : resolve(p)));
  });
  const address = listen.kind === 'unix' ? bindTo : listen.kind === 'path' ? `unix:${listen.path}` : `${listen.host}:${port}`;
  return { server, health, address };
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
