/**
 * What a reader must know before trusting a run's measured figures, as notes ({code, text}) in
 * results.json runs[].notes[] and under the terminal table: trials that disagree, a machine that
 * was busy (load average, other processes' CPU time, stolen time), no steady operations left after
 * the warm-up. Only the measured clock is judged here: nothing of the machine enters a modeled figure.
 */
import type { MachineState } from './machine.js';
import { spread, type Estimate, type MeasuredSection } from './measured.js';
import type { RunNote } from './results.js';

export type { RunNote };

/** Trials whose values of a headline figure lie further apart than this, relative to their median, disagree. */
export const TRIALS_DISAGREE = 0.1;
/** Other processes using more than this share of the cores while the trials ran make the machine busy. */
export const OTHERS_BUSY_SHARE = 0.25;
/** Stolen time above this percentage: the hypervisor gave the VM's CPUs to others. */
export const STEAL_PCT = 2;

export const NOTE_CODES = {
  trialsDisagree: 'measured.trials-disagree',
  machineBusy: 'measured.machine-busy',
  loadAverage: 'measured.load-average',
  steal: 'measured.steal',
  noSteady: 'measured.no-steady-operations',
  noFloor: 'measured.no-floor',
  stillWarming: 'measured.still-warming',
  unsettled: 'measured.unsettled',
} as const;

/** Notes about the machine, the same for every run of a command: said once under a table. */
export const MACHINE_NOTE_CODES: ReadonlySet<string> = new Set([NOTE_CODES.machineBusy, NOTE_CODES.loadAverage, NOTE_CODES.steal, NOTE_CODES.noFloor]);

/**
 * Notes that say the same of several runs with each run's own figures (RunNote.subject): said once
 * under a table, in full for the first run that has it, and the others by their subject.
 */
export const GATHERED_NOTE_CODES: ReadonlySet<string> = new Set([NOTE_CODES.unsettled]);

const pct = (x: number): string => `${Math.round(x * 100)}%`;

/** Notes about the machine alone (also for benches that have no measured section). */
export function machineNotes(m: MachineState): RunNote[] {
  const notes: RunNote[] = [];
  if (m.othersCores !== null && m.othersCores > OTHERS_BUSY_SHARE * m.cores) {
    notes.push({
      code: NOTE_CODES.machineBusy,
      text: `the machine was busy: other processes used ${m.othersCores.toFixed(2)} of its ${m.cores} cores on average while the measured part ran (this run used ${m.ownCores?.toFixed(2) ?? '?'}); measured figures are slower and noisier than on a quiet machine`,
    });
  }
  const load = Math.max(m.loadAvgStart[0], m.loadAvgEnd[0]);
  if (load > m.cores) {
    notes.push({ code: NOTE_CODES.loadAverage, text: `the 1-minute load average was ${m.loadAvgStart[0]} at the start and ${m.loadAvgEnd[0]} at the end, above the ${m.cores} cores: processes were waiting for a CPU` });
  }
  if (m.stealPct !== null && m.stealPct > STEAL_PCT) {
    notes.push({ code: NOTE_CODES.steal, text: `the hypervisor stole ${m.stealPct}% of this VM's CPU time while the measured part ran: measured figures include waits for the host` });
  }
  return notes;
}

/** The notes of a run's measured section. */
export function measuredNotes(m: MeasuredSection): RunNote[] {
  const notes: RunNote[] = [];
  if (m.trials > 1) {
    const figures: [string, Estimate][] = [
      ...m.ops.flatMap((o): [string, Estimate][] => [[`${o.op} p50`, o.p50Us]]),
      ...m.hops.map((h): [string, Estimate] => [`hop ${h.from} -> ${h.to} p50`, h.p50Us]),
      ['operations per second', m.opsPerSec],
    ];
    const apart = figures.map(([name, e]) => ({ name, s: spread(e) })).filter((x) => x.s > TRIALS_DISAGREE).sort((a, b) => b.s - a.s);
    if (apart.length > 0) {
      const shown = apart.slice(0, 3).map((x) => `${x.name} by ${pct(x.s)}`).join(', ');
      notes.push({
        code: NOTE_CODES.trialsDisagree,
        text: `the ${m.trials} trials disagree by more than ${pct(TRIALS_DISAGREE)} (max - min over the median): ${shown}${apart.length > 3 ? ` and ${apart.length - 3} more` : ''}; read the intervals, not the medians alone`,
      });
    }
  }
  const warming = stillWarming(m);
  if (warming) {
    notes.push({
      code: NOTE_CODES.stillWarming,
      text: `the trials got faster one after another (${warming}): the processes were still warming up when the measured part began (V8 compiles the path over thousands of operations, and each trial's configure deoptimizes some of it); raise --warmup (2000 or more per thread), or read the last trials`,
    });
  }
  const start = unsettledStart(m);
  if (start) notes.push({ code: NOTE_CODES.unsettled, subject: start.subject, text: start.text });
  if (m.ops.length > 0 && m.ops.every((o) => o.count === 0)) {
    notes.push({ code: NOTE_CODES.noSteady, text: `every operation fell in the warm-up (${m.warmupOps} per thread): no steady measured figure; lower --warmup or raise the operations` });
  }
  return [...notes, ...machineNotes(m.machine)];
}

/** A settled p50 further than this from the p50 over every steady operation: the headline figure carries the warm-up. */
export const UNSETTLED_BIAS = 0.05;

/**
 * A trial whose first steady operations of some kind were a warm-up still under way (settling.ts:
 * MSER-5 put at least two batches and 5% of them before the settled part and their median is more
 * than 10% above the rest's, or the operations were still getting faster at the middle of the run)
 * and moved that kind's p50 by more than UNSETTLED_BIAS. Gives the most biased such figure in words,
 * the warm-up per vCPU that would have left the start out (rounded up to a hundred; it counts the
 * warm-up given) and a few words for a list of runs; undefined when every trial settled or too
 * little to matter.
 */
function unsettledStart(m: MeasuredSection): { text: string; subject: string } | undefined {
  let worst: { text: string; subject: string; bias: number } | undefined;
  for (const o of m.ops) {
    const st = o.settling;
    if (!st) continue;
    for (let k = 0; k < st.afterOps.length; k++) {
      const after = st.afterOps[k] as number;
      const first = st.p50FirstUs[k];
      const rest = st.p50Us.trials[k] as number;
      const all = o.p50Us.trials[k] as number;
      if (!(after > 0) || first === null || first === undefined || !(rest > 0)) continue;
      const bias = all / rest - 1;
      if (!(bias > UNSETTLED_BIAS) || (worst && worst.bias >= bias)) continue;
      const trial = st.afterOps.length > 1 ? ` in trial ${k + 1}` : '';
      const late = st.late[k] === true;
      const warmup = Math.max(m.warmupOps, Math.ceil((st.warmupPerThread[k] as number) / 100) * 100);
      const slower = `its first ${after} of ${st.steadyOps[k] ?? '?'} steady operations (MSER-5) were ${pct(first / rest - 1)} slower`;
      const advice = late
        ? `and it was still getting faster at the middle of the run (the JIT warming, or the machine busier at first): give --warmup ${warmup} or more and more operations than that`
        : `(the JIT still warming after ${m.warmupOps} warm-up operations per vCPU, or the machine busier at first): give --warmup ${warmup} or more`;
      worst = {
        text: `${o.op} p50${trial} ${all.toFixed(1)} us is ${pct(bias)} above its settled ${rest.toFixed(1)} us: ${slower} ${advice} (settled figures: measured.ops[].settling)`,
        subject: `${o.op} p50 +${pct(bias)}, --warmup ${warmup}${late ? '+' : ''}`,
        bias,
      };
    }
  }
  return worst && { text: worst.text, subject: worst.subject };
}

/**
 * Three or more trials whose p50 of some operation falls from each trial to the next, by more than
 * TRIALS_DISAGREE from the first to the last: a warm-up still under way rather than noise. Gives
 * the figure's trials as words, or undefined.
 */
function stillWarming(m: MeasuredSection): string | undefined {
  if (m.trials < 3) return undefined;
  for (const o of m.ops) {
    const t = o.p50Us.trials;
    if (t.length < 3 || o.count === 0) continue;
    const falling = t.every((v, i) => i === 0 || v < (t[i - 1] as number));
    const first = t[0] as number;
    const last = t[t.length - 1] as number;
    if (falling && first > 0 && (first - last) / first > TRIALS_DISAGREE) return `${o.op} p50 ${t.map((v) => v.toFixed(1)).join(' -> ')} us`;
  }
  return undefined;
}
