/**
 * How busy this machine was while a run's measured part ran: the load average, the CPU time other
 * processes took (everything the kernel counted as busy minus what the controller and its role
 * processes used), and the time the hypervisor stole from this VM. Read from /proc on Linux; on
 * other systems only the load average is known.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';

/** The machine over a run's measured part, and what was judged from it. */
export interface MachineState {
  cores: number;
  /** 1, 5 and 15 minute load averages when the measured part began and when it ended. */
  loadAvgStart: [number, number, number];
  loadAvgEnd: [number, number, number];
  /** Seconds the sample covered. */
  seconds: number;
  /** CPU time of processes other than this run's, in cores on average (null where /proc is missing). */
  othersCores: number | null;
  /** CPU time of this run's processes (controller and roles), in cores on average. */
  ownCores: number | null;
  /** Share of CPU time the hypervisor stole (steal in /proc/stat), in percent. */
  stealPct: number | null;
}

interface CpuTicks {
  busy: number;
  total: number;
  steal: number;
}

/** Jiffies per second of /proc/.../stat (USER_HZ, 100 on every Linux ABI). */
const HZ = 100;

function procStat(): CpuTicks | undefined {
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user)
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    return { busy: user + nice + system + irq + softirq, total: user + nice + system + idle + iowait + irq + softirq + steal, steal };
  } catch {
    return undefined;
  }
}

/** utime + stime of a process (its threads together), in jiffies; 0 when it is gone. */
function processTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the name: state(0) ppid(1) ... utime is field 14 of the line, index 11 here; stime 12.
    return Number(f[11] ?? 0) + Number(f[12] ?? 0);
  } catch {
    return 0;
  }
}

const three = (): [number, number, number] => {
  const [a = 0, b = 0, c = 0] = loadavg();
  return [round2(a), round2(b), round2(c)];
};

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

/** A sample started now; end() gives the machine's state since, `pids()` naming this run's processes. */
export class MachineSample {
  private readonly t0 = performance.now();
  private readonly load0 = three();
  private readonly cpu0 = procStat();
  private readonly own0: Map<number, number>;

  constructor(private readonly pids: () => readonly number[]) {
    this.own0 = new Map(this.all().map((p) => [p, processTicks(p)]));
  }

  private all(): number[] {
    return [process.pid, ...this.pids()];
  }

  end(): MachineState {
    const seconds = (performance.now() - this.t0) / 1000;
    const cpu1 = procStat();
    let own = 0;
    for (const p of this.all()) own += Math.max(0, processTicks(p) - (this.own0.get(p) ?? 0));
    const c0 = this.cpu0;
    const known = c0 !== undefined && cpu1 !== undefined && seconds > 0;
    const busy = known ? cpu1.busy - c0.busy : 0;
    const total = known ? cpu1.total - c0.total : 0;
    return {
      cores: cpus().length,
      loadAvgStart: this.load0,
      loadAvgEnd: three(),
      seconds: round2(seconds),
      othersCores: known ? round2(Math.max(0, busy - own) / HZ / seconds) : null,
      ownCores: known ? round2(own / HZ / seconds) : null,
      stealPct: known && total > 0 ? round2((100 * (cpu1.steal - c0.steal)) / total) : null,
    };
  }
}

/** The states of several samples (one per trial) as one: load at the first start and the last end, CPU use time-weighted. */
export function combineMachine(states: readonly MachineState[]): MachineState {
  const first = states[0];
  const last = states[states.length - 1];
  if (!first || !last) return { cores: cpus().length, loadAvgStart: three(), loadAvgEnd: three(), seconds: 0, othersCores: null, ownCores: null, stealPct: null };
  const seconds = states.reduce((n, s) => n + s.seconds, 0);
  const weighted = (k: 'othersCores' | 'ownCores' | 'stealPct'): number | null =>
    states.some((s) => s[k] === null) || seconds <= 0 ? null : round2(states.reduce((n, s) => n + (s[k] as number) * s.seconds, 0) / seconds);
  return { cores: first.cores, loadAvgStart: first.loadAvgStart, loadAvgEnd: last.loadAvgEnd, seconds: round2(seconds), othersCores: weighted('othersCores'), ownCores: weighted('ownCores'), stealPct: weighted('stealPct') };
}
