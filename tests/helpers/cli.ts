import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const BIN = join(ROOT, 'dist', 'services', 'controller', 'bin.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  marker: string;
}

export interface CliRun {
  child: ChildProcess;
  marker: string;
  done: Promise<CliResult>;
}

/** Starts the built CLI with a fresh process marker in its environment (see processes.ts). */
export function startCli(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): CliRun {
  const marker = randomUUID();
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, VMMSIM_TEST_MARKER: marker, VMMSIM_LOG_LEVEL: 'warn', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliResult>((res) => {
    child.on('close', (code, signal) => res({ code, signal, stdout, stderr, marker }));
  });
  return { child, marker, done };
}

export function runCli(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return startCli(args, opts).done;
}

/** A fresh temporary folder for a test's output. */
export function tempDir(prefix = 'vmmsim-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
