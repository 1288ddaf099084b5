/**
 * The host's transport floor, measured at the start of a command: a bare Unix-socket ping-pong and
 * a bare grpc-js bidi stream between two small processes started as the roles are (the same node,
 * the same CPU when pinned), one way (half a round trip). It stands beside the measured figures:
 * the least a message between two processes of this host costs right now.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { VmmsimError } from '../runtime/errors.js';
import type { FloorMessage } from '../runtime/floor-main.js';
import { packageRoot } from '../runtime/paths.js';
import { pinnedCommand } from './launcher.js';
import type { HostFloor } from './measured.js';
import { FloorProbe } from '../runtime/transport/floor.js';

export interface FloorOptions {
  /** A private folder for the two sockets (the tree's socket folder). */
  dir: string;
  /** --pin: the CPU both processes run on. */
  cpu?: number | undefined;
  roundTrips?: number;
  warmup?: number;
  rounds?: number;
  timeoutMs?: number;
}

export const HOST_FLOOR_HOW =
  'two node processes started as the roles are: a raw Unix-socket ping-pong (node:net) and a bare grpc-js bidirectional stream of raw bytes (no message codec), 64-byte messages, in interleaved rounds after a warm-up; one way is half a round trip';

function entry(): string {
  return join(packageRoot(), 'dist', 'services', 'runtime', 'floor-main.js');
}

function start(args: string[], cpu: number | undefined): ChildProcess {
  const [file, argv] = pinnedCommand(cpu, process.execPath, [entry(), ...args]);
  return spawn(file, argv, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
}

/** The first message of `child` (or why there is none). */
function firstMessage(child: ChildProcess, what: string, timeoutMs: number): Promise<FloorMessage> {
  return new Promise<FloorMessage>((resolve, reject) => {
    const timer = setTimeout(() => reject(new VmmsimError('E_START_TIMEOUT', `the floor ${what} did not answer within ${timeoutMs} ms`)), timeoutMs);
    child.once('message', (m: FloorMessage) => {
      clearTimeout(timer);
      if (m.type === 'failed') reject(new VmmsimError('E_RUN', `the floor ${what} failed: ${m.message}`));
      else resolve(m);
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new VmmsimError('E_SPAWN', `cannot start the floor ${what}: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new VmmsimError('E_PROCESS_EXITED', `the floor ${what} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`));
    });
  });
}

function stop(child: ChildProcess | undefined): void {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** Measures the floor; throws when either process cannot be started or does not answer. */
export async function measureHostFloor(o: FloorOptions): Promise<HostFloor> {
  const timeoutMs = o.timeoutMs ?? 60_000;
  let server: ChildProcess | undefined;
  let prober: ChildProcess | undefined;
  try {
    server = start(['--serve', o.dir], o.cpu);
    await firstMessage(server, 'echo process', timeoutMs);
    prober = start(['--probe', o.dir, '--round-trips', String(o.roundTrips ?? 2000), '--warmup', String(o.warmup ?? 500), '--rounds', String(o.rounds ?? 4)], o.cpu);
    const m = await firstMessage(prober, 'probe process', timeoutMs);
    if (m.type !== 'floor') throw new VmmsimError('E_RUN', 'the floor probe process sent no figures');
    return { how: HOST_FLOOR_HOW, measuredAt: new Date().toISOString(), roundTrips: m.roundTrips, rawUdsOneWayUs: m.rawUdsOneWayUs, grpcOneWayUs: m.grpcOneWayUs, cpus: o.cpu === undefined ? null : [o.cpu] };
  } finally {
    stop(prober);
    stop(server);
  }
}

/**
 * A bare relay of `count` small processes (floor-main.ts --relay), started as the roles are: what
 * grpc-js costs through as many processes as a path crosses, with nothing of vmmsim in it. `relay`
 * times one message through all of them and back; `echo` one bare round trip to the first.
 */
export async function startBareRelay(dir: string, count: number, cpu?: number, timeoutMs = 60_000): Promise<{ relay: FloorProbe; echo: FloorProbe; close(): void }> {
  const children: ChildProcess[] = [];
  const close = (): void => {
    for (const c of children) stop(c);
  };
  try {
    for (let i = 0; i < count; i++) children.push(start(['--relay', dir, '--index', String(i), '--count', String(count)], cpu));
    await Promise.all(children.map((c, i) => firstMessage(c, `relay process ${i}`, timeoutMs)));
    const address = `unix://${join(dir, 'relay-0.sock')}`;
    const relay = await FloorProbe.open('controller', 'relay', address, undefined, timeoutMs, 'Relay');
    const echo = await FloorProbe.open('controller', 'relay-0', address, undefined, timeoutMs, 'Echo');
    return {
      relay,
      echo,
      close: () => {
        relay.close();
        echo.close();
        close();
      },
    };
  } catch (err) {
    close();
    throw err;
  }
}
