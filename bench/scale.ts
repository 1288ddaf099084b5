/**
 * `npm run bench -- scale [--json]`: what the big topology costs to bring up and to hold: 16
 * pSMMUs and 4 VMs on one host (26 role processes: 16 psmmu, vfio, 4 qemu, kvm, 4 guests; one
 * device behind each pSMMU, dealt to the VMs in turn), as tests/integration/scale.test.ts runs it.
 *
 *   readySec          from the first spawn until every process reported ready
 *   rssMbPerRoleMax   the largest VmRSS of a role process after a short run (MiB)
 *   rssMbTotal        the role processes' VmRSS summed after that run (MiB)
 *   opsPerSec         operations per second of that run (nested-smmuv3 strict, 4 vCPUs per VM)
 *
 * Targets on a 2-core machine: ready in at most 10 s, at most 70 MB per role process.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { loadProfile } from '../services/cost/profile.js';
import { createLogger } from '../services/runtime/logger.js';
import { resolveScenario } from '../services/scenario/validate.js';
import { ProcessTree } from '../services/controller/launcher.js';
import { Session, processSpecs } from '../services/controller/session.js';
import { median } from '../services/controller/measured.js';
import { MODEL } from '../services/designs/names.js';

const USAGE = `usage: npm run bench -- scale [options]

Starts 16 pSMMU, 4 VM topology (26 role processes), reports the time until all are ready, the
role processes' memory after a short nested-smmuv3 run, and that run's operations per second.
Targets on 2 cores: ready in at most ${10} s, at most ${70} MB RSS per role process.

options:
  --ops N        map+unmap iterations per VM in the short run (default 400, over 4 vCPUs)
  --repeat N     start the tree this many times, one after another (default 1); figures are medians
  --node-arg A   an option for node in every role process (repeatable), to try V8 settings
  --json         print one JSON object on stdout (progress still goes to stderr)
  -h, --help     this text
`;

const TARGET_READY_SEC = 10;
const TARGET_RSS_MB = 70;

interface Sample {
  readySec: number;
  rssMbAfterReady: Record<string, number>;
  rssMbAfterRun: Record<string, number>;
  /** Peak RSS of each process (VmHWM) at the end. */
  peakMb: Record<string, number>;
  /** After the run: private memory (RssAnon), and the proportional share of every page (Pss: the node binary's pages shared out). */
  anonMb: Record<string, number>;
  pssMb: Record<string, number>;
  opsPerSec: number;
}

function status(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'Pss'): number {
  try {
    const file = field === 'Pss' ? `/proc/${pid}/smaps_rollup` : `/proc/${pid}/status`;
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(file, 'latin1'));
    return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : NaN;
  } catch {
    return NaN;
  }
}

const r2 = (x: number): number => Math.round(x * 100) / 100;

async function once(ops: number, nodeArgs: string[], progress: (s: string) => void): Promise<Sample> {
  const scenario = resolveScenario({
    name: 'scale-bench',
    dma: 'strict',
    topology: { psmmus: 16, vms: 4, devicesPerPsmmu: 1 },
    workload: { kind: 'dma-map-benchmark', ops, threads: 4 },
  });
  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-bench-'));
  const ramDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmmsim-bench-ram-'));
  const log = createLogger({ bench: 'scale' }, 'warn');
  const tree = new ProcessTree({ socketDir, ramDir, transport: 'unix', logLevel: 'warn', startTimeoutMs: 120_000, log, nodeArgs });
  let session: Session | undefined;
  try {
    const t0 = performance.now();
    await tree.start(processSpecs(scenario));
    const readySec = r2((performance.now() - t0) / 1000);
    const rss = (field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'Pss'): Record<string, number> => Object.fromEntries(tree.processes.map((p) => [p.name, status(p.pid, field)]));
    const rssMbAfterReady = rss('VmRSS');
    progress(`${tree.processes.length} processes ready in ${readySec} s; a short run (${ops} iterations per VM)`);
    session = new Session(tree, log, ramDir);
    const run = await session.run(scenario, MODEL.nestedSmmuv3, loadProfile('arm64-kunpeng920'));
    return { readySec, rssMbAfterReady, rssMbAfterRun: rss('VmRSS'), peakMb: rss('VmHWM'), anonMb: rss('RssAnon'), pssMb: rss('Pss'), opsPerSec: run.throughput.opsPerSecMeasured };
  } finally {
    session?.close();
    await tree.stop().catch(() => tree.killAll());
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
  }
}

/** The largest value and its process. */
function largest(m: Record<string, number>): [string, number] {
  return Object.entries(m).reduce<[string, number]>((a, b) => (b[1] > a[1] ? b : a), ['-', -Infinity]);
}

const sum = (m: Record<string, number>): number => r2(Object.values(m).reduce((a, b) => a + b, 0));

export async function scaleBench(argv: string[]): Promise<void> {
  const a = benchArgs('scale', USAGE, argv, {
    ops: { type: 'string', default: '400' },
    repeat: { type: 'string', default: '1' },
    'node-arg': { type: 'string', multiple: true },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (!a) return;
  const ops = a.number('ops', a.values.ops, 4);
  const repeat = a.number('repeat', a.values.repeat, 1, 20);
  const progress = (line: string): void => {
    process.stderr.write(`bench scale: ${line}\n`);
  };
  const load0 = loadavg().map(r2);
  const samples: Sample[] = [];
  for (let i = 0; i < repeat; i++) {
    progress(`starting the 16-pSMMU, 4-VM tree (${i + 1}/${repeat})`);
    samples.push(await once(ops, a.values['node-arg'] ?? [], progress));
  }
  const readySec = median(samples.map((s) => s.readySec));
  const maxAfterRun = samples.map((s) => largest(s.rssMbAfterRun));
  const rssMbPerRoleMax = median(maxAfterRun.map((x) => x[1]));
  const rssMbTotal = median(samples.map((s) => sum(s.rssMbAfterRun)));
  const opsPerSec = median(samples.map((s) => s.opsPerSec));
  const last = samples[samples.length - 1] as Sample;
  const byRole = (m: Record<string, number>): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [name, v] of Object.entries(m)) {
      const role = name.replace(/-\d+$/, '');
      out[role] = Math.max(out[role] ?? 0, v);
    }
    return out;
  };
  const result = {
    bench: 'scale',
    readySec: r2(readySec),
    rssMbPerRoleMax: r2(rssMbPerRoleMax),
    rssMbTotal: r2(rssMbTotal),
    opsPerSec: r2(opsPerSec),
    // VmRSS counts the node binary's shared pages in every process: what the tree really holds.
    anonMbPerRoleMax: r2(median(samples.map((s) => largest(s.anonMb)[1]))),
    pssMbTotal: r2(median(samples.map((s) => sum(s.pssMb)))),
    target: { readySec: TARGET_READY_SEC, rssMbPerRoleMax: TARGET_RSS_MB },
    pass: readySec <= TARGET_READY_SEC && rssMbPerRoleMax <= TARGET_RSS_MB,
    detail: {
      readySecEach: samples.map((s) => s.readySec),
      largestAfterRun: maxAfterRun.map(([name, mb]) => ({ name, mb })),
      perRoleMaxMb: { afterReady: byRole(last.rssMbAfterReady), afterRun: byRole(last.rssMbAfterRun), peak: byRole(last.peakMb) },
      processes: last.rssMbAfterRun,
    },
    config: { nodeArgs: a.values['node-arg'] ?? [], psmmus: 16, vms: 4, processes: Object.keys(last.rssMbAfterRun).length, opsPerVm: ops, threadsPerVm: 4, repeat, node: process.version, cpus: cpus().length, loadAvg: load0 },
  };
  if (a.values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const roles = Object.keys(result.detail.perRoleMaxMb.afterRun);
  const out = [
    `scale bench: 16 pSMMUs, 4 VMs (${result.config.processes} role processes), ${repeat} start${repeat === 1 ? '' : 's'}, node ${process.version}, ${cpus().length} cpus, load average ${load0.join(' ')}`,
    '',
    `  readySec          ${result.readySec.toFixed(2)}   (target <= ${TARGET_READY_SEC}: ${readySec <= TARGET_READY_SEC ? 'met' : 'MISSED'}${repeat > 1 ? `; each: ${result.detail.readySecEach.join(' ')}` : ''})`,
    `  rssMbPerRoleMax   ${result.rssMbPerRoleMax.toFixed(1)}   (target <= ${TARGET_RSS_MB}: ${rssMbPerRoleMax <= TARGET_RSS_MB ? 'met' : 'MISSED'}; ${maxAfterRun.map(([n, v]) => `${n} ${v}`).join(', ')})`,
    `  rssMbTotal        ${result.rssMbTotal.toFixed(1)}`,
    `  opsPerSec         ${result.opsPerSec.toFixed(0)}`,
    `  (private memory per role at most ${result.anonMbPerRoleMax.toFixed(1)} MiB; the tree's proportional set size ${result.pssMbTotal.toFixed(0)} MiB: VmRSS counts the node binary's shared pages in every process)`,
    '',
    'largest RSS per role (MiB): after ready / after the run / peak (VmHWM)',
    ...roles.map((r) => `  ${r.padEnd(8)} ${String(result.detail.perRoleMaxMb.afterReady[r]).padStart(7)} ${String(result.detail.perRoleMaxMb.afterRun[r]).padStart(7)} ${String(result.detail.perRoleMaxMb.peak[r]).padStart(7)}`),
  ];
  process.stdout.write(`${out.join('\n')}\n`);
}
