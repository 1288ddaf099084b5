/**
 * Shared pieces of the CLI end-to-end tests: a registry of the runs a test started (so afterEach
 * can kill whatever a failed test left), a watcher that records every process a run spawned, and
 * readers for the results document.
 */
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { ResultsDoc } from '../../services/controller/results.js';
import { startCli, tempDir, type CliResult, type CliRun } from '../helpers/cli.js';
import { killMarked, processesWithMarker } from '../helpers/processes.js';

export const ROLE_NAMES = ['guest-0', 'kvm', 'qemu-0', 'vfio', 'psmmu-0'] as const;
export const ROLES = ['guest', 'kvm', 'qemu', 'vfio', 'psmmu'] as const;

/**
 * Every CLI run a test file started: `cleanup()` (afterEach) SIGKILLs whatever still carries their
 * markers; `removeFolders()` (afterAll) deletes the temporary folders made through `folder()`.
 */
export class Runs {
  private readonly markers: string[] = [];
  private readonly folders: string[] = [];

  folder(prefix = 'vmmsim-e2e-'): string {
    const dir = tempDir(prefix);
    this.folders.push(dir);
    return dir;
  }

  removeFolders(): void {
    for (const d of this.folders.splice(0)) rmSync(d, { recursive: true, force: true });
  }

  start(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): CliRun {
    const run = startCli(args, opts);
    this.markers.push(run.marker);
    return run;
  }

  cleanup(): void {
    for (const m of this.markers.splice(0)) killMarked(m);
  }
}

/**
 * Records every process other than the controller that carries a run's marker, from the moment
 * it is called until `stop()`. A role process lives at least until it reports ready (hundreds of
 * milliseconds), far longer than the polling period, so none can slip by unseen.
 */
export function watchSpawned(run: CliRun, periodMs = 20): { stop: () => { pid: number; cmdline: string }[] } {
  const seen = new Map<number, string>();
  const poll = (): void => {
    for (const p of processesWithMarker(run.marker)) if (p.pid !== run.child.pid) seen.set(p.pid, p.cmdline);
  };
  poll();
  const timer = setInterval(poll, periodMs);
  return {
    stop: () => {
      clearInterval(timer);
      poll();
      return [...seen].map(([pid, cmdline]) => ({ pid, cmdline }));
    },
  };
}

/**
 * Runs the CLI to its end while watching for spawned processes. TMPDIR points at a fresh folder,
 * so the caller can also check that no socket folder was created (or that it was removed).
 */
export async function runWatched(
  runs: Runs,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<CliResult & { spawned: { pid: number; cmdline: string }[]; tmp: string }> {
  const tmp = runs.folder('vmmsim-e2e-tmp-');
  const run = runs.start(args, { ...opts, env: { ...opts.env, TMPDIR: tmp } });
  const watcher = watchSpawned(run);
  const result = await run.done;
  return { ...result, spawned: watcher.stop(), tmp };
}

/** Entries of a folder (empty when the folder is gone). */
export function entries(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

export function parseResults(text: string): ResultsDoc {
  const doc: unknown = JSON.parse(text);
  expect(doc).toBeTypeOf('object');
  return doc as ResultsDoc;
}

export function readResults(dir: string): ResultsDoc {
  return parseResults(readFileSync(join(dir, 'results.json'), 'utf8'));
}

/** Resolves with the promise's value, or rejects naming `what` if it takes longer than `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it returns a value other than undefined, or fails naming `what` after `ms`. */
export async function waitFor<T>(check: () => T | undefined, ms: number, what: string): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The role of a role process from its command line (`... role-main.js --role psmmu --index 0 ...`). */
export function roleOf(cmdline: string): string | undefined {
  return /--role (\S+)/.exec(cmdline)?.[1];
}

/** Lines of a stream's text, without the empty last one. */
export function lines(text: string): string[] {
  return text.split('\n').filter((l, i, all) => !(i === all.length - 1 && l === ''));
}

/** A stack trace line, as Node prints them (`    at fn (file:line:col)`). */
export const STACK_LINE = /^\s+at\s/m;
