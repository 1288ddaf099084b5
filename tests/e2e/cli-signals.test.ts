/**
 * How a long run ends when it is interrupted, when a child process dies, and when the controller
 * itself is killed: exit code, results.json, and no process left (asked of the OS by marker).
 * A long run is `--ops 0 --duration 30`: it would last 30 s, so each test ends it itself.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { CliRun } from '../helpers/cli.js';
import { processesWithMarker, waitForNoProcesses } from '../helpers/processes.js';
import { ROLES, Runs, entries, readResults, roleOf, waitFor, within } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

interface LongRun {
  run: CliRun;
  out: string;
  tmp: string;
  /** Pid of each role process, by role. */
  pids: Map<string, number>;
}

/**
 * Starts a long run and waits until the controller and its five role processes exist (the
 * controller carries the marker too: six processes) and the workload has started.
 */
async function startLongRun(): Promise<LongRun> {
  const out = join(runs.folder(), 'out');
  const tmp = runs.folder('vmmsim-e2e-tmp-');
  const run = runs.start(['run', '--ops', '0', '--duration', '30', '--out', out], { env: { TMPDIR: tmp } });
  let stderr = '';
  run.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const pids = await waitFor(
    () => {
      if (run.child.exitCode !== null) throw new Error(`the run ended early (code ${run.child.exitCode}): ${stderr}`);
      const found = processesWithMarker(run.marker);
      if (found.length < 6 || !found.some((p) => p.pid === run.child.pid)) return undefined;
      const byRole = new Map<string, number>();
      for (const p of found) {
        const role = roleOf(p.cmdline);
        if (role !== undefined) byRole.set(role, p.pid);
      }
      return ROLES.every((r) => byRole.has(r)) ? byRole : undefined;
    },
    30_000,
    'the controller and its five role processes',
  );
  // "running <model>" is printed once every process reported ready, just before the workload starts.
  await waitFor(() => (stderr.includes('vmmsim: running ') ? true : undefined), 30_000, 'the workload to start');
  return { run, out, tmp, pids };
}

describe('signals and crashes during a long run', () => {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    it(`${sig} to the controller: exit 130, results.json "interrupted", no process left`, async () => {
      const { run, out, tmp } = await startLongRun();
      run.child.kill(sig);
      const r = await within(run.done, 10_000, `the controller after ${sig}`);
      expect(r.code, r.stderr).toBe(130);
      expect(r.signal).toBeNull();
      const doc = readResults(out);
      expect(doc.status).toBe('interrupted');
      expect(doc.error?.code).toBe('E_INTERRUPTED');
      expect(doc.error?.message).toContain(sig);
      expect(r.stderr).toMatch(/^vmmsim: E_INTERRUPTED: .*\(fix: .+\)$/m);
      expect(await waitForNoProcesses(run.marker, 10_000)).toEqual([]);
      expect(entries(tmp), 'socket folder removed').toEqual([]);
    });
  }

  it('SIGKILL of psmmu-0: the controller exits 1, results.json "failed" names psmmu-0, no process left', async () => {
    const { run, out, tmp, pids } = await startLongRun();
    const psmmu = processesWithMarker(run.marker).find((p) => p.cmdline.includes('--role psmmu'));
    expect(psmmu, 'the psmmu process').toBeDefined();
    expect(psmmu?.pid).toBe(pids.get('psmmu'));
    process.kill(psmmu?.pid as number, 'SIGKILL');
    const r = await within(run.done, 10_000, 'the controller after its psmmu-0 was killed');
    expect(r.code, r.stderr).toBe(1);
    const doc = readResults(out);
    expect(doc.status).toBe('failed');
    expect(doc.error?.code).toMatch(/^E_/);
    expect(doc.error?.message).toContain('psmmu-0');
    expect(r.stderr).toMatch(/^vmmsim: E_[A-Z_]+: .*psmmu-0.*\(fix: .+\)$/m);
    expect(await waitForNoProcesses(run.marker, 10_000)).toEqual([]);
    expect(entries(tmp), 'socket folder removed').toEqual([]);
  });

  it('SIGKILL of the controller: every role process exits by itself and removes the run\'s memory files', async () => {
    const ramDirs = (): string[] => (existsSync('/dev/shm') ? readdirSync('/dev/shm').filter((d) => d.startsWith('vmmsim-ram-')) : []);
    const before = new Set(ramDirs());
    const { run, pids } = await startLongRun();
    expect([...pids.keys()].sort()).toEqual([...ROLES].sort());
    run.child.kill('SIGKILL');
    const r = await within(run.done, 10_000, 'the controller after SIGKILL');
    expect(r.signal).toBe('SIGKILL');
    // Nobody stops them: they notice their IPC channel closed (or that they were reparented).
    expect(await waitForNoProcesses(run.marker, 10_000)).toEqual([]);
    // The controller could not remove its RAM folder on tmpfs; the orphaned roles did.
    expect(ramDirs().filter((d) => !before.has(d))).toEqual([]);
  });
});
