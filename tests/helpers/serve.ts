import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadTokenFile } from '../../services/runtime/transport/auth.js';
import { INSECURE, withToken, type Security } from '../../services/runtime/transport/credentials.js';
import { BIN, ROOT } from './cli.js';

/** A `vmmsim serve` process a test started, from its ready line. */
export interface Served {
  name: string;
  address: string;
  pid: number;
  child: ChildProcess;
  /** The first line it printed on stdout, as printed. */
  line: string;
  /** Resolves when it exits. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

let tokenFile: string | undefined;

/**
 * The token file this test process's served roles and --connect runs share (mode 0600, removed
 * when the test process exits), as an operator gives one secret to a standalone run's parties.
 */
export function testTokenFile(): string {
  if (tokenFile) return tokenFile;
  const path = join(tmpdir(), `vmmsim-test-token-${process.pid}-${randomBytes(4).toString('hex')}`);
  writeFileSync(path, randomBytes(32).toString('hex'), { mode: 0o600, flag: 'wx' });
  process.on('exit', () => rmSync(path, { force: true }));
  tokenFile = path;
  return path;
}

/** What the test proves its name with when it calls the served roles itself (as the controller). */
export function testSecurity(): Security {
  return withToken(INSECURE, loadTokenFile(testTokenFile()));
}

/** A role's authentication arguments: the shared test token, unless the test chose its own (TLS, --insecure). */
function authArgs(args: readonly string[]): string[] {
  return args.some((a) => a === '--tls-ca' || a === '--insecure' || a === '--token-file') ? [] : ['--token-file', testTokenFile()];
}

/**
 * Starts `vmmsim serve ARGS` with the test's process marker and resolves with its ready line
 * (rejects, with its stderr, if it exits first or is not ready within `timeoutMs`).
 */
export function startServe(args: string[], marker: string, timeoutMs = 30_000): Promise<Served> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args, ...authArgs(args)], {
    cwd: ROOT,
    env: { ...process.env, VMMSIM_TEST_MARKER: marker, VMMSIM_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise<Served>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vmmsim serve ${args.join(' ')}: no ready line within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      const nl = stdout.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      const line = stdout.slice(0, nl);
      const ready = JSON.parse(line) as { name: string; address: string; pid: number };
      resolve({ ...ready, child, line, exited, stderr: () => stderr });
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`vmmsim serve ${args.join(' ')} exited (${code ?? signal}) before it was ready; stderr: ${stderr}`));
    });
  });
}

/** The five processes of a one-VM, one-pSMMU scenario, as `vmmsim serve` arguments. */
export const ONE_OF_EACH: readonly string[][] = [['psmmu', '--index', '0'], ['vfio'], ['qemu', '--index', '0'], ['kvm'], ['guest', '--index', '0']];

/** Writes a peers file (YAML) naming each process at its address. */
export function writePeers(path: string, endpoints: readonly { name: string; address: string }[], ramDir?: string): string {
  writeFileSync(path, stringify({ endpoints: endpoints.map((e) => ({ name: e.name, address: e.address })), ...(ramDir ? { ramDir } : {}) }));
  return path;
}

/** SIGTERMs each process still running and waits for all of them to exit; returns how each ended. */
export async function stopServed(all: readonly Served[], graceMs = 5000): Promise<{ name: string; code: number | null; signal: NodeJS.Signals | null }[]> {
  for (const s of all) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM');
  // A process that cannot take SIGTERM (wedged, or stopped) is killed, so no test leaves it behind.
  const timer = setTimeout(() => {
    for (const s of all) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
  }, graceMs);
  try {
    return await Promise.all(all.map(async (s) => ({ name: s.name, ...(await s.exited) })));
  } finally {
    clearTimeout(timer);
  }
}

/** Whether a process exists (signal 0 checks without touching it). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
