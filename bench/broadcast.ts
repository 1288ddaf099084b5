/**
 * `npm run bench -- broadcast [--json]`: what a single vSMMU's broadcast costs a VM as its devices
 * spread over more physical SMMUs. For 1, 2, 4 and 8 pSMMUs (one device behind each, one VM), the
 * real process tree runs nested-smmuv3 strict with enough vCPUs to saturate the invalidation path,
 * once with one vSMMU for the VM (each invalidation goes to every pSMMU, one ioctl each) and once
 * with one vSMMU per pSMMU (each reaches only its device's pSMMU). Reported per point: guest
 * invalidations per second,
 *
 *   measured  run.invalidations.guestCommands / run.elapsedSec (real processes, this machine);
 *   modeled   guestCommands / run.modeledElapsedNs (the cost profile, with the queueing model);
 *
 * and each against the baseline measured in the same run: one pSMMU (where the two modes are the
 * same topology). Devices do no DMA, so nothing but invalidations competes for the cores. Fresh
 * processes take thousands of operations to reach speed (JIT), so each tree first runs an
 * unreported warm-up; then the points take turns over `repeat` rounds and each reports its median.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { loadProfile } from '../services/cost/profile.js';
import { createLogger, type Logger } from '../services/runtime/logger.js';
import type { Scenario } from '../services/scenario/schema.js';
import { resolveScenario } from '../services/scenario/validate.js';
import { ProcessTree } from '../services/controller/launcher.js';
import type { RunResult } from '../services/controller/results.js';
import { Session, processSpecs } from '../services/controller/session.js';
import { MODEL } from '../services/designs/names.js';

const USAGE = `usage: npm run bench -- broadcast [options]

Guest invalidations per second at saturation under nested-smmuv3 (strict, one VM, one device per
pSMMU), with a single vSMMU broadcasting to every pSMMU against one vSMMU per pSMMU, measured on
this machine and modeled by the cost profile. Baseline: one pSMMU, in the same run.

options:
  --psmmus LIST    pSMMU counts, comma separated (default 1,2,4,8; the first is the baseline)
  --ops N          map+unmap iterations per run, shared by the threads (default 1500)
  --warmup N       iterations of an unreported run first on each process tree (default 6000)
  --repeat N       measured rounds, every point once a round; each reports its median (default 3)
  --threads N      guest vCPUs issuing them (default 4)
  --profile NAME   cost profile for the modeled figures (default arm64-kunpeng920)
  --json           print one JSON object on stdout (progress still goes to stderr)
`;

const MODES = ['single', 'per-psmmu'] as const;
type Mode = (typeof MODES)[number];

interface Point {
  psmmus: number;
  vsmmu: Mode;
  guestCommands: number;
  /** Commands the pSMMUs received per guest invalidation. */
  fanout: number;
  elapsedSec: number;
  measuredPerSec: number;
  modeledPerSec: number;
  /** Against the baseline point (one pSMMU) of the same run. */
  measuredVsBaseline: number;
  modeledVsBaseline: number;
  /** Per strict unmap: the transitions it paid and its modeled mean latency. */
  unmap: { ioctl: number; hw: number; modeledMeanNs: number };
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function scenario(psmmus: number, vsmmu: Mode, ops: number, threads: number): Scenario {
  return resolveScenario({
    name: `broadcast-${psmmus}-${vsmmu}`,
    dma: 'strict',
    topology: { psmmus, vms: 1, devicesPerPsmmu: 1, vsmmu },
    // No device DMA: the cores go to the invalidation path alone.
    device: { dmaRate: 0 },
    workload: { kind: 'dma-map-benchmark', ops, threads },
  });
}

function point(run: RunResult, psmmus: number, vsmmu: Mode): Omit<Point, 'measuredVsBaseline' | 'modeledVsBaseline'> {
  const n = run.invalidations.guestCommands;
  const unmap = run.ops.find((o) => o.op === 'unmap');
  return {
    psmmus,
    vsmmu,
    guestCommands: n,
    fanout: run.invalidations.fanout,
    elapsedSec: run.elapsedSec,
    measuredPerSec: run.elapsedSec > 0 ? Math.round(n / run.elapsedSec) : 0,
    modeledPerSec: run.modeledElapsedNs > 0 ? Math.round(n / (run.modeledElapsedNs / 1e9)) : 0,
    unmap: { ioctl: unmap?.transitions.ioctl ?? 0, hw: unmap?.transitions.hw ?? 0, modeledMeanNs: round(unmap?.modeledNs.mean ?? 0, 1) },
  };
}

interface Tree {
  psmmus: number;
  session: Session;
  close(): Promise<void>;
}

/** A process tree for one VM behind `psmmus` pSMMUs, with its controller session. */
async function startTree(psmmus: number, ops: number, threads: number, log: Logger): Promise<Tree> {
  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-bench-'));
  const ramDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmmsim-bench-ram-'));
  const tree = new ProcessTree({ socketDir, transport: 'unix', logLevel: 'warn', startTimeoutMs: 60_000, log });
  const cleanup = async (): Promise<void> => {
    await tree.stop().catch(() => tree.killAll());
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
  };
  try {
    await tree.start(processSpecs(scenario(psmmus, 'single', ops, threads)));
  } catch (err) {
    await cleanup();
    throw err;
  }
  const session = new Session(tree, log, ramDir);
  return {
    psmmus,
    session,
    close: async () => {
      session.close();
      await cleanup();
    },
  };
}

export async function broadcastBench(argv: string[]): Promise<void> {
  const a = benchArgs('broadcast', USAGE, argv, {
    psmmus: { type: 'string', default: '1,2,4,8' },
    ops: { type: 'string', default: '1500' },
    warmup: { type: 'string', default: '6000' },
    repeat: { type: 'string', default: '3' },
    threads: { type: 'string', default: '4' },
    profile: { type: 'string', default: 'arm64-kunpeng920' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (!a) return;
  const { values, number } = a;
  const counts = values.psmmus.split(',').map((p) => number('psmmus', p.trim(), 1, 64));
  const ops = number('ops', values.ops, 1, 1e9);
  const warmup = number('warmup', values.warmup, 1, 1e9);
  const repeat = number('repeat', values.repeat, 1, 100);
  const threads = number('threads', values.threads, 1, 256);
  const profile = loadProfile(values.profile);
  const progress = (line: string): void => {
    process.stderr.write(`broadcast: ${line}\n`);
  };
  const log = createLogger({ role: 'bench' }, 'warn');
  const started = Date.now();
  const trees: Tree[] = [];
  const runs = new Map<string, ReturnType<typeof point>[]>();
  try {
    // One process tree per pSMMU count, all kept up so the measured runs can take turns.
    for (const psmmus of counts) {
      const tree = await startTree(psmmus, ops, threads, log);
      trees.push(tree);
      // Fresh processes take some thousands of operations to reach speed (JIT): an unreported run
      // first, so every tree starts its measured runs equally warm.
      await tree.session.run(scenario(psmmus, 'per-psmmu', warmup, threads), MODEL.nestedSmmuv3, profile);
      progress(`${psmmus} pSMMU(s): started and warmed up`);
    }
    // Interleaved rounds: machine noise falls on every point alike, and each reports its median.
    for (let round = 0; round < repeat; round++) {
      for (const tree of trees) {
        // With one pSMMU the two modes are one topology: it runs once.
        for (const vsmmu of tree.psmmus === 1 ? (['single'] as const) : MODES) {
          const run = await tree.session.run(scenario(tree.psmmus, vsmmu, ops, threads), MODEL.nestedSmmuv3, profile);
          const key = `${tree.psmmus}/${vsmmu}`;
          runs.set(key, [...(runs.get(key) ?? []), point(run, tree.psmmus, vsmmu)]);
        }
      }
      progress(`round ${round + 1} of ${repeat} done`);
    }
  } finally {
    for (const tree of trees) await tree.close();
  }
  const raw: Omit<Point, 'measuredVsBaseline' | 'modeledVsBaseline'>[] = [];
  for (const psmmus of counts) {
    for (const vsmmu of MODES) {
      const all = runs.get(`${psmmus}/${psmmus === 1 ? 'single' : vsmmu}`) ?? [];
      const sorted = [...all].sort((x, y) => x.measuredPerSec - y.measuredPerSec);
      const median = sorted[Math.floor((sorted.length - 1) / 2)];
      if (median) raw.push({ ...median, vsmmu });
    }
  }
  const base = raw.find((p) => p.psmmus === counts[0]);
  const points: Point[] = raw.map((p) => ({
    ...p,
    measuredVsBaseline: base && base.measuredPerSec > 0 ? round(p.measuredPerSec / base.measuredPerSec) : 0,
    modeledVsBaseline: base && base.modeledPerSec > 0 ? round(p.modeledPerSec / base.modeledPerSec) : 0,
  }));
  const result = {
    bench: 'broadcast',
    model: MODEL.nestedSmmuv3,
    dma: 'strict',
    profile: profile.name,
    ops,
    warmup,
    repeat,
    threads,
    baseline: { psmmus: counts[0], measuredPerSec: base?.measuredPerSec ?? 0, modeledPerSec: base?.modeledPerSec ?? 0 },
    points,
    wallSec: round((Date.now() - started) / 1000, 1),
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  process.stdout.write(`broadcast bench: nested-smmuv3 strict, 1 VM, ${threads} vCPUs, ${ops} map+unmap per run (median of ${repeat} interleaved rounds, after ${warmup} to warm up), one device per pSMMU (${result.wallSec} s)\n`);
  process.stdout.write('guest invalidations per second; "x" = against one pSMMU, measured in the same run\n\n');
  const rows = [['pSMMUs', 'vSMMU', 'fanout', 'ioctl/unmap', 'measured/s', 'x', 'modeled/s', 'x', 'unmap modeled us']];
  for (const p of points) {
    rows.push([String(p.psmmus), p.vsmmu, String(p.fanout), String(p.unmap.ioctl), String(p.measuredPerSec), p.measuredVsBaseline.toFixed(2), String(p.modeledPerSec), p.modeledVsBaseline.toFixed(2), (p.unmap.modeledMeanNs / 1000).toFixed(2)]);
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  for (const r of rows) process.stdout.write(`  ${r.map((c, i) => (i === 1 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ')}\n`);
}
