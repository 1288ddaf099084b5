/**
 * `npm run soak [-- --minutes N] [--json]`: a mixed load on one process tree for a long time, to
 * show that nothing grows, fails or goes stale. Every supported model runs every workload in turn
 * (the SVA storm on the models with SVA), strict DMA with device DMA on, two VMs with a device
 * behind each of two pSMMUs, the vSMMU layout alternating between cycles. The first cycle is the
 * warm-up (JIT, first allocations); after it, memory (VmRSS) of every process is read after every
 * run, and the highest reading of the first half against that of the second half is its growth. Targets: memory growth under 10% in every process, no error (failed operation or
 * invalidation, error counter, failed run), no stale translation. The exit status is 1 when one
 * is missed.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { addErrorCounts, errorCounts, formatSoakReport, memoryOf, soakReport, type ErrorCount, type SoakFigures } from './soak-report.js';
import { loadProfile } from '../services/cost/profile.js';
import { VmmsimError, asVmmsimError } from '../services/runtime/errors.js';
import { createLogger } from '../services/runtime/logger.js';
import { packageRoot } from '../services/runtime/paths.js';
import { designOf } from '../services/designs/registry.js';
import { MODELS, type ModelName, type Scenario } from '../services/scenario/schema.js';
import { resolveScenario } from '../services/scenario/validate.js';
import { LivenessWatch } from '../services/controller/liveness.js';
import { ProcessTree } from '../services/controller/launcher.js';
import type { RunResult } from '../services/controller/results.js';
import { Session, processSpecs } from '../services/controller/session.js';

const USAGE = `usage: npm run soak [-- options]      (or: npm run bench -- soak [options])

Runs every supported model through every workload in turn on one process tree (2 VMs, 2 pSMMUs,
a device of each VM behind each, strict DMA, device DMA on) until the time is up. Reports each
process's memory (VmRSS, read after every run once the first cycle, the warm-up, is done: the
highest reading of the first half against the highest of the second), the operations, the errors
and the stale translations, and checks the targets: memory growth under 10% in every process, no
error, no stale translation. Exits 1 when a target is missed.

options:
  --minutes N      how long to run (default 10); the warm-up cycle always runs whole first
  --ops N          operations of each run (default 300)
  --dma-rate N     device translations per second per device (default 2000)
  --profile NAME   cost profile (default arm64-kunpeng920)
  --json           print the report as one JSON object on stdout (progress still goes to stderr)
`;

const WORKLOADS = ['dma-map-benchmark', 'packet-stream', 'block', 'static', 'trace-replay', 'sva-unmap-storm'] as const;
type Kind = (typeof WORKLOADS)[number];

/** One run of a cycle. */
interface Step {
  model: ModelName;
  kind: Kind;
}

/** A cycle: every model with every workload it can run. */
export function cycleSteps(): Step[] {
  const steps: Step[] = [];
  for (const model of MODELS) {
    for (const kind of WORKLOADS) {
      if (kind === 'sva-unmap-storm' && !designOf(model).traits.sva) continue;
      steps.push({ model, kind });
    }
  }
  return steps;
}

const TOPOLOGY = { psmmus: 2, vms: 2, devicesPerPsmmu: 2 } as const;

function scenario(step: Step, cycle: number, ops: number, dmaRate: number): Scenario {
  return resolveScenario({
    name: `soak-${cycle}`,
    // A new seed each cycle: the same mix, other addresses and arrival orders.
    seed: cycle + 1,
    model: step.model,
    dma: 'strict',
    topology: { ...TOPOLOGY, vsmmu: cycle % 2 === 0 ? 'single' : 'per-psmmu' },
    device: { dmaRate },
    workload: {
      kind: step.kind,
      threads: 2,
      ops,
      queueDepth: step.kind === 'block' || step.kind === 'static' ? 4 : 1,
      ...(step.kind === 'trace-replay' ? { trace: join(packageRoot(), 'scenarios', 'traces', 'sample.trace'), timeScale: 0 } : {}),
    },
  });
}

/** VmRSS of a process in KiB, from /proc (0 when it is gone). */
export function rssKib(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Running totals of the soak's runs. */
class Totals {
  runs = 0;
  operations = 0;
  failedOps = 0;
  guestCommands = 0;
  guestCommandsFailed = 0;
  staleTranslations = 0;
  staleDuringUnmap = 0;
  translations = 0;
  faults = 0;
  readonly errorCounters: ErrorCount[] = [];

  add(run: RunResult): void {
    this.runs += 1;
    for (const op of run.ops) {
      this.operations += op.count;
      this.failedOps += op.failed;
    }
    this.guestCommands += run.invalidations.guestCommands;
    this.guestCommandsFailed += run.invalidations.guestCommandsFailed;
    this.staleTranslations += run.dma.staleTranslations;
    this.staleDuringUnmap += run.dma.staleDuringUnmap;
    this.translations += run.dma.translations;
    this.faults += run.dma.faults;
    // guestCommandsFailed is counted above from the run's own field.
    addErrorCounts(this.errorCounters, errorCounts(run.counters).filter((e) => e.counter !== 'guestCommandsFailed'));
  }
}

export async function soakBench(argv: string[]): Promise<void> {
  const a = benchArgs('soak', USAGE, argv, {
    minutes: { type: 'string', default: '10' },
    ops: { type: 'string', default: '300' },
    'dma-rate': { type: 'string', default: '2000' },
    profile: { type: 'string', default: 'arm64-kunpeng920' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (!a) return;
  const { values, number } = a;
  const minutes = number('minutes', values.minutes, 0, 7 * 24 * 60, false);
  const ops = number('ops', values.ops, 1, 1e9);
  const dmaRate = number('dma-rate', values['dma-rate'], 0, 1e9, false);
  const profile = loadProfile(values.profile);
  const progress = (line: string): void => {
    process.stderr.write(`soak: ${line}\n`);
  };
  const log = createLogger({ role: 'soak' }, 'warn');
  const steps = cycleSteps();
  const started = Date.now();
  const until = started + minutes * 60_000;

  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-soak-'));
  const ramDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmmsim-soak-ram-'));
  const tree = new ProcessTree({ socketDir, ramDir, transport: 'unix', logLevel: 'warn', startTimeoutMs: 60_000, log });
  // A process that dies or stops answering ends the soak: its run would never finish.
  let failed: (err: VmmsimError) => void = () => undefined;
  const failure = new Promise<never>((_, reject) => {
    failed = reject;
  });
  failure.catch(() => undefined);
  tree.on('exit', (err) => failed(err));
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
    progress('interrupted: finishing the current run, then reporting');
  };
  process.on('SIGINT', onSignal);

  const totals = new Totals();
  const runFailures: string[] = [];
  let warmupRuns = 0;
  // After the warm-up: every process's VmRSS after every run.
  const series = new Map<string, { pid: number; kib: number[] }>();
  const sample = (): void => {
    for (const [name, pid] of [['controller', process.pid] as const, ...tree.processes.map((p) => [p.name, p.pid] as const)]) {
      const s = series.get(name) ?? { pid, kib: [] };
      s.kib.push(rssKib(pid));
      series.set(name, s);
    }
  };
  const rss = (name: string): string => ((series.get(name)?.kib.at(-1) ?? 0) / 1024).toFixed(0);
  let watch: LivenessWatch | undefined;
  let session: Session | undefined;
  try {
    await Promise.race([tree.start(processSpecs(scenario(steps[0] as Step, 0, ops, dmaRate))), failure]);
    session = new Session(tree, log, ramDir);
    watch = new LivenessWatch(tree.processes, { onFailure: failed, local: true });
    watch.start();
    progress(`${tree.processes.length} processes up; ${steps.length} runs a cycle, the first one the warm-up; until ${new Date(until).toISOString()}`);
    for (let cycle = 0; !interrupted; cycle++) {
      for (const step of steps) {
        if (interrupted || (cycle > 0 && Date.now() >= until)) break;
        totals.add(await Promise.race([session.run(scenario(step, cycle, ops, dmaRate), step.model, profile), failure]));
        if (cycle > 0) sample();
      }
      if (cycle === 0) {
        warmupRuns = totals.runs;
        sample();
      }
      const mem = [...series.keys()].map((n) => `${n} ${rss(n)}`).join(', ');
      progress(`cycle ${cycle + 1} done at ${((Date.now() - started) / 60_000).toFixed(1)} min: ${totals.runs} runs, ${totals.operations} ops, ${totals.failedOps} failed; RSS MiB: ${mem}`);
      if (Date.now() >= until) break;
    }
  } catch (err) {
    const e = asVmmsimError(err);
    runFailures.push(`${e.code}: ${e.message}`);
    progress(`stopped: ${e.code}: ${e.message}`);
  } finally {
    process.off('SIGINT', onSignal);
  }
  watch?.stop();
  session?.close();
  await tree.stop().catch(() => tree.killAll());
  rmSync(socketDir, { recursive: true, force: true });
  rmSync(ramDir, { recursive: true, force: true });

  const memorySeries = [...series].map(([name, s]) => ({ name, pid: s.pid, kib: s.kib }));
  const memory = memoryOf(memorySeries);
  const figures: SoakFigures = {
    minutes: (Date.now() - started) / 60_000,
    runs: totals.runs,
    warmupRuns,
    operations: totals.operations,
    failedOps: totals.failedOps,
    guestCommands: totals.guestCommands,
    guestCommandsFailed: totals.guestCommandsFailed,
    errorCounters: totals.errorCounters,
    runFailures,
    staleTranslations: totals.staleTranslations,
    translations: totals.translations,
    faults: totals.faults,
    staleDuringUnmap: totals.staleDuringUnmap,
    memory,
    memorySeries,
  };
  const report = soakReport(figures);
  process.stdout.write(values.json ? `${JSON.stringify(report)}\n` : `${formatSoakReport(report)}\n`);
  if (!report.ok) process.exitCode = 1;
}
