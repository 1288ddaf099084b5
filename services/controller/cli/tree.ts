/**
 * The process tree a command runs its scenarios on: launched here (withTree), or the running
 * processes --connect names (../connect.ts); the measured-host calibration on it; and the
 * controller's logger and metrics around a command that runs trees.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CostProfile } from '../../cost/profile.js';
import { asVmmsimError, type VmmsimError } from '../../runtime/errors.js';
import { createLogger, type LogLevel, type Logger } from '../../runtime/logger.js';
import { INSECURE, mutualTls, type TlsFiles } from '../../runtime/transport/credentials.js';
import type { ModelName, Scenario } from '../../scenario/schema.js';
import { withConnected, type ConnectTarget } from '../connect.js';
import { failureCause } from '../failure-cause.js';
import { ProcessTree, type ProcessSpec } from '../launcher.js';
import { LivenessWatch } from '../liveness.js';
import { writeProfile } from '../results.js';
import { Session, type MeasureSettings } from '../session.js';
import { measureHostFloor } from '../host-floor.js';
import { calibrateHost, measuredHostProfile } from '../measured-host.js';
import { placementOf } from '../placement.js';
import type { Placement } from '../measured.js';
import { treeDown, treeUp, withControllerMetrics, type TreeTelemetry } from '../telemetry.js';
import type { RunAbort } from './abort.js';
import { failed } from './outcome.js';

/** How a command's process trees run. */
export interface TreeSettings {
  transport: 'unix' | 'tcp';
  logLevel: LogLevel;
  startTimeoutMs: number;
  /** --connect: drive the processes a file names instead of launching a tree. */
  connect?: ConnectTarget | undefined;
  /** Mutual TLS on every link (the launched roles get the same files). */
  tls?: TlsFiles | undefined;
  /** --metrics-port, --metrics-host, --otlp-endpoint, --trace-sample. */
  telemetry?: TreeTelemetry | undefined;
  /** --trials, --warmup, --pin (absent: one trial, no warm-up left out, unpinned, no floor). */
  measure?: MeasureOptions | undefined;
}

/** How the command takes its measured figures (--trials, --warmup, --pin). */
export interface MeasureOptions {
  trials: number;
  warmup: number | 'auto';
  pin: { spec: string; cpus: number[] } | undefined;
}

/**
 * The session's measure settings: the options, and the host's floor measured now (before the
 * roles run, in `dir`); a floor that cannot be measured leaves a note instead of failing the run.
 */
async function measureSettings(o: MeasureOptions | undefined, placement: Placement | null, dir: string, log: Logger): Promise<MeasureSettings> {
  if (!o) return { trials: 1, warmup: 0, placement: null, floor: undefined };
  try {
    const floor = await measureHostFloor({ dir, cpu: placement?.cpus['floor'] });
    return { trials: o.trials, warmup: o.warmup, placement, floor };
  } catch (err) {
    log.warn({ err }, 'the host floor could not be measured');
    return { trials: o.trials, warmup: o.warmup, placement, floor: undefined, floorMissing: (err as Error).message };
  }
}

/** A command's plan that runs one scenario's models on one process tree (run, compare, saturate). */
export interface RunPlan extends TreeSettings {
  scenario: Scenario;
  models: ModelName[];
  profile: CostProfile;
  /** --profile measured-host: calibrate the transitions on this machine before the runs. */
  measureHost: boolean;
  out: string;
  json: boolean;
}

/**
 * Runs a planned command (none: its help was printed) with the controller's logger and metrics.
 * An unexpected failure (E_RUN) is its line on stderr, then its stack in the controller's log.
 */
export async function controlled<P extends TreeSettings>(p: P | undefined, exec: (p: P, log: Logger) => Promise<number>): Promise<number> {
  if (!p) return 0;
  const log = createLogger({ role: 'controller', name: 'controller' }, p.logLevel);
  try {
    return await withControllerMetrics(p.telemetry, () => exec(p, log));
  } catch (err) {
    return failed(err, log);
  }
}

/**
 * Starts a process tree for `specs`, hands its session to `body`, and always ends with the tree
 * stopped and its socket and memory folders removed, whatever happened (a crash, a signal, a
 * deadline). A process that exits while the tree is up aborts the command.
 */
export async function withTree(settings: TreeSettings, specs: ProcessSpec[], abort: RunAbort, log: Logger, body: (session: Session) => Promise<void>): Promise<void> {
  if (settings.connect) {
    const connect = settings.connect;
    // The roles run elsewhere: this host's floor would not be theirs, and --connect starts no
    // process here, so none is measured and the measured section says why.
    const m = settings.measure;
    const measure: MeasureSettings = m
      ? { trials: m.trials, warmup: m.warmup, placement: null, floor: undefined, floorMissing: 'the roles were reached with --connect, so this host starts no process to measure a floor that would not be theirs' }
      : { trials: 1, warmup: 0, placement: null, floor: undefined };
    return await withConnected({ ...settings, connect }, specs, abort, log, async (session) => {
      session.measure = measure;
      await body(session);
    });
  }
  abort.throwIfAborted();
  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-'));
  // Guest RAM and host tables are files every process of the host maps; tmpfs keeps them in RAM.
  const ramDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmmsim-ram-'));
  const pin = settings.measure?.pin;
  const placement = pin ? placementOf(specs, pin.cpus, pin.spec) : null;
  const tree = new ProcessTree({ socketDir, ramDir, transport: settings.transport, logLevel: settings.logLevel, startTimeoutMs: settings.startTimeoutMs, log, tls: settings.tls, telemetry: settings.telemetry, cpuOf: placement ? (name) => placement.cpus[name] : undefined });
  tree.on('exit', abort.abort);
  // Exits as the launcher reports them, to name the cause when a run fails (failure-cause.ts).
  const exits: VmmsimError[] = [];
  tree.on('exit', (e) => exits.push(e));
  const lastResort = (): void => {
    tree.killAll();
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
  };
  process.on('exit', lastResort);
  let session: Session | undefined;
  let watch: LivenessWatch | undefined;
  try {
    // The floor first, while no role runs yet.
    const measure = await abort.race(measureSettings(settings.measure, placement, socketDir, log));
    await abort.race(tree.start(specs));
    treeUp(settings.telemetry, tree.processes);
    const security = settings.tls ? mutualTls(settings.tls) : INSECURE;
    session = new Session(tree, log, ramDir, security);
    session.measure = measure;
    // A process that stops answering ends the command instead of failing its peers' requests one by one.
    watch = new LivenessWatch(tree.processes, { onFailure: abort.abort, security, local: true });
    watch.start();
    await body(session);
  } catch (err) {
    throw await failureCause(err, tree.processes, exits);
  } finally {
    watch?.stop();
    session?.close();
    await tree.stop();
    treeDown();
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
    process.off('exit', lastResort);
  }
}

/**
 * --profile measured-host: this host calibrated (a syscall, a wake-up through a pipe, memcpy
 * bandwidth: measured-host.ts), its profile written beside the results; the runs that follow use it.
 */
export async function measureHost(base: CostProfile, p: { out: string; json: boolean }, abort: RunAbort): Promise<CostProfile> {
  if (!p.json) process.stderr.write('vmmsim: measuring what this host can measure about itself (a syscall, a wake-up, memcpy)...\n');
  const cal = await abort.race(calibrateHost());
  const profile = measuredHostProfile(base, cal, new Date().toISOString());
  writeProfile(p.out, profile);
  return profile;
}

/**
 * The part of a command that starts processes and runs: a failure is returned, not thrown, so the
 * command still writes what completed before it (its results document, status failed); the
 * progress display and the abort handlers end either way.
 */
export async function runCapturing(progress: { end(): void }, abort: RunAbort, body: () => Promise<void>): Promise<VmmsimError | undefined> {
  try {
    await body();
    return undefined;
  } catch (err) {
    return asVmmsimError(err);
  } finally {
    progress.end();
    abort.dispose();
  }
}
