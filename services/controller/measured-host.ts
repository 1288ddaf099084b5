import { MEASURED_HOST, type CostProfile, type ProfileStep } from '../cost/profile.js';

export { MEASURED_HOST };
/** Where the steps that are not transitions come from. */
export const MEASURED_HOST_BASE = 'arm64-kunpeng920';

/**
 * One hop of the calibration run: its endpoints' roles and its measured one-way p50 in us, with
 * its fastest and p99 times when known (they bound the step's range; without them the range is
 * the p50 alone).
 */
export interface MeasuredHop {
  fromRole: string;
  toRole: string;
  p50Us: number;
  count: number;
  minUs?: number;
  p99Us?: number;
}

/**
 * Which transition each measured round trip stands for: the request hop and its reply. The
 * simulated exit, user-space return, ioctl and hardware wait are replaced by what crossing the
 * same boundary between this machine's processes really cost.
 */
const TRANSITIONS: { steps: string[]; there: [string, string]; what: string }[] = [
  { steps: ['exit.mmio_trap', 'exit.hcall'], there: ['guest', 'kvm'], what: 'guest -> kvm (the exit)' },
  { steps: ['exit.to_user', 'host.thread_wakeup'], there: ['kvm', 'qemu'], what: 'kvm -> qemu (the return to user space)' },
  { steps: ['ioctl.syscall'], there: ['qemu', 'vfio'], what: 'qemu -> vfio (the ioctl)' },
  { steps: ['smmu.sync'], there: ['vfio', 'psmmu'], what: 'vfio -> psmmu (submission and completion wait)' },
];

/**
 * measured-host: the base profile with every transition step replaced by the p50 round trip of
 * the matching hop measured in a calibration run on this machine. Its modeled numbers follow the
 * machine and its load, so unlike the shipped profiles they differ from run to run.
 */
export function measuredHostProfile(base: CostProfile, hops: readonly MeasuredHop[], when: string): CostProfile {
  const steps: Record<string, ProfileStep> = { ...base.steps };
  for (const t of TRANSITIONS) {
    const go = hops.find((h) => h.fromRole === t.there[0] && h.toRole === t.there[1]);
    const back = hops.find((h) => h.fromRole === t.there[1] && h.toRole === t.there[0]);
    if (!go || !back) throw new Error(`the calibration run has no ${t.what} hop`);
    const ns = Math.round((go.p50Us + back.p50Us) * 1000);
    // The spread of the same round trips: fastest to p99, each no further from ns than the p50.
    const lo = Math.min(ns, Math.round(((go.minUs ?? go.p50Us) + (back.minUs ?? back.p50Us)) * 1000));
    const hi = Math.max(ns, Math.round(((go.p99Us ?? go.p50Us) + (back.p99Us ?? back.p50Us)) * 1000));
    for (const s of t.steps) {
      steps[s] = {
        ns,
        confidence: 'S',
        source: `measured on this host ${when}: p50 round trip of ${t.what} over ${go.count} operations of the calibration run (vmmsim's own IPC, not the real kernel path)`,
        range: [lo, hi],
        rangeReason: `the same calibration run's round trips of ${t.what}, fastest to p99`,
      };
    }
  }
  return {
    name: MEASURED_HOST,
    arch: base.arch,
    description: `${base.name} with the transitions measured on this host (${when})`,
    path: '(measured in this run)',
    steps,
  };
}
