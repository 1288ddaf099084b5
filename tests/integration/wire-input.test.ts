/**
 * Bad input on the wire, against a real role process on loopback (psmmu-0, started as the launcher
 * starts one: with an IPC channel, reporting its address when ready). Each bad peer gets a gRPC
 * error or is dropped; the process keeps serving the others: a healthy client's link stream,
 * opened before the bad input, still answers ECHO after it, and the health check still says SERVING.
 */
import * as grpc from '@grpc/grpc-js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { profileCosts } from '../../services/cost/profile.js';
import { Errno } from '../../services/runtime/errors.js';
import type { Batch, Batch__Output } from '../../services/runtime/generated/vmmsim/v1/Batch.js';
import type { Envelope__Output } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import { protos } from '../../services/runtime/proto.js';
import type { ChildMessage } from '../../services/runtime/role-runtime.js';
import { createRunFolder } from '../../services/machine/run-folder.js';
import { RunToken, TOKEN_ENV, callerMetadata } from '../../services/runtime/transport/auth.js';
import { INSECURE, withToken } from '../../services/runtime/transport/credentials.js';
import { LinkClient } from '../../services/runtime/transport/link.js';
import { MAX_CONNECTION_IDLE_MS, MAX_MESSAGE_BYTES } from '../../services/runtime/transport/options.js';
import { Control } from '../../services/controller/control-client.js';
import { ROOT } from '../helpers/cli.js';
import { healthCheck } from '../helpers/health.js';
import { processesWithMarker, waitForNoProcesses } from '../helpers/processes.js';
import { testProfile } from '../helpers/tree.js';

const ROLE_MAIN = join(ROOT, 'dist', 'services', 'runtime', 'role-main.js');
const marker = randomUUID();
const ramDir = createRunFolder(tmpdir(), 'vmmsim-wire-');
/** The run token the test hands psmmu-0 as a launcher does, and proves its own names with. */
const token = RunToken.generate();
const security = withToken(INSECURE, token);
/** The HTTP/2 client connection preface (RFC 9113, 3.4). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

let child: ChildProcess;
let address = '';
let stderr = '';
let healthy: LinkClient;

/** A raw client of the Link service with our own channel options (a bigger send limit, for one). */
function rawLink(options: grpc.ChannelOptions = {}): grpc.Client & { Open(metadata?: grpc.Metadata): grpc.ClientDuplexStream<Batch, Batch__Output> } {
  const Link = protos().link.vmmsim.v1.Link;
  return new Link(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, ...options }) as unknown as grpc.Client & { Open(metadata?: grpc.Metadata): grpc.ClientDuplexStream<Batch, Batch__Output> };
}

/** What a stream brought before it ended: the first reply, or the gRPC error it ended with. */
function firstOutcome(call: grpc.ClientDuplexStream<Batch, Batch__Output>): Promise<{ reply?: Envelope__Output; error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    call.on('data', (b: Batch__Output) => resolve(b.envelopes[0] ? { reply: b.envelopes[0] } : {}));
    call.on('error', (error: grpc.ServiceError) => resolve({ error }));
  });
}

/** Resolves when the server closes the socket (or rejects after `ms`). */
function closedBy(socket: Socket, ms: number): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server kept the connection open for ${ms} ms`)), ms);
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - t0);
    });
  });
}

function rawSocket(): Promise<Socket> {
  const m = /^(.+):(\d+)$/.exec(address) as RegExpExecArray;
  const s = connect(Number(m[2]), m[1] as string);
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** The others are still served: the healthy link answers ECHO, health says SERVING, the process lives. */
async function stillServing(): Promise<void> {
  const payload = Buffer.from(randomUUID());
  const reply = await healthy.request({ kind: 'ECHO', opId: 7, payload, modeledNs: 0 });
  expect(reply.status).toBe(0);
  expect(Buffer.from(reply.payload).equals(payload)).toBe(true);
  expect(await healthCheck(address)).toBe('SERVING');
  expect(child.exitCode).toBeNull();
  expect(processesWithMarker(marker).map((p) => p.pid)).toEqual([child.pid]);
}

beforeAll(async () => {
  child = spawn(process.execPath, [ROLE_MAIN, '--role', 'psmmu', '--index', '0', '--listen', '127.0.0.1:0', '--log-level', 'warn'], {
    env: { ...process.env, VMMSIM_TEST_MARKER: marker, [TOKEN_ENV]: token.toText() },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const ready = await new Promise<ChildMessage>((resolve, reject) => {
    child.once('message', (m: ChildMessage) => resolve(m));
    child.once('exit', (code) => reject(new Error(`psmmu-0 exited (${code}) before it was ready: ${stderr}`)));
  });
  if (ready.type !== 'ready') throw new Error(`psmmu-0 failed to start: ${ready.message}`);
  address = ready.address;
  // Configured with a topology of its own, so a request reaches its model (not only the runtime).
  const control = new Control('psmmu-0', address, security);
  try {
    await control.configure({
      runId: 'wire-input', model: 'nested-smmuv3', dma: 'strict', seed: 1, costsNs: profileCosts(testProfile), vmids: [1], deadlineMs: 5000, ramDir, vsmmu: 'single',
      // vfio is the test itself: psmmu-0 serves requests from its upstream roles only.
      endpoints: [{ id: 1, role: 'psmmu', index: 0, name: 'psmmu-0', address, pid: child.pid ?? 0, host: 'localhost' }, { id: 2, role: 'vfio', index: 0, name: 'vfio', address: 'unix:///nonexistent', pid: process.pid, host: 'localhost' }], devices: [],
    });
  } finally {
    control.close();
  }
  healthy = new LinkClient({ selfId: 2, selfName: 'vfio', peerId: 1, peerName: 'psmmu-0' }, address, 10_000, security);
  await healthy.open();
  await stillServing();
}, 60_000);

afterAll(async () => {
  healthy?.close();
  child?.kill('SIGTERM');
  expect(await waitForNoProcesses(marker, 10_000)).toEqual([]);
  rmSync(ramDir, { recursive: true, force: true });
  // Bad peers are answered, not logged as crashes: no stack trace from the process.
  expect(stderr).not.toMatch(/^\s+at\s/m);
}, 30_000);

describe('bad wire input to a role process', () => {
  it(`answers a message over the ${MAX_MESSAGE_BYTES / 2 ** 20} MiB link limit with RESOURCE_EXHAUSTED on that stream only`, async () => {
    const client = rawLink({ 'grpc.max_send_message_length': -1 });
    try {
      const call = client.Open(callerMetadata('vfio', token));
      const outcome = firstOutcome(call);
      call.write({ envelopes: [{ correlationId: 1, opId: 1, kind: 'ECHO', payload: Buffer.alloc(MAX_MESSAGE_BYTES + 1024), hops: [] }] });
      const { error, reply } = await outcome;
      expect(reply).toBeUndefined();
      expect(error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(error?.details).toMatch(/larger than max/);
    } finally {
      client.close();
    }
    await stillServing();
  });

  it('answers a gRPC message that is not a Batch (garbage protobuf) with a gRPC error', async () => {
    // The same method, with a serializer that sends junk bytes as the message.
    const Junk = grpc.makeGenericClientConstructor(
      { Open: { path: '/vmmsim.v1.Link/Open', requestStream: true, responseStream: true, requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } },
      'Link',
    );
    const client = new Junk(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    try {
      const call = (client as unknown as { Open(metadata: grpc.Metadata): grpc.ClientDuplexStream<Buffer, Buffer> }).Open(callerMetadata('vfio', token));
      const outcome = new Promise<grpc.ServiceError | 'data'>((resolve) => {
        call.on('data', () => resolve('data'));
        call.on('error', (e: grpc.ServiceError) => resolve(e));
      });
      call.write(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]));
      const r = await outcome;
      expect(r).not.toBe('data');
      expect((r as grpc.ServiceError).code).toBe(grpc.status.INTERNAL);
    } finally {
      client.close();
    }
    await stillServing();
  });

  it('drops a raw TCP connection that writes junk instead of HTTP/2', async () => {
    const s = await rawSocket();
    s.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe junk junk junk', 'latin1'));
    await closedBy(s, 10_000);
    await stillServing();
  });

  it('drops a connection that sends a valid HTTP/2 preface followed by junk frames', async () => {
    const s = await rawSocket();
    // A frame header claiming a 16 MiB frame of an unknown type on stream 0, then noise.
    s.write(Buffer.concat([PREFACE, Buffer.from([0xff, 0xff, 0xff, 0xee, 0x00, 0x00, 0x00, 0x00, 0x00]), Buffer.from('junk'.repeat(64))]));
    await closedBy(s, 10_000);
    await stillServing();
  });

  it('answers an Envelope of an unknown kind with EOPNOTSUPP and goes on', async () => {
    const client = rawLink();
    try {
      const call = client.Open(callerMetadata('vfio', token));
      const outcome = firstOutcome(call);
      // Kind 999 is no value of the enum: protobuf keeps it as a number on the way in.
      call.write({ envelopes: [{ correlationId: 42, opId: 1, kind: 999 as unknown as 'ECHO', payload: Buffer.from([1, 2, 3]), hops: [{ from: 2, to: 1, sentNs: 0, receivedNs: 0 }] }] });
      const { reply, error } = await outcome;
      expect(error).toBeUndefined();
      expect(reply).toMatchObject({ correlationId: 42, reply: true, status: -Errno.EOPNOTSUPP });
      call.end();
    } finally {
      client.close();
    }
    await stillServing();
  });

  it(`serves the others while a peer connects and says nothing, and drops it after ${MAX_CONNECTION_IDLE_MS / 1000} s`, async () => {
    const s = await rawSocket();
    const closed = closedBy(s, MAX_CONNECTION_IDLE_MS + 20_000);
    // Meanwhile everyone else is served, several times over.
    for (let i = 0; i < 3; i++) {
      await stillServing();
      await new Promise((r) => setTimeout(r, 1000));
    }
    expect(s.destroyed).toBe(false);
    await closed;
    await stillServing();
  }, MAX_CONNECTION_IDLE_MS + 40_000);
});
