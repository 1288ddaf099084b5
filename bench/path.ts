/**
 * `npm run bench -- path [--json]`: what vmmsim's real path costs over the transport under it, in
 * one process tree and one run. The tree is one VM under nested-smmuv3, strict, no device DMA, one
 * vCPU: each strict unmap crosses 12 one-way hops: its invalidation's 8 (guest -> kvm -> qemu -> vfio
 * -> psmmu and back), then the trapped CMDQ_CONS read after its CMD_SYNC (guest -> kvm -> qemu and
 * back: QEMU's vSMMU advertises no MSI and no SEV). The count is read from the run, not assumed.
 * After each operation the guest times one round trip of a bare grpc-js bidi stream to kvm (raw
 * bytes, grpc-js's framing, no codec and no vmmsim code: transport/floor.ts), outside the
 * operation's time, so the floor is taken between two of the path's own processes in the same
 * machine state as the path. Reported:
 *
 *   pathMeasuredP50Us   the strict unmap's measured p50 (median of the rounds' p50s)
 *   floorOneWayP50Us    half the bare round trip's p50 (median of the rounds')
 *   hops                one-way hops per unmap (12, counted from the run)
 *   pathOverheadRatio   pathMeasuredP50Us / (hops x floorOneWayP50Us); target <= 1.3
 *
 * and beside them the host's floor measured alone at the start (two idle processes: a raw Unix
 * socket and the same bare grpc-js stream), each hop's p50, and the machine's load.
 *
 * Each round also times a relay: this bench sends ECHO `relay:qemu-0,vfio,psmmu-0` to kvm, which
 * each role passes on through its runtime and links (the same context and calls a model uses) and
 * answers back: the invalidation's 8 hops through as many processes with no model in them, against a bare
 * grpc-js round trip between this bench and kvm timed between the relays. The relay's ratio is what
 * vmmsim's runtime and transport cost over grpc-js; the path's, that and the models' work. And a bare
 * relay: four small processes passing raw bytes on over bare grpc-js streams (floor-main.ts), timed
 * the same way against a bare round trip to the first of them: what crossing this many processes
 * costs on this machine with nothing of vmmsim in it.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { benchArgs } from './args.js';
import { loadProfile } from '../services/cost/profile.js';
import { VmmsimError } from '../services/runtime/errors.js';
import { createLogger } from '../services/runtime/logger.js';
import { resolveScenario } from '../services/scenario/validate.js';
import type { Scenario } from '../services/scenario/schema.js';
import { ProcessTree } from '../services/controller/launcher.js';
import { Session, processSpecs, type Trial } from '../services/controller/session.js';
import { measureHostFloor, startBareRelay } from '../services/controller/host-floor.js';
import { combineMachine } from '../services/controller/machine.js';
import { bootstrapMedianCi, median } from '../services/controller/measured.js';
import { machineNotes } from '../services/controller/measured-notes.js';
import { checkPinnable, parsePin, placementOf } from '../services/controller/placement.js';
import { MODEL } from '../services/designs/names.js';
import { nowNs } from '../services/runtime/clock.js';
import { RELAY_PREFIX } from '../services/runtime/role-runtime.js';
import { INSECURE, withToken } from '../services/runtime/transport/credentials.js';
import { FloorProbe } from '../services/runtime/transport/floor.js';
import { LinkClient } from '../services/runtime/transport/link.js';

const USAGE = `usage: npm run bench -- path [options]

The nested-smmuv3 strict unmap path (12 one-way hops through guest, kvm, qemu, vfio and psmmu
processes: the invalidation's 8 and the trapped CMDQ_CONS read's 4) against a bare grpc-js bidi-stream hop between two of the same processes (guest and
kvm), timed between the path's operations in the same run; ratio = path p50 / (hops x floor p50),
target <= 1.3.

options:
  --rounds N       measured rounds, one run each (default 6); figures are medians of the rounds
  --ops N          map+unmap iterations per round (default 1500)
  --warmup N       iterations of an unreported run first, then N/2 in a second (default 3000):
                   fresh processes need thousands of operations before the JIT has compiled the
                   path, and a run's first operations deoptimize some of what the last run left
  --pin SPEC       auto|CPU[,CPU..]: every process of the path and the floor on the first CPU
                   (taskset); default unpinned
  --no-relay       skip the relay (the same hops through the runtime and links, no model)
  --cpu-prof DIR   run the role processes with node --cpu-prof, profiles written to DIR
  --node-arg ARG   an option for node in every role process (repeatable), e.g. --perf-basic-prof
                   for \`perf record\`
  --check          exit 1 when the ratio misses the target
  --json           print one JSON object on stdout (progress still goes to stderr)
  -h, --help       this text
`;

const TARGET_RATIO = 1.3;

interface Options {
  rounds: number;
  ops: number;
  warmup: number;
  pin: string | undefined;
  cpuProf: string | undefined;
  nodeArgs: string[];
  relay: boolean;
  check: boolean;
  json: boolean;
}

function parseOptions(argv: string[]): Options | undefined {
  const a = benchArgs('path', USAGE, argv, {
    rounds: { type: 'string', default: '6' },
    ops: { type: 'string', default: '1500' },
    warmup: { type: 'string', default: '3000' },
    pin: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'node-arg': { type: 'string', multiple: true },
    'no-relay': { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (!a) return undefined;
  const { values, number } = a;
  return {
    rounds: number('rounds', values.rounds, 1, 1000),
    ops: number('ops', values.ops, 10),
    warmup: number('warmup', values.warmup, 0),
    pin: values.pin,
    cpuProf: values['cpu-prof'],
    nodeArgs: values['node-arg'] ?? [],
    relay: !values['no-relay'],
    check: values.check,
    json: values.json,
  };
}

function scenario(ops: number): Scenario {
  return resolveScenario({
    name: 'path-bench',
    model: MODEL.nestedSmmuv3,
    dma: 'strict',
    topology: { psmmus: 1, vms: 1, devicesPerPsmmu: 1 },
    // The path alone: no device DMA competes for the cores.
    device: { dmaRate: 0 },
    workload: { kind: 'dma-map-benchmark', threads: 1, ops, granulePages: 1 },
  });
}

const r2 = (x: number): number => Math.round(x * 100) / 100;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

interface Round {
  /** CPU time of every process of the run (roles and this bench) per map+unmap iteration, in us. */
  cpuUsPerIteration: number;
  pathP50Us: number;
  floorOneWayP50Us: number;
  hops: number;
  ratio: number;
  hopP50Us: Record<string, number>;
  /** How many times an unmap crosses each hop (the CONS read crosses guest -> kvm -> qemu a second time). */
  hopPerUnmap: Record<string, number>;
  /** An unmap's time in each process and in its crossings, p50 per operation (measured residence). */
  residenceP50Us: Record<string, number>;
  /** Unmaps of the round MSER-5 found still warming up (settling.ts): 0 when the warm-up runs did their job. */
  settledAfterOps: number;
}

/** The relay: this bench as the first process of a path with no model in it (see the top of the file). */
interface Relay {
  run(n: number): Promise<{ relayP50Us: number; floorOneWayP50Us: number }>;
  close(): void;
}

async function startRelay(kvmAddress: string, security: ReturnType<typeof withToken>): Promise<Relay> {
  const link = new LinkClient({ selfId: 0, selfName: 'bench', peerId: 0, peerName: 'kvm' }, kvmAddress, 10_000, security);
  await link.open();
  const floor = await FloorProbe.open('bench', 'kvm', kvmAddress, security);
  const payload = Buffer.from(`${RELAY_PREFIX}qemu-0,vfio,psmmu-0`);
  let opId = 0;
  const p50 = (xs: number[]): number => median(xs);
  return {
    run: async (n) => {
      const relays: number[] = [];
      const floors: number[] = [];
      for (let i = 0; i < n; i++) {
        opId = (opId + 1) >>> 0;
        const t0 = nowNs();
        const env = await link.request({ kind: 'ECHO', opId, payload, modeledNs: 0 });
        relays.push((nowNs() - t0) / 1000);
        if (env.status !== 0 || env.hops.length !== 8) throw new VmmsimError('E_RUN', `the relay came back with status ${env.status} and ${env.hops.length} hops, not 8`);
        floors.push((await floor.roundTrip()) / 2000);
      }
      return { relayP50Us: r2(p50(relays)), floorOneWayP50Us: r2(p50(floors)) };
    },
    close: () => {
      floor.close();
      link.close();
    },
  };
}

function roundOf(t: Trial, iterations: number): Round {
  const unmap = t.figures.ops.find((o) => o.op === 'unmap');
  const count = t.result.ops.find((o) => o.op === 'unmap')?.count ?? 0;
  const crossings = t.result.hops.reduce((n, h) => n + h.count, 0);
  const hops = count > 0 ? Math.round(crossings / count) : 0;
  const floor = t.figures.inPathFloorUs ?? NaN;
  const path = unmap?.p50Us ?? NaN;
  return {
    cpuUsPerIteration: r2(((t.machine.ownCores ?? NaN) * t.machine.seconds * 1e6) / iterations),
    pathP50Us: path,
    floorOneWayP50Us: floor,
    hops,
    ratio: r3(path / (hops * floor)),
    hopP50Us: Object.fromEntries(t.figures.hops.map((h) => [`${h.from} -> ${h.to}`, h.p50Us])),
    hopPerUnmap: Object.fromEntries(t.result.hops.map((h) => [`${h.from} -> ${h.to}`, count > 0 ? r2(h.count / count) : 0])),
    residenceP50Us: Object.fromEntries(t.figures.residence.filter((x) => x.op === 'unmap').map((x) => [x.process, x.p50Us])),
    settledAfterOps: t.figures.ops.find((o) => o.op === 'unmap')?.settling.afterOps ?? 0,
  };
}

export async function pathBench(argv: string[]): Promise<void> {
  const opts = parseOptions(argv);
  if (!opts) return;
  const progress = (line: string): void => {
    process.stderr.write(`bench path: ${line}\n`);
  };
  const s = scenario(opts.ops);
  const specs = processSpecs(s);
  let placement;
  if (opts.pin !== undefined) {
    checkPinnable();
    const list = parsePin(opts.pin);
    // The bench's one VM: everything on the first CPU of the list.
    placement = placementOf(specs, list.slice(0, 1), opts.pin);
  }
  const cpuOf = placement ? (name: string): number | undefined => placement.cpus[name] : undefined;
  const nodeArgs = [...(opts.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${resolve(opts.cpuProf)}`] : []), ...opts.nodeArgs];
  if (opts.cpuProf) mkdirSync(resolve(opts.cpuProf), { recursive: true });
  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-bench-'));
  const ramDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmmsim-bench-ram-'));
  const log = createLogger({ bench: 'path' }, 'warn');
  const tree = new ProcessTree({ socketDir, ramDir, transport: 'unix', logLevel: 'warn', startTimeoutMs: 60_000, log, nodeArgs, cpuOf });
  const profile = loadProfile('arm64-kunpeng920');
  const load0 = loadavg();
  let session: Session | undefined;
  const onSignal = (): void => {
    tree.killAll();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    progress('measuring the host floor alone (raw Unix socket, bare grpc-js)');
    const hostFloor = await measureHostFloor({ dir: socketDir, cpu: cpuOf?.('floor') });
    progress(`starting ${specs.length} processes${placement ? ` pinned (${opts.pin})` : ''}`);
    await tree.start(specs);
    session = new Session(tree, log, ramDir);
    const trialOpts = { floorPeer: 'kvm', warmupOps: 0 };
    if (opts.warmup > 0) {
      // Two runs: a run's first operations deoptimize code the last run's closures and objects were
      // inlined into (each configure builds them anew), and a lone warm-up run left that cost to the
      // first rounds (docs/benchmarks.md, "A run's first operations re-warm the JIT").
      const second = Math.ceil(opts.warmup / 2);
      progress(`warm-up: ${opts.warmup} iterations, then ${second} in a second run`);
      await session.trial(scenario(opts.warmup), MODEL.nestedSmmuv3, profile, trialOpts);
      await session.trial(scenario(second), MODEL.nestedSmmuv3, profile, trialOpts);
    }
    // The relay runs on the links of a configured tree: configure it once more, idle.
    const kvm = tree.processes.find((p) => p.name === 'kvm');
    const rounds: Round[] = [];
    const relays: { relayP50Us: number; floorOneWayP50Us: number; ratio: number }[] = [];
    const bares: { relayP50Us: number; floorOneWayP50Us: number; ratio: number }[] = [];
    const bare = opts.relay ? await startBareRelay(socketDir, 4, cpuOf?.('floor')) : undefined;
    const timeBare = async (n: number): Promise<{ relayP50Us: number; floorOneWayP50Us: number }> => {
      const b = bare as NonNullable<typeof bare>;
      const rs: number[] = [];
      const fs: number[] = [];
      for (let i = 0; i < n; i++) {
        rs.push((await b.relay.roundTrip()) / 1000);
        fs.push((await b.echo.roundTrip()) / 2000);
      }
      return { relayP50Us: r2(median(rs)), floorOneWayP50Us: r2(median(fs)) };
    };
    const machines = [];
    for (let r = 0; r < opts.rounds; r++) {
      const t = await session.trial(s, MODEL.nestedSmmuv3, profile, trialOpts);
      const round = roundOf(t, opts.ops);
      rounds.push(round);
      machines.push(t.machine);
      progress(`round ${r + 1}/${opts.rounds}: path p50 ${round.pathP50Us} us, floor one way ${round.floorOneWayP50Us} us, ${round.hops} hops, ratio ${round.ratio}, CPU ${round.cpuUsPerIteration} us per iteration`);
      if (kvm && opts.relay) {
        await session.configureOnly(s, MODEL.nestedSmmuv3, profile);
        const relay = await startRelay(kvm.address, withToken(INSECURE, tree.token));
        try {
          if (r === 0) await relay.run(Math.min(opts.warmup, 2000));
          const x = await relay.run(opts.ops);
          const ratio = r3(x.relayP50Us / (8 * x.floorOneWayP50Us));
          relays.push({ ...x, ratio });
          progress(`round ${r + 1}/${opts.rounds}: relay (no model) p50 ${x.relayP50Us} us, floor one way ${x.floorOneWayP50Us} us, ratio ${ratio}`);
        } finally {
          relay.close();
          await session.release();
        }
      }
      if (bare) {
        if (r === 0) await timeBare(Math.min(opts.warmup, 2000));
        const x = await timeBare(opts.ops);
        const ratio = r3(x.relayP50Us / (8 * x.floorOneWayP50Us));
        bares.push({ ...x, ratio });
        progress(`round ${r + 1}/${opts.rounds}: bare relay (grpc-js only) p50 ${x.relayP50Us} us, floor one way ${x.floorOneWayP50Us} us, ratio ${ratio}`);
      }
    }
    bare?.close();
    const path = median(rounds.map((x) => x.pathP50Us));
    const floor = median(rounds.map((x) => x.floorOneWayP50Us));
    const hops = rounds[0]?.hops ?? 0;
    if (hops === 0) throw new VmmsimError('E_RUN', 'the unmaps crossed no hop: is the path nested-smmuv3 strict?');
    const ratio = r3(path / (hops * floor));
    const ratios = rounds.map((x) => x.ratio);
    const machine = combineMachine(machines);
    const notes = machineNotes(machine);
    const hopNames = Object.keys(rounds[0]?.hopP50Us ?? {});
    const hopP50Us = Object.fromEntries(hopNames.map((h) => [h, r2(median(rounds.map((x) => x.hopP50Us[h] ?? NaN)))]));
    // Each hop's p50 as many times as an unmap crosses it.
    const sumHops = Object.entries(hopP50Us).reduce((a, [h, v]) => a + v * (rounds[0]?.hopPerUnmap[h] ?? 1), 0);
    const result = {
      bench: 'path',
      pathMeasuredP50Us: r2(path),
      floorOneWayP50Us: r2(floor),
      hops,
      pathOverheadRatio: ratio,
      target: { pathOverheadRatio: TARGET_RATIO },
      pass: ratio <= TARGET_RATIO,
      detail: {
        roundRatios: ratios,
        ratioCi95: bootstrapMedianCi(ratios, 'pathOverheadRatio', 1),
        roundPathP50Us: rounds.map((x) => r2(x.pathP50Us)),
        roundFloorOneWayP50Us: rounds.map((x) => r2(x.floorOneWayP50Us)),
        // Unmaps of each round still warming up (MSER-5): the two warm-up runs should leave none.
        roundSettledAfterOps: rounds.map((x) => x.settledAfterOps),
        // CPU time of all the run's processes per map+unmap iteration (the floor's round trips included).
        cpuUsPerIteration: r2(median(rounds.map((x) => x.cpuUsPerIteration))),
        hopP50Us,
        hopPerUnmap: rounds[0]?.hopPerUnmap ?? {},
        // What the path spends inside the processes (handlers, the guest's own work, flushing): the op minus its crossings.
        inProcessesUs: r2(path - sumHops),
        // An unmap's time by process (each p50 per operation over the steady unmaps, median of the rounds): measured residence.
        residenceP50Us: Object.fromEntries(Object.keys(rounds[0]?.residenceP50Us ?? {}).map((k) => [k, r2(median(rounds.map((x) => x.residenceP50Us[k] ?? NaN)))])),
        hostFloorAlone: { rawUdsOneWayP50Us: hostFloor.rawUdsOneWayUs.p50, grpcOneWayP50Us: hostFloor.grpcOneWayUs.p50, ratioVsAloneGrpc: r3(path / (hops * hostFloor.grpcOneWayUs.p50)) },
        // The same 8 hops through the runtime and links with no model (this bench, kvm, qemu-0, vfio, psmmu-0).
        relay: relays.length > 0
          ? { relayP50Us: r2(median(relays.map((x) => x.relayP50Us))), floorOneWayP50Us: r2(median(relays.map((x) => x.floorOneWayP50Us))), ratio: r3(median(relays.map((x) => x.ratio))), roundRatios: relays.map((x) => x.ratio) }
          : null,
        // The same 8 hops through 4 small processes relaying raw bytes over bare grpc-js (and this bench).
        bareRelay: bares.length > 0
          ? { relayP50Us: r2(median(bares.map((x) => x.relayP50Us))), floorOneWayP50Us: r2(median(bares.map((x) => x.floorOneWayP50Us))), ratio: r3(median(bares.map((x) => x.ratio))), roundRatios: bares.map((x) => x.ratio) }
          : null,
      },
      machine: { ...machine, loadAvgBeforeBench: load0.map(r2) },
      notes,
      config: { rounds: opts.rounds, opsPerRound: opts.ops, warmup: opts.warmup, pin: opts.pin ?? null, placement: placement?.cpus ?? null, node: process.version, cpus: cpus().length },
    };
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } else {
      const d = result.detail;
      const out = [
        `path bench: nested-smmuv3 strict unmap, ${opts.rounds} rounds x ${opts.ops} iterations, ${opts.warmup} warm-up, node ${process.version}, ${cpus().length} cpus, load average ${load0.map((x) => x.toFixed(2)).join(' ')}${placement ? `, pinned to CPU ${cpuOf?.('guest-0')}` : ''}`,
        '',
        `  pathMeasuredP50Us   ${result.pathMeasuredP50Us.toFixed(1)}`,
        `  floorOneWayP50Us    ${result.floorOneWayP50Us.toFixed(1)}   (bare grpc-js, guest-0 <-> kvm, between the path's operations)`,
        `  hops                ${hops}`,
        `  pathOverheadRatio   ${ratio.toFixed(3)}   (target <= ${TARGET_RATIO}: ${result.pass ? 'met' : 'MISSED'}; per round: ${ratios.map((x) => x.toFixed(2)).join(' ')}${d.ratioCi95 ? `; 95% interval ${d.ratioCi95[0]}-${d.ratioCi95[1]}` : ''})`,
        '',
        `host floor alone, at the start (two idle processes, one way p50): raw Unix socket ${hostFloor.rawUdsOneWayUs.p50} us, bare grpc-js ${hostFloor.grpcOneWayUs.p50} us (path over ${hops} of these: ${d.hostFloorAlone.ratioVsAloneGrpc})`,
        ...(d.relay ? [`relay, the same 8 hops with no model (bench -> kvm -> qemu-0 -> vfio -> psmmu-0 and back): p50 ${d.relay.relayP50Us} us, floor one way ${d.relay.floorOneWayP50Us} us, ratio ${d.relay.ratio} (per round: ${d.relay.roundRatios.join(' ')})`] : []),
        ...(d.bareRelay ? [`bare relay, 8 hops through 4 small processes on bare grpc-js (no vmmsim code): p50 ${d.bareRelay.relayP50Us} us, floor one way ${d.bareRelay.floorOneWayP50Us} us, ratio ${d.bareRelay.ratio} (per round: ${d.bareRelay.roundRatios.join(' ')})`] : []),
        '',
        'hops of the path (one way, p50 us, median of the rounds):',
        ...Object.entries(hopP50Us).map(([h, v]) => `  ${h.padEnd(20)} ${v.toFixed(1).padStart(8)}${(d.hopPerUnmap[h] ?? 1) !== 1 ? `   (x ${d.hopPerUnmap[h]} per unmap)` : ''}`),
        `  ${'in the processes'.padEnd(20)} ${d.inProcessesUs.toFixed(1).padStart(8)}   (the unmap's p50 minus its crossings: handlers, the guest's own work, flushing)`,
        `an unmap by process (p50 per operation of each part, median of the rounds; the parts add up per operation, their p50s need not): ${Object.entries(d.residenceP50Us).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`,
        `CPU time of every process per iteration (map, unmap, floor round trips): ${d.cpuUsPerIteration} us`,
        '',
        `machine while measured: ${machine.cores} cores, load ${machine.loadAvgStart[0]} -> ${machine.loadAvgEnd[0]}, other processes ${machine.othersCores ?? '?'} cores, this run ${machine.ownCores ?? '?'} cores, steal ${machine.stealPct ?? '?'}%`,
        ...notes.map((n) => `note [${n.code}]: ${n.text}`),
      ];
      process.stdout.write(`${out.join('\n')}\n`);
    }
    if (opts.check && !result.pass) process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    session?.close();
    await tree.stop().catch(() => tree.killAll());
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
  }
}
