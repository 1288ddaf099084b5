/**
 * `vmmsim serve` and `--connect`: role processes started on their own, a controller that drives
 * them without starting any process, and the processes still there after the run.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Control } from '../../services/controller/control-client.js';
import type { CliRun } from '../helpers/cli.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { healthCheck, healthWatch } from '../helpers/health.js';
import { ONE_OF_EACH, alive, startServe, stopServed, testSecurity, testTokenFile, writePeers, type Served } from '../helpers/serve.js';
import { ROLE_NAMES, Runs, STACK_LINE, lines, readResults, runWatched, within } from './support.js';

const runs = new Runs();

/** A loopback port nothing listens on (taken from the kernel, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function byName(served: readonly Served[], name: string): Served {
  const s = served.find((x) => x.name === name);
  if (!s) throw new Error(`no ${name}`);
  return s;
}

describe('vmmsim serve on loopback TCP, driven with --connect', () => {
  const marker = randomUUID();
  let dir = '';
  let served: Served[] = [];
  let peers = '';

  beforeAll(async () => {
    dir = runs.folder('vmmsim-serve-');
    served = await Promise.all(ONE_OF_EACH.map((args) => startServe(args, marker)));
    peers = writePeers(join(dir, 'peers.yaml'), served);
  }, 120_000);

  afterEach(() => runs.cleanup());

  afterAll(async () => {
    await stopServed(served);
    runs.removeFolders();
    expect(await waitForNoProcesses(marker, 5000)).toEqual([]);
  });

  it('prints one JSON line with its name, its loopback address and its pid', () => {
    expect(served.map((s) => s.name).sort()).toEqual([...ROLE_NAMES].sort());
    for (const s of served) {
      expect(Object.keys(JSON.parse(s.line) as object).sort()).toEqual(['address', 'name', 'pid']);
      expect(s.address, s.name).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(s.pid, s.name).toBe(s.child.pid);
    }
  });

  it('adds its metrics port to the ready line when it serves metrics', async () => {
    const s = await startServe(['psmmu', '--index', '1', '--metrics-port', '0'], marker);
    try {
      const ready = JSON.parse(s.line) as { metricsPort?: number };
      expect(Object.keys(ready).sort()).toEqual(['address', 'metricsPort', 'name', 'pid']);
      const res = await fetch(`http://127.0.0.1:${ready.metricsPort ?? 0}/metrics`);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('vmmsim_process_info{role="psmmu",name="psmmu-1"} 1');
    } finally {
      await stopServed([s]);
    }
  });

  it('answers the standard gRPC health check with SERVING', async () => {
    for (const s of served) expect(await healthCheck(s.address), s.name).toBe('SERVING');
  });

  it('runs a scenario over them with --connect, starts no process, and leaves them running', async () => {
    const out = runs.folder();
    const r = await runWatched(runs, ['run', '--connect', peers, '--token-file', testTokenFile(), '--ops', '200', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.spawned).toEqual([]);
    const doc = readResults(out);
    expect(doc.status).toBe('ok');
    const run = doc.runs[0];
    if (!run) throw new Error('no run');
    // The results name the processes that ran it: the served ones, with their own pids.
    expect(run.processes.map((p) => [p.name, p.pid]).sort()).toEqual(served.map((s) => [s.name, s.pid]).sort());
    expect(run.ops.find((o) => o.op === 'unmap')?.count).toBe(200);
    expect(run.hops.map((h) => `${h.from}->${h.to}`)).toEqual(expect.arrayContaining(['guest-0->kvm', 'vfio->psmmu-0', 'psmmu-0->vfio']));
    for (const s of served) {
      expect(alive(s.pid), s.name).toBe(true);
      expect(await healthCheck(s.address), s.name).toBe('SERVING');
    }
  });

  it('runs a sweep whose points share the processes, one run per point, on the same processes', async () => {
    const out = runs.folder();
    const r = await runWatched(runs, ['sweep', '--set', 'topology.vsmmu=single,per-psmmu', '--connect', peers, '--token-file', testTokenFile(), '--ops', '100', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.spawned).toEqual([]);
    const doc = readResults(out);
    expect(doc.runs.map((x) => x.point)).toEqual([{ 'topology.vsmmu': 'single' }, { 'topology.vsmmu': 'per-psmmu' }]);
    for (const x of doc.runs) expect(x.processes.map((p) => p.pid).sort()).toEqual(served.map((s) => s.pid).sort());
  });

  it('refuses, before any run, a file that lacks a process the scenario needs', async () => {
    const partial = writePeers(join(dir, 'no-vfio.yaml'), served.filter((s) => s.name !== 'vfio'));
    const out = runs.folder();
    const r = await runWatched(runs, ['run', '--connect', partial, '--token-file', testTokenFile(), '--ops', '50', '--out', out]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr).filter((l) => l.startsWith('vmmsim: E_'))).toHaveLength(1);
    expect(r.stderr).toMatch(/E_PEERS_FILE: peers file \S+no-vfio\.yaml does not name vfio, which the scenario needs/);
    expect(r.stderr).toContain('vmmsim serve vfio');
    expect(r.stderr).not.toMatch(STACK_LINE);

    // A sweep is checked for every point up front: psmmu-1 is missing for the second point.
    const s = await runWatched(runs, ['sweep', '--set', 'topology.psmmus=1,2', '--connect', peers, '--token-file', testTokenFile(), '--ops', '50', '--out', out]);
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/does not name psmmu-1/);
    expect(s.stderr).not.toMatch(/sweep 1\//);
    expect(existsSync(join(out, 'results.json'))).toBe(false);
  });

  it('names a process that does not answer its health check within --start-timeout', async () => {
    const port = await closedPort();
    const file = writePeers(join(dir, 'dead-vfio.yaml'), served.map((s) => (s.name === 'vfio' ? { name: 'vfio', address: `127.0.0.1:${port}` } : s)));
    const out = runs.folder();
    const r = await runWatched(runs, ['run', '--connect', file, '--token-file', testTokenFile(), '--ops', '50', '--out', out, '--start-timeout', '1500']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`E_UNREACHABLE: a process of ${file} did not report SERVING on gRPC health within 1500 ms: vfio at 127.0.0.1:${port} (`);
    expect(r.stderr).not.toMatch(STACK_LINE);
    expect(readResults(out).status).toBe('failed');
  });

  it('names the memory folder a role cannot see, and the role', async () => {
    const missing = `/dev/shm/vmmsim-test-missing-${marker}`;
    const r = await runWatched(runs, ['run', '--connect', peers, '--token-file', testTokenFile(), '--ram-dir', missing, '--ops', '50', '--out', runs.folder()]);
    // Bad input, under its own code and fix, carried from the role to the controller's line.
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^vmmsim: E_RAM_DIR: Configure on psmmu-0 failed: the memory folder ${missing} does not exist on (\\S+) \\(psmmu-0\\).* \\(fix: create or mount ${missing} on \\1, or set ramDir in the --peers file\\)$`, 'm'));
    expect(existsSync(missing)).toBe(false);
  });

  it('names a file that gives one process the address of another', async () => {
    const kvm = byName(served, 'kvm');
    const vfio = byName(served, 'vfio');
    const swapped = served.map((s) => (s.name === 'kvm' ? { name: 'kvm', address: vfio.address } : s.name === 'vfio' ? { name: 'vfio', address: kvm.address } : s));
    const file = writePeers(join(dir, 'swapped.yaml'), swapped);
    const r = await runWatched(runs, ['run', '--connect', file, '--token-file', testTokenFile(), '--ops', '50', '--out', runs.folder()]);
    expect(r.code, r.stderr).toBe(2);
    // Both are wrong; the message names whichever answered first.
    expect(r.stderr).toMatch(new RegExp(`E_PEERS_FILE: peers file \\S+swapped\\.yaml: the process at (${vfio.address}, listed as kvm, is vfio|${kvm.address}, listed as vfio, is kvm)`));
  });

  it('refuses bad input with exit 2, one line and no stack trace, and starts nothing', async () => {
    const taken = byName(served, 'psmmu-0').address;
    const cases: [string[], RegExp][] = [
      [['serve', 'nic'], /E_USAGE: unknown role "nic"/],
      [['serve', 'psmmu', '--peers', join(dir, 'missing.yaml')], /E_PEERS_FILE: peers file \S+missing\.yaml: cannot read it: ENOENT/],
      [['serve', 'psmmu', '--listen', taken, '--token-file', testTokenFile()], new RegExp(`E_LISTEN: cannot listen on ${taken.replace(/\./g, '\\.')}`)],
      [['serve', 'psmmu', '--tls-ca', join(dir, 'none.pem'), '--tls-cert', 'c', '--tls-key', 'k'], /E_TLS: cannot read the CA certificate/],
    ];
    for (const [args, why] of cases) {
      const r = await runWatched(runs, args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(lines(r.stderr), args.join(' ')).toHaveLength(1);
      expect(r.stderr).toMatch(why);
      expect(r.stdout).toBe('');
    }
  });

  it('reports NOT_SERVING while it stops, then exits 0 on SIGTERM', async () => {
    const guest = byName(served, 'guest-0');
    const watch = healthWatch(guest.address);
    expect(await watch.first).toBe('SERVING');
    guest.child.kill('SIGTERM');
    await watch.ended;
    expect(watch.statuses).toContain('NOT_SERVING');
    expect(await guest.exited).toEqual({ code: 0, signal: null });
  });
});

describe('vmmsim serve on Unix sockets with its own --peers file', () => {
  const marker = randomUUID();
  let dir = '';
  let served: Served[] = [];
  let controllerPeers = '';
  const roleRam = `/dev/shm/vmmsim-test-roles-${marker}`;
  const controllerRam = `/dev/shm/vmmsim-test-controller-${marker}`;

  beforeAll(async () => {
    dir = runs.folder('vmmsim-serve-unix-');
    const sock = (name: string): string => `unix:${join(dir, `${name}.sock`)}`;
    const real = ROLE_NAMES.map((name) => ({ name, address: sock(name) }));
    controllerPeers = writePeers(join(dir, 'controller.yaml'), real);
    mkdirSync(roleRam);
    // The roles reach psmmu-0 by another path, which does not exist yet, and map their own folder.
    const rolePeers = writePeers(join(dir, 'roles.yaml'), real.map((e) => (e.name === 'psmmu-0' ? { name: e.name, address: sock('psmmu-0-alias') } : e)), roleRam);
    served = await Promise.all(ONE_OF_EACH.map((args) => {
      const name = args[0] === 'kvm' || args[0] === 'vfio' ? (args[0] as string) : `${args[0]}-${args[2]}`;
      return startServe([...args, '--listen', sock(name), '--peers', rolePeers], marker);
    }));
  }, 120_000);

  afterEach(() => runs.cleanup());

  afterAll(async () => {
    await stopServed(served);
    runs.removeFolders();
    rmSync(roleRam, { recursive: true, force: true });
    expect(await waitForNoProcesses(marker, 5000)).toEqual([]);
  });

  it('listens on the socket it was given and prints it as its address', () => {
    for (const s of served) expect(s.address).toBe(`unix:${join(dir, `${s.name}.sock`)}`);
  });

  it('dials each peer at the address of its own peers file, and maps the memory folder it names', async () => {
    const args = ['run', '--connect', controllerPeers, '--token-file', testTokenFile(), '--ram-dir', controllerRam, '--ops', '100'];
    // vfio dials psmmu-0 at the alias from its file, not at the address the controller sent.
    const failed = await runWatched(runs, [...args, '--out', runs.folder()]);
    expect(failed.code, failed.stderr).toBe(1);
    expect(failed.stderr).toContain('vfio could not connect to psmmu-0');

    symlinkSync(join(dir, 'psmmu-0.sock'), join(dir, 'psmmu-0-alias.sock'));
    const out = runs.folder();
    const ok = await runWatched(runs, [...args, '--out', out]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(readResults(out).status).toBe('ok');
    expect(readdirSync(roleRam)).toEqual(expect.arrayContaining(['guest-0.ram', 'host.ram']));
    // The controller's folder was only a name it sent, which does not exist: no role used it.
    expect(existsSync(controllerRam)).toBe(false);
  });

  it('removes its socket file when it stops', async () => {
    const ends = await stopServed(served);
    for (const e of ends) expect(e, e.name).toMatchObject({ code: 0, signal: null });
    for (const s of served) expect(existsSync(join(dir, `${s.name}.sock`)), s.name).toBe(false);
  });
});

describe('--connect: processes that stop answering', () => {
  const marker = randomUUID();
  let dir = '';
  let served: Served[] = [];

  /** A fresh set of the five processes and its peers file: a stopped process leaves a set unusable. */
  async function startSet(): Promise<string> {
    await stopServed(served);
    served = await Promise.all(ONE_OF_EACH.map((args) => startServe(args, marker)));
    return writePeers(join(dir, `peers-${randomUUID()}.yaml`), served);
  }

  /** Starts a long --connect run and resolves once its workload runs (the guest issues commands). */
  async function startLongRun(peers: string, out: string): Promise<CliRun> {
    const run = runs.start(['run', '--connect', peers, '--token-file', testTokenFile(), '--ops', '0', '--duration', '60', '--out', out]);
    let stderr = '';
    run.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const guest = new Control('guest-0', byName(served, 'guest-0').address, testSecurity());
    try {
      for (const until = Date.now() + 30_000; ; ) {
        if (run.child.exitCode !== null) throw new Error(`the run ended early (code ${run.child.exitCode}): ${stderr}`);
        if (Date.now() > until) throw new Error(`the workload did not start within 30 s: ${stderr}`);
        // Every other process has started once the guest's workload runs.
        if (((await guest.stats()).counters['guestCommands'] ?? 0) > 0) return run;
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      guest.close();
    }
  }

  function stop(name: string): number {
    const pid = byName(served, name).pid;
    process.kill(pid, 'SIGSTOP');
    return pid;
  }

  beforeAll(() => {
    dir = runs.folder('vmmsim-serve-stop-');
  });

  afterEach(async () => {
    // A stopped process takes no SIGTERM until it continues.
    for (const s of served) {
      try {
        process.kill(s.pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
    runs.cleanup();
  });

  afterAll(async () => {
    await stopServed(served);
    runs.removeFolders();
    expect(await waitForNoProcesses(marker, 5000)).toEqual([]);
  });

  it('a stopped process ends the run with E_DEADLINE naming it, instead of hanging', async () => {
    const peers = await startSet();
    const out = runs.folder();
    const run = await startLongRun(peers, out);
    const pid = stop('psmmu-0');
    // The watch of processes elsewhere: no answer within 10 s, nor to a second check within 5 s.
    const r = await within(run.done, 45_000, 'the controller after psmmu-0 was stopped');
    expect(r.code, r.stderr).toBe(1);
    const doc = readResults(out);
    expect(doc.status).toBe('failed');
    expect(doc.error?.code).toBe('E_DEADLINE');
    expect(doc.error?.message).toMatch(new RegExp(`^psmmu-0 \\(pid ${pid} on \\S+, at 127\\.0\\.0\\.1:\\d+\\) stopped answering: no reply to its health check within 10000 ms, nor to a second within 5000 ms$`));
    expect(r.stderr).toMatch(/^vmmsim: E_DEADLINE: psmmu-0 .*\(fix: .+\)$/m);
    // The others were released and keep serving.
    for (const s of served.filter((x) => x.name !== 'psmmu-0')) expect(await healthCheck(s.address), s.name).toBe('SERVING');
  });

  it('SIGINT ends the run promptly even when processes cannot answer the release', async () => {
    const peers = await startSet();
    const out = runs.folder();
    const run = await startLongRun(peers, out);
    // Three processes that cannot answer Stop: one overall deadline, not one each.
    for (const name of ['psmmu-0', 'vfio', 'kvm']) stop(name);
    run.child.kill('SIGINT');
    // The README promises 5 s; a loaded CI machine gets twice that.
    const r = await within(run.done, 10_000, 'the controller after SIGINT');
    expect(r.code, r.stderr).toBe(130);
    expect(readResults(out).status).toBe('interrupted');
  });
});
