/**
 * --profile measured-host: the base profile with the steps this host can really measure about itself
 * replaced by what it measured, and nothing else. A VM exit cannot be measured without a VM, and a
 * gRPC hop between two processes is not one: the exits, the SMMU and every other step keep the base
 * profile's sourced values. Measured here, in Node with no native code:
 *
 *   ioctl.syscall       a system call round trip: fs.fstatSync on an open file in a tight loop
 *                       (one fstat(2) each, plus Node's binding around it: an upper bound);
 *   host.thread_wakeup  a wake-up of another process: a one-byte ping-pong through a pipe with a
 *                       child process, half a round trip (each half: a write(2), the child woken
 *                       from epoll, its read(2); Node's event loop on both sides included);
 *   guest.bounce_copy   a 4 KiB memcpy: Buffer.copy of 256 KiB blocks (they stay in the core's L2),
 *                       the bandwidth scaled to one page.
 *
 * Each replaced step names what was measured, how, when and over how many samples; its range is
 * the 5th to 95th percentile of the samples. The modeled numbers of a run on this profile follow
 * the machine and its load, so unlike the shipped profiles they differ from run to run.
 */
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { MEASURED_HOST, type CostProfile, type ProfileStep } from '../cost/profile.js';
import { nowNs } from '../runtime/clock.js';
import { VmmsimError } from '../runtime/errors.js';
import { percentileOfSorted } from '../runtime/samples.js';

export { MEASURED_HOST };
/** Where the steps that are not measured come from. */
export const MEASURED_HOST_BASE = 'arm64-kunpeng920';

/** One calibrated quantity: its samples' p50, p5 and p95 in ns, how many, and how it was taken. */
export interface Calibrated {
  p50Ns: number;
  p5Ns: number;
  p95Ns: number;
  samples: number;
  how: string;
}

/** What this host measured about itself. */
export interface HostCalibration {
  syscall: Calibrated;
  wakeup: Calibrated;
  copy4k: Calibrated;
}

function calibrated(values: number[], how: string): Calibrated {
  const s = Float64Array.from(values).sort();
  const r = (x: number): number => Math.round(x * 10) / 10;
  return { p50Ns: r(percentileOfSorted(s, 50)), p5Ns: r(percentileOfSorted(s, 5)), p95Ns: r(percentileOfSorted(s, 95)), samples: s.length, how };
}

/** fstat(2) round trips: `blocks` timings of `per` calls each, per-call ns. */
export function measureSyscall(blocks = 200, per = 200): Calibrated {
  const fd = openSync(process.execPath, 'r');
  try {
    for (let i = 0; i < 2000; i++) fstatSync(fd);
    const out: number[] = [];
    for (let b = 0; b < blocks; b++) {
      const t0 = nowNs();
      for (let i = 0; i < per; i++) fstatSync(fd);
      out.push((nowNs() - t0) / per);
    }
    return calibrated(out, `fs.fstatSync on an open file, ${blocks} timings of ${per} calls: one fstat(2) and Node's binding around it`);
  } finally {
    closeSync(fd);
  }
}

/** Buffer.copy of 256 KiB blocks, as ns per 4 KiB. */
export function measureCopy(blocks = 400): Calibrated {
  const size = 256 * 1024;
  const a = Buffer.alloc(size, 1);
  const b = Buffer.alloc(size);
  for (let i = 0; i < 50; i++) a.copy(b);
  const out: number[] = [];
  for (let i = 0; i < blocks; i++) {
    const t0 = nowNs();
    a.copy(b);
    out.push(((nowNs() - t0) * 4096) / size);
  }
  return calibrated(out, `Buffer.copy of 256 KiB (L2-resident) blocks, ${blocks} timings, scaled to 4 KiB`);
}

/** The child of the wake-up measurement: every byte on stdin straight back on stdout. */
const ECHO_CHILD = "process.stdin.on('data', (b) => process.stdout.write(b)); process.stdin.on('end', () => process.exit(0));";

/** One-byte ping-pongs through a pair of pipes with a child process: half of each round trip. */
export async function measureWakeup(roundTrips = 3000, warmup = 500, timeoutMs = 30_000): Promise<Calibrated> {
  const child = spawn(process.execPath, ['-e', ECHO_CHILD], { stdio: ['pipe', 'pipe', 'ignore'] });
  const stdin = child.stdin;
  const stdout = child.stdout;
  if (!stdin || !stdout) throw new VmmsimError('E_SPAWN', 'cannot start the wake-up calibration child with pipes');
  const byte = Buffer.from([0x5a]);
  let waiting: ((ns: number) => void) | undefined;
  let t0 = 0;
  stdout.on('data', () => {
    const w = waiting;
    waiting = undefined;
    w?.(nowNs() - t0);
  });
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (err) => reject(new VmmsimError('E_SPAWN', `cannot start the wake-up calibration child: ${err.message}`)));
    child.once('exit', (code, signal) => reject(new VmmsimError('E_PROCESS_EXITED', `the wake-up calibration child ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`)));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    const one = (): Promise<number> =>
      Promise.race([
        new Promise<number>((resolve) => {
          waiting = resolve;
          t0 = nowNs();
          stdin.write(byte);
        }),
        failed,
      ]);
    for (let i = 0; i < warmup; i++) await one();
    const out: number[] = [];
    for (let i = 0; i < roundTrips; i++) out.push((await one()) / 2);
    return calibrated(out, `a one-byte ping-pong through two pipes with a child node process, ${roundTrips} round trips after ${warmup}, half of each: write(2), the other process woken from epoll_wait, read(2), Node's event loop on both sides`);
  } finally {
    clearTimeout(timer);
    failed.catch(() => undefined);
    child.removeAllListeners('exit');
    stdin.end();
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

/** Measures the three quantities (about a second). */
export async function calibrateHost(): Promise<HostCalibration> {
  const syscall = measureSyscall();
  const copy4k = measureCopy();
  const wakeup = await measureWakeup();
  return { syscall, wakeup, copy4k };
}

/** Which step each calibrated quantity replaces, and what it stands for. */
const REPLACED: { step: string; from: keyof HostCalibration; what: string }[] = [
  { step: 'ioctl.syscall', from: 'syscall', what: 'a system call round trip' },
  { step: 'host.thread_wakeup', from: 'wakeup', what: 'a wake-up of another process' },
  { step: 'guest.bounce_copy', from: 'copy4k', what: 'a 4 KiB memcpy' },
];

/** The steps measured-host replaces (the rest are the base profile's). */
export const MEASURED_HOST_STEPS: readonly string[] = REPLACED.map((r) => r.step);

/**
 * measured-host: the base profile with the steps this host measured about itself replaced by
 * their p50, each naming what was measured, how and when; every other step as in the base.
 */
export function measuredHostProfile(base: CostProfile, cal: HostCalibration, when: string): CostProfile {
  const steps: Record<string, ProfileStep> = { ...base.steps };
  for (const r of REPLACED) {
    const c = cal[r.from];
    if (!(c.p50Ns > 0)) throw new VmmsimError('E_RUN', `the host calibration of ${r.what} gave no figure`);
    const ns = Math.max(1, Math.round(c.p50Ns));
    steps[r.step] = {
      ns,
      confidence: 'S',
      source: `measured on this host ${when}: ${r.what}, p50 of ${c.samples} samples of ${c.how} (Node on this machine, not the target hardware)`,
      range: [Math.min(ns, Math.max(1, Math.floor(c.p5Ns))), Math.max(ns, Math.ceil(c.p95Ns))],
      rangeReason: 'the 5th to 95th percentile of the samples on this host',
    };
  }
  return {
    name: MEASURED_HOST,
    arch: base.arch,
    description: `${base.name} with ${REPLACED.map((r) => r.step).join(', ')} measured on this host (${when}); exits, the SMMU and every other step are ${base.name}'s`,
    path: '(measured in this run)',
    steps,
  };
}
