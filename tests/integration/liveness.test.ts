/**
 * The controller's liveness watch (services/controller/liveness.ts) against a real process serving
 * the standard gRPC health service: it stays quiet while the process answers, and while it does not
 * answer but works (a CPU-bound stretch, as a guest encoding a long run's results), and while the
 * controller itself is blocked past the deadlines (the replies wait unread); it names the process
 * once it is stopped (SIGSTOP), also a process elsewhere (no /proc); a process that exits is not
 * its to report.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { VmmsimError } from '../../services/runtime/errors.js';
import { LivenessWatch, processState } from '../../services/controller/liveness.js';
import { ROOT } from '../helpers/cli.js';
import { killMarked, waitForNoProcesses } from '../helpers/processes.js';

/** A health server on loopback that prints its port, and on SIGUSR2 spins the CPU for 4 s. */
const SERVER = `
const grpc = require('@grpc/grpc-js');
const { HealthImplementation } = require('grpc-health-check');
const server = new grpc.Server();
new HealthImplementation({ '': 'SERVING' }).addToServer(server);
process.on('SIGUSR2', () => { const until = Date.now() + 4000; while (Date.now() < until) {} });
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(port + '\\n');
});
`;

// Shorter than the real ones (5 s, 2 s), yet far above a loaded machine's scheduling delays.
const FAST = { deadlineMs: 2000, confirmDeadlineMs: 1000, periodMs: 200, local: true } as const;
const marker = randomUUID();
let child: ChildProcess | undefined;
let watch: LivenessWatch | undefined;

afterEach(async () => {
  watch?.stop();
  if (child?.pid) {
    try {
      process.kill(child.pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
  killMarked(marker);
  expect(await waitForNoProcesses(marker, 5000)).toEqual([]);
});

async function startServer(): Promise<{ name: string; pid: number; address: string }> {
  const c = spawn(process.execPath, ['-e', SERVER], { cwd: ROOT, env: { ...process.env, VMMSIM_TEST_MARKER: marker }, stdio: ['ignore', 'pipe', 'inherit'] });
  child = c;
  const port = await new Promise<number>((resolve, reject) => {
    c.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    c.once('exit', (code) => reject(new Error(`the health server exited (${code})`)));
  });
  return { name: 'psmmu-0', pid: c.pid as number, address: `127.0.0.1:${port}` };
}

function watchOne(p: { name: string; pid: number; address: string; host?: string }, opts: { local: boolean } = FAST): { failures: VmmsimError[] } {
  const failures: VmmsimError[] = [];
  watch = new LivenessWatch([p], { ...FAST, ...opts, onFailure: (e) => failures.push(e) });
  watch.start();
  return { failures };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('the liveness watch', () => {
  it('says nothing while the process answers, nor while it works without answering', async () => {
    const p = await startServer();
    const { failures } = watchOne(p);
    await sleep(1500);
    // Four seconds of CPU with the event loop held: no answer, past deadline and second check (3 s).
    process.kill(p.pid, 'SIGUSR2');
    await sleep(5500);
    expect(failures).toEqual([]);
  });

  it('names a stopped process with E_DEADLINE, once', async () => {
    const p = await startServer();
    const { failures } = watchOne(p);
    await sleep(500);
    process.kill(p.pid, 'SIGSTOP');
    const until = Date.now() + 15_000;
    while (failures.length === 0 && Date.now() < until) await sleep(100);
    expect(processState(p.pid)).toBe('T');
    expect(failures).toHaveLength(1);
    expect(failures[0]?.code).toBe('E_DEADLINE');
    expect(failures[0]?.message).toMatch(new RegExp(`^psmmu-0 \\(pid ${p.pid}\\) stopped answering: .*it is stopped \\(SIGSTOP`));
    await sleep(2000);
    expect(failures).toHaveLength(1);
  });

  it('says nothing while the controller itself is blocked past the deadlines', async () => {
    const p = await startServer();
    // No /proc check: the server's own CPU time must not be what keeps the watch quiet.
    const { failures } = watchOne(p, { local: false });
    await sleep(500);
    // Stretches of this process's own event loop held longer than the deadline, with one turn of
    // the loop between them: a check sent in one turn has its deadline fire before its reply, which
    // did arrive, is read; the second check, sent right then, meets the next stretch the same way.
    for (let i = 0; i < 4; i++) {
      const until = Date.now() + 2600;
      while (Date.now() < until) {
        // the controller is busy
      }
      await new Promise((r) => setImmediate(r));
    }
    await sleep(500);
    expect(failures).toEqual([]);
  });

  it('names a stopped process elsewhere (no /proc) with E_DEADLINE, its host and address', async () => {
    const p = await startServer();
    const { failures } = watchOne({ ...p, host: 'node-7' }, { local: false });
    await sleep(500);
    process.kill(p.pid, 'SIGSTOP');
    const until = Date.now() + 15_000;
    while (failures.length === 0 && Date.now() < until) await sleep(100);
    expect(failures).toHaveLength(1);
    expect(failures[0]?.code).toBe('E_DEADLINE');
    expect(failures[0]?.message).toBe(`psmmu-0 (pid ${p.pid} on node-7, at ${p.address}) stopped answering: no reply to its health check within 2000 ms, nor to a second within 1000 ms`);
  });

  it('leaves a process that exited to whoever started it', async () => {
    const p = await startServer();
    const { failures } = watchOne(p);
    await sleep(500);
    const exited = new Promise((r) => child?.once('exit', r));
    process.kill(p.pid, 'SIGKILL');
    await exited;
    await sleep(3000);
    expect(failures).toEqual([]);
  });
});
