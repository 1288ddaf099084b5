/**
 * The floor peer: two small processes the controller starts (as it starts the roles, on the same
 * CPU when pinned) to time this host's transport floor, one way: a bare Unix-socket ping-pong and a
 * bare grpc-js bidi stream (transport/floor.ts), in interleaved rounds.
 *
 *   node floor-main.js --serve DIR        echo servers on DIR/floor-raw.sock and DIR/floor-grpc.sock
 *   node floor-main.js --probe DIR --round-trips N --warmup W --rounds R
 *   node floor-main.js --relay DIR --index I --count N   one process of a bare relay (the path bench's
 *                                         reference): Relay passes each message on to DIR/relay-(I+1)
 *                                         and its answer back (the last answers itself); Echo answers
 *
 * Each reports over its IPC channel (ready, or the prober's result) and exits when the channel
 * closes, so neither outlives the controller. The sockets sit in the controller's private folder.
 */
import * as grpc from '@grpc/grpc-js';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { nowNs } from './clock.js';
import type { Summary__Output as Summary } from './generated/vmmsim/v1/Summary.js';
import { NS_PER_US } from './clock.js';
import { summarizeValues } from './samples.js';
import { FLOOR_PAYLOAD_BYTES, FLOOR_SERVICE, FloorProbe, RELAY_SERVICE, floorHandlers } from './transport/floor.js';
import { CHANNEL_OPTIONS } from './transport/options.js';
import { SERVER_OPTIONS } from './transport/options.js';

export type FloorMessage =
  | { type: 'ready' }
  | { type: 'floor'; rawUdsOneWayUs: Summary; grpcOneWayUs: Summary; roundTrips: number }
  | { type: 'failed'; message: string };

const RAW = 'floor-raw.sock';
const GRPC = 'floor-grpc.sock';

async function serve(dir: string): Promise<void> {
  const raw = createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('data', (chunk) => sock.write(chunk));
    sock.on('error', () => sock.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    raw.once('error', reject);
    raw.listen(join(dir, RAW), resolve);
  });
  const server = new grpc.Server(SERVER_OPTIONS);
  // A private socket folder: whoever reaches it is this controller.
  server.addService(FLOOR_SERVICE, floorHandlers(() => ({ name: 'controller' })));
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${join(dir, GRPC)}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
}

/** A raw Unix-socket ping-pong of FLOOR_PAYLOAD_BYTES: one round trip, in ns. */
async function rawPingPong(path: string): Promise<{ roundTrip: () => Promise<number>; close: () => void }> {
  const sock: Socket = createConnection(path);
  sock.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const payload = Buffer.alloc(FLOOR_PAYLOAD_BYTES, 0x5a);
  let got = 0;
  let waiting: { t0: number; resolve: (ns: number) => void } | undefined;
  sock.on('data', (b: Buffer) => {
    got += b.length;
    if (got < payload.length || !waiting) return;
    got -= payload.length;
    const w = waiting;
    waiting = undefined;
    w.resolve(nowNs() - w.t0);
  });
  return {
    roundTrip: () =>
      new Promise<number>((resolve, reject) => {
        sock.once('error', reject);
        waiting = { t0: nowNs(), resolve };
        sock.write(payload);
      }).finally(() => sock.removeAllListeners('error')),
    close: () => sock.destroy(),
  };
}

async function probe(dir: string, roundTrips: number, warmup: number, rounds: number): Promise<FloorMessage> {
  const raw = await rawPingPong(join(dir, RAW));
  const g = await FloorProbe.open('controller', 'floor', `unix://${join(dir, GRPC)}`);
  const kinds = [raw.roundTrip, () => g.roundTrip()];
  for (const rt of kinds) for (let i = 0; i < warmup; i++) await rt();
  const samples: number[][] = [[], []];
  const perRound = Math.max(1, Math.ceil(roundTrips / rounds));
  for (let r = 0; r < rounds; r++) {
    // The order alternates each round, so a change of the machine's state meets both alike.
    for (let k = 0; k < kinds.length; k++) {
      const which = (r + k) % kinds.length;
      const rt = kinds[which] as () => Promise<number>;
      const out = samples[which] as number[];
      for (let i = 0; i < perRound; i++) out.push((await rt()) / 2);
    }
  }
  raw.close();
  g.close();
  return { type: 'floor', rawUdsOneWayUs: summarizeValues(samples[0] as number[], NS_PER_US), grpcOneWayUs: summarizeValues(samples[1] as number[], NS_PER_US), roundTrips: perRound * rounds };
}

/** One process of the bare relay: see the top of the file. */
async function relay(dir: string, index: number, count: number): Promise<void> {
  const last = index === count - 1;
  const Client = grpc.makeGenericClientConstructor(RELAY_SERVICE, 'Floor');
  const next = last ? undefined : new Client(`unix://${join(dir, `relay-${index + 1}.sock`)}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(RELAY_SERVICE, {
    Echo: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (b: Buffer) => call.write(b));
      call.on('error', () => undefined);
    },
    Relay: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('error', () => undefined);
      if (!next) {
        call.on('data', (b: Buffer) => call.write(b));
        return;
      }
      const down = (next as unknown as { Relay(): grpc.ClientDuplexStream<Buffer, Buffer> }).Relay();
      down.on('data', (b: Buffer) => call.write(b));
      down.on('error', () => undefined);
      call.on('data', (b: Buffer) => down.write(b));
      call.on('end', () => down.end());
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${join(dir, `relay-${index}.sock`)}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
}

async function main(): Promise<void> {
  const send = process.send?.bind(process);
  if (!send) throw new Error('floor-main.js is started by the controller (it needs an IPC channel)');
  process.on('disconnect', () => process.exit(0));
  process.on('SIGINT', () => undefined);
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { serve: { type: 'string' }, probe: { type: 'string' }, relay: { type: 'string' }, index: { type: 'string', default: '0' }, count: { type: 'string', default: '1' }, 'round-trips': { type: 'string', default: '2000' }, warmup: { type: 'string', default: '500' }, rounds: { type: 'string', default: '4' } },
    strict: true,
  });
  if (values.relay !== undefined) {
    await relay(values.relay, Number(values.index), Number(values.count));
    send({ type: 'ready' } satisfies FloorMessage);
    return;
  }
  if (values.serve !== undefined) {
    await serve(values.serve);
    send({ type: 'ready' } satisfies FloorMessage);
    return;
  }
  if (values.probe === undefined) throw new Error('--serve DIR or --probe DIR');
  const result = await probe(values.probe, Number(values['round-trips']), Number(values.warmup), Number(values.rounds));
  send(result, () => process.exit(0));
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  if (process.send) process.send({ type: 'failed', message } satisfies FloorMessage, () => process.exit(1));
  else {
    process.stderr.write(`vmmsim floor peer: ${message}\n`);
    process.exit(1);
  }
});
