import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, ROOT } from '../helpers/cli.js';
import { writeDescriptorSet } from '../helpers/descriptor-set.js';
import { killMarked, waitForNoProcesses } from '../helpers/processes.js';
import { testTokenFile } from '../helpers/serve.js';

/**
 * A role process talks to an independent gRPC implementation: Debian's python3-grpcio (gRPC's C
 * core) checks its health and opens a Link stream built from the repository's proto files.
 */

const CLIENT = join(ROOT, 'tests', 'interop', 'link_client.py');
/** Endpoint ids link_client.py puts on the hop it sends. */
const CLIENT_ID = 900;
const SERVER_ID = 901;

/** The first python3 with the grpc and protobuf modules (a pyenv python3 on PATH may lack them). */
function findPython(): { python: string } | { skip: string } {
  let found = false;
  for (const python of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(python, ['-c', 'import grpc, google.protobuf'], { encoding: 'utf8' });
    if (r.error) continue;
    found = true;
    if (r.status === 0) return { python };
  }
  return { skip: found ? "python3 has no grpc module (apt-get install python3-grpcio python3-protobuf)" : 'python3 is not installed' };
}

interface Reply {
  correlation_id: number;
  op_id: number;
  kind: string;
  reply: boolean;
  status: number;
  payload: string;
  modeled_ns: number;
  hops: { from: number; to: number; sent_ns: number; received_ns: number }[];
}
interface ClientReport {
  grpc: string;
  health: string;
  link: { method: string; batches: number; code: string; replies: Reply[] };
}

const py = findPython();
const skip = 'skip' in py ? py.skip : undefined;

describe.skipIf(skip !== undefined)(skip ? `interoperability with python3-grpcio (skipped: ${skip})` : 'interoperability with python3-grpcio', () => {
  const marker = randomUUID();
  let dir: string;
  let server: ChildProcess | undefined;
  let address: string;
  let descriptors: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmmsim-interop-'));
    descriptors = join(dir, 'link.binpb');
    writeDescriptorSet(['vmmsim/v1/link.proto'], descriptors);
    // Standalone, as in a pod: no IPC channel, ready line on stdout, stops on SIGTERM.
    const child = spawn(process.execPath, [BIN, 'serve', 'psmmu', '--index', '0', '--listen', '127.0.0.1:0', '--token-file', testTokenFile()], {
      cwd: ROOT,
      env: { ...process.env, VMMSIM_TEST_MARKER: marker, VMMSIM_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    server = child;
    const ready = await new Promise<{ name: string; address: string; pid: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('vmmsim serve psmmu printed no ready line within 20 s')), 20_000);
      const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
      lines.once('line', (line) => {
        clearTimeout(timer);
        resolve(JSON.parse(line) as { name: string; address: string; pid: number });
      });
      child.once('exit', (code) => reject(new Error(`vmmsim serve psmmu exited with ${code} before it was ready`)));
    });
    expect(ready.name).toBe('psmmu-0');
    expect(ready.pid).toBe(child.pid);
    address = ready.address;
  });

  afterAll(async () => {
    const child = server;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    const left = await waitForNoProcesses(marker, 5000);
    killMarked(marker);
    rmSync(dir, { recursive: true, force: true });
    expect(left).toEqual([]);
  });

  function runClient(echoes: { id: number; payload: Buffer }[], modeledNs: number): Promise<ClientReport> {
    const python = 'python' in py ? py.python : 'python3';
    const args = [CLIENT, '--target', address, '--descriptors', descriptors, '--token-file', testTokenFile(), '--modeled-ns', String(modeledNs), ...echoes.flatMap((e) => ['--echo', `${e.id}:${e.payload.toString('hex')}`])];
    return new Promise((resolve, reject) => {
      execFile(
        python,
        args,
        { cwd: ROOT, timeout: 30_000, env: { ...process.env, VMMSIM_TEST_MARKER: marker, PYTHONDONTWRITEBYTECODE: '1' } },
        (err, stdout, stderr) => (err ? reject(new Error(`link_client.py failed: ${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout) as ClientReport)),
      );
    });
  }

  it('answers Health/Check for the whole server and echoes a Batch on the Link stream, matched by correlation id', async () => {
    // Ids at both ends of uint32 and payloads from empty to several frames' worth, random each run.
    const echoes = [
      { id: 0xffff_ffff, payload: randomBytes(16) },
      { id: 1, payload: Buffer.alloc(0) },
      { id: 1 + randomBytes(2).readUInt16LE(0), payload: randomBytes(40_000) },
    ];
    const modeledNs = 1234.5;
    const report = await runClient(echoes, modeledNs);
    expect(report.health).toBe('SERVING');
    expect(report.link.method).toBe('/vmmsim.v1.Link/Open');
    expect(report.link.code).toBe('OK');
    expect(report.link.replies).toHaveLength(echoes.length);
    for (const [i, e] of echoes.entries()) {
      const r = report.link.replies.find((x) => x.correlation_id === e.id);
      expect(r, `a reply for correlation id ${e.id}`).toBeDefined();
      expect(r?.payload, `payload of ${e.id}`).toBe(e.payload.toString('hex'));
      expect(r?.op_id).toBe(i + 1);
      expect(r?.kind).toBe('ECHO');
      expect(r?.reply).toBe(true);
      expect(r?.status).toBe(0);
      expect(r?.modeled_ns).toBe(modeledNs);
      // The request's hop comes back stamped on arrival, then the hop back to the sender.
      expect(r?.hops).toHaveLength(2);
      expect(r?.hops[0]).toMatchObject({ from: CLIENT_ID, to: SERVER_ID });
      expect(r?.hops[0]?.received_ns).toBeGreaterThan(0);
      expect(r?.hops[1]?.to).toBe(CLIENT_ID);
      expect(r?.hops[1]?.sent_ns).toBeGreaterThan(0);
    }
  });
});
