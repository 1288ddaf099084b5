/**
 * deploy/netns/run.sh: every role in a network namespace of its own, the controller in the root
 * namespace with --connect, a delay injected on one link. The delayed hop's measured p50 grows by
 * about the delay against a run without it, the other hops do not; and the OS shows no namespace,
 * veth or process left, after a run, a failed run and an interrupted one. Skipped (with the reason
 * in its name) where network namespaces cannot be made: not root, no iproute2, no CAP_SYS_ADMIN.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ResultsDoc } from '../../services/controller/results.js';
import { ROOT } from '../helpers/cli.js';
import { killMarked, waitForNoProcesses } from '../helpers/processes.js';

const SCRIPT = join(ROOT, 'deploy', 'netns', 'run.sh');
const DELAY_MS = 5;

/** Why this machine cannot run the test, or undefined when it can. */
function unsupported(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  if (spawnSync('ip', ['-V']).status !== 0) return 'needs iproute2 (ip)';
  const probe = `vmmsim-probe-${randomBytes(4).toString('hex')}`;
  if (spawnSync('ip', ['netns', 'add', probe]).status !== 0) return 'cannot create network namespaces (CAP_SYS_ADMIN)';
  spawnSync('ip', ['netns', 'del', probe]);
  return undefined;
}

const why = unsupported();

interface ScriptRun {
  id: string;
  marker: string;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the script with a fresh id and process marker; `onStderr` sees its stderr as it comes. */
function runScript(args: string[], vmmsim: string[], onStderr?: (text: string, kill: (sig: NodeJS.Signals) => void) => void): Promise<ScriptRun> {
  const id = randomBytes(4).toString('hex');
  const marker = randomUUID();
  const child = spawn('bash', [SCRIPT, '--id', id, ...args, '--', ...vmmsim], {
    cwd: ROOT,
    env: { ...process.env, VMMSIM_TEST_MARKER: marker, VMMSIM_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  markers.push(marker);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    onStderr?.(stderr, (sig) => child.kill(sig));
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ id, marker, code, stdout, stderr })));
}

/** What the OS still holds of a run: its namespaces, its root veth, its processes. */
async function leftovers(run: ScriptRun): Promise<{ namespaces: string[]; links: string[]; processes: string[] }> {
  const namespaces = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith(`vmmsim-${run.id}-`));
  const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes(`vmr-${run.id}`));
  const processes = (await waitForNoProcesses(run.marker, 5000)).map((p) => p.cmdline);
  return { namespaces, links, processes };
}

function readResults(dir: string): ResultsDoc {
  return JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as ResultsDoc;
}

function hopP50(doc: ResultsDoc): Map<string, number> {
  const run = doc.runs[0];
  if (!run) throw new Error('no run');
  return new Map(run.hops.map((h) => [`${h.from}->${h.to}`, h.measuredUs.p50]));
}

const markers: string[] = [];
const folders: string[] = [];

function folder(): string {
  const d = mkdtempSync(join(tmpdir(), 'vmmsim-netns-'));
  folders.push(d);
  return d;
}

describe.skipIf(why !== undefined)(`network namespaces per role (deploy/netns/run.sh)${why ? ` [skipped: ${why}]` : ''}`, () => {
  afterEach(() => {
    for (const m of markers.splice(0)) killMarked(m);
  });
  afterAll(() => {
    for (const d of folders.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it(`shows a ${DELAY_MS} ms delay on vfio -> psmmu in that hop's p50 alone, and leaves nothing behind`, async () => {
    const scenario = ['run', '--model', 'nested-smmuv3', '--ops', '200'];
    const baseOut = folder();
    const base = await runScript([], [...scenario, '--out', baseOut]);
    expect(base.code, base.stderr).toBe(0);
    expect(await leftovers(base)).toEqual({ namespaces: [], links: [], processes: [] });

    const delayedOut = folder();
    const delayed = await runScript(['--delay', `vfio-psmmu=${DELAY_MS}ms`], [...scenario, '--out', delayedOut]);
    expect(delayed.code, delayed.stderr).toBe(0);
    expect(await leftovers(delayed)).toEqual({ namespaces: [], links: [], processes: [] });

    // The roles ran in their namespaces, each on its own address of one 10.x.y.0/24.
    const doc = readResults(delayedOut);
    expect(doc.status).toBe('ok');
    const ready = [...delayed.stderr.matchAll(/ready: (\{.*\}) in vmmsim-[0-9a-f]+-(\S+)/g)].map((m) => ({ ...(JSON.parse(m[1] as string) as { name: string; address: string; pid: number }), ns: m[2] }));
    expect(ready.map((r) => r.name).sort()).toEqual(['guest-0', 'kvm', 'psmmu-0', 'qemu-0', 'vfio']);
    for (const r of ready) expect(r.ns).toBe(r.name);
    expect(new Set(ready.map((r) => /^10\.\d+\.\d+\./.exec(r.address)?.[0])).size).toBe(1);
    expect(new Set(ready.map((r) => r.address)).size).toBe(5);
    expect(doc.runs[0]?.processes.map((p) => p.pid).sort()).toEqual(ready.map((r) => r.pid).sort());

    const before = hopP50(readResults(baseOut));
    const after = hopP50(doc);
    const delayUs = DELAY_MS * 1000;
    const grown = (hop: string): number => (after.get(hop) ?? NaN) - (before.get(hop) ?? NaN);
    expect(before.size).toBeGreaterThanOrEqual(8);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    // The delayed hop: about the delay more (never less: the delay holds every byte at least that long).
    expect(grown('vfio->psmmu-0')).toBeGreaterThan(0.8 * delayUs);
    expect(grown('vfio->psmmu-0')).toBeLessThan(1.6 * delayUs);
    // Every other hop, including the way back from psmmu-0: far less than the delay.
    for (const hop of before.keys()) {
      if (hop === 'vfio->psmmu-0') continue;
      expect(Math.abs(grown(hop)), hop).toBeLessThan(0.3 * delayUs);
    }
  });

  it('tears everything down when the run fails', async () => {
    // Two pSMMUs wanted, one started: the controller refuses the file (exit 2).
    const r = await runScript([], ['run', '--set', 'topology.psmmus=2', '--ops', '20', '--out', folder()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('does not name psmmu-1');
    expect(await leftovers(r)).toEqual({ namespaces: [], links: [], processes: [] });
  });

  it('tears everything down on SIGINT during a run, the controller exiting as interrupted', async () => {
    let sent = false;
    const out = folder();
    const r = await runScript([], ['run', '--duration', '60', '--out', out], (text, kill) => {
      if (!sent && text.includes('vmmsim: running')) {
        sent = true;
        kill('SIGINT');
      }
    });
    expect(sent).toBe(true);
    expect(r.code).toBe(130);
    expect(readResults(out).status).toBe('interrupted');
    expect(await leftovers(r)).toEqual({ namespaces: [], links: [], processes: [] });
  });
});
