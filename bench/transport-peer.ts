/**
 * The child process of `npm run bench -- transport`: a raw Unix-socket echo server and a bare
 * grpc-js Echo server (proto/bench/v1/echo.proto), both in one process. It reports ready over the
 * IPC channel and exits as soon as that channel closes, so it never outlives the bench.
 */
import * as grpc from '@grpc/grpc-js';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SERVER_OPTIONS } from '../services/runtime/transport/options.js';
import { loadEcho, type Chunk, type PeerReady } from './transport.js';

async function main(): Promise<void> {
  if (!process.send) throw new Error('bench/transport-peer.js is started by `npm run bench -- transport` (it needs an IPC channel)');
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
  // The bench owns the run and stops this process itself; a terminal's Ctrl-C must not race it.
  process.on('SIGINT', () => undefined);
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(0);
  }, 500).unref();

  const { values } = parseArgs({ args: process.argv.slice(2), options: { 'socket-dir': { type: 'string' } }, strict: true });
  const dir = values['socket-dir'];
  if (!dir) throw new Error('--socket-dir DIR is required');

  // Raw echo: every byte straight back, as it arrives.
  const rawPath = join(dir, 'raw-echo.sock');
  const raw = createServer((sock) => {
    sock.on('data', (chunk) => sock.write(chunk));
    sock.on('error', () => sock.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    raw.once('error', reject);
    raw.listen(rawPath, resolve);
  });

  // gRPC echo: every Chunk straight back on the same stream.
  const Echo = loadEcho();
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(Echo.service, {
    Stream: (call: grpc.ServerDuplexStream<Chunk, Chunk>) => {
      call.on('data', (c: Chunk) => call.write(c));
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  });
  const grpcAddress = `unix://${join(dir, 'grpc-echo.sock')}`;
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(grpcAddress, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });

  const ready: PeerReady = { type: 'ready', pid: process.pid, rawPath, grpcAddress };
  process.send(ready);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench transport peer failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
