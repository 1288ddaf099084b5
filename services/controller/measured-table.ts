/**
 * The measured figures as the terminal shows them, in a section of their own under the modeled
 * tables: this host's real IPC between the simulator's processes, per operation, per hop and per
 * transition kind, each with its interval over the trials, the host's floor beside them, and the
 * notes a reader needs. No column here mixes in a modeled figure.
 */
import { TRANSITION_KINDS } from '../runtime/topology.js';
import { MODEL } from '../designs/names.js';
import { MEASURED_ABOUT, RESIDENCE_CROSSINGS, transitionOfHop, type Estimate, type MeasuredSection } from './measured.js';
import type { RunResult } from './results.js';
import { wrap as wrapText } from './wrap.js';

/** An estimate from a single value: an older document's measured field, one trial, no interval. */
function single(x: number): Estimate {
  return { value: x, ci95: null, trials: [x] };
}

/**
 * The run's measured section, or one made from its older measured fields (a results.json written
 * before the section existed): one trial, nothing left out as warm-up, no floor.
 */
export function measuredOf(run: RunResult): MeasuredSection {
  if (run.measured) return run.measured;
  const roleOf = (name: string): string => run.processes.find((p) => p.name === name)?.role ?? name.replace(/-\d+$/, '');
  return {
    about: MEASURED_ABOUT,
    trials: 1,
    warmupOps: 0,
    warmupOpsExcluded: 0,
    placement: null,
    ops: run.ops.map((o) => ({ op: o.op, count: o.measuredUs.count, p50Us: single(o.measuredUs.p50), p99Us: single(o.measuredUs.p99), meanUs: single(o.measuredUs.mean) })),
    hops: run.hops.map((h) => ({ from: h.from, to: h.to, ...transitionOfHop(roleOf(h.from), roleOf(h.to)), count: h.count, p50Us: single(h.measuredUs.p50), p99Us: single(h.measuredUs.p99) })),
    transitions: [],
    opsPerSec: single(run.throughput.opsPerSecMeasured),
    machine: { cores: 0, loadAvgStart: [0, 0, 0], loadAvgEnd: [0, 0, 0], seconds: 0, othersCores: null, ownCores: null, stealPct: null },
  };
}

function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return '-';
  return x.toFixed(digits);
}

/** A measured latency in us with about four significant digits. */
export function us(x: number): string {
  if (!Number.isFinite(x)) return '-';
  const a = Math.abs(x);
  if (a >= 1e6) return `${Number((x / 1e6).toPrecision(3))}M`;
  return fmt(x, a >= 1000 ? 0 : a >= 100 ? 1 : 2);
}

function rate(x: number): string {
  if (!Number.isFinite(x)) return '-';
  return Math.abs(x) >= 1e7 ? `${Number((x / 1e6).toPrecision(3))}M` : fmt(x, 0);
}

/** A 95% interval as `lo-hi`, `-` when there is none (one trial). */
function ci(e: Estimate, f: (x: number) => string): string {
  return e.ci95 ? `${f(e.ci95[0])}-${f(e.ci95[1])}` : '-';
}

function ratio(x: number, base: number | undefined): string {
  if (base === undefined || !(base > 0) || !Number.isFinite(x)) return '-';
  const r = x / base;
  return `${r >= 1e4 ? Number(r.toPrecision(3)) : r >= 10 ? r.toFixed(0) : r.toPrecision(2)}x`;
}

function render(rows: string[][], align: ('l' | 'r')[]): string {
  const widths = align.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (align[i] === 'l' ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd()).join('\n');
}

const wrap = (text: string, width = 120): string => wrapText(text, width);

/** How the figures were taken, in one sentence: trials, warm-up, placement. */
function howTaken(m: MeasuredSection): string {
  const trials = m.trials > 1 ? `median of ${m.trials} trials, 95% bootstrap interval beside it` : 'one trial (--trials N for intervals)';
  const warm = m.warmupOps > 0 ? `; the first ${m.warmupOps} operations of each thread left out as warm-up (${m.warmupOpsExcluded} in all)` : '';
  const pin = m.placement ? `; pinned (--pin ${m.placement.pin})` : '';
  return `${trials}${warm}${pin}`;
}

/** The host's floor in one line, or a line saying it is missing. */
export function floorLine(m: MeasuredSection): string {
  const f = m.floor;
  if (!f) return "host floor: not measured";
  return `host floor at the start, one way p50 (p99): bare Unix socket ${us(f.rawUdsOneWayUs.p50)} (${us(f.rawUdsOneWayUs.p99)}) us, bare grpc-js ${us(f.grpcOneWayUs.p50)} (${us(f.grpcOneWayUs.p99)}) us`;
}

/**
 * The measured section of a comparison: latency per model and operation with intervals, against
 * the no-vIOMMU baseline's measured latency (measured against measured only), and throughput.
 */
export function measuredTable(runs: readonly RunResult[]): string {
  if (runs.length === 0) return '';
  const base = runs.find((r) => r.model === MODEL.none);
  const baseM = base ? measuredOf(base) : undefined;
  const first = measuredOf(runs[0] as RunResult);
  const rows: string[][] = [['model', 'op', 'n', 'p50 us', '95% interval', 'p99 us', '95% interval', 'vs none']];
  for (const run of runs) {
    const m = measuredOf(run);
    for (const o of m.ops) {
      const b = baseM?.ops.find((x) => x.op === o.op);
      rows.push([run.model, o.op, String(o.count), us(o.p50Us.value), ci(o.p50Us, us), us(o.p99Us.value), ci(o.p99Us, us), run === base ? 'baseline' : ratio(o.p50Us.value, b?.p50Us.value)]);
    }
  }
  const tRows: string[][] = [['model', 'ops/s', '95% interval', 'vs none']];
  for (const run of runs) {
    const m = measuredOf(run);
    tRows.push([run.model, rate(m.opsPerSec.value), ci(m.opsPerSec, rate), run === base ? 'baseline' : ratio(m.opsPerSec.value, baseM?.opsPerSec.value)]);
  }
  const head = wrap(`Measured: ${MEASURED_ABOUT}. ${howTaken(first)}. vs none = measured p50 against the no-vIOMMU baseline's measured p50.`);
  return `${head}\n${floorLine(first)}\n${render(rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r'])}\n\n${render(tRows, ['l', 'r', 'r', 'r'])}`;
}

/** Per-hop measured one-way latency of one run, and its transitions as this host's IPC plays them. */
export function hopTable(run: RunResult): string {
  const m = measuredOf(run);
  const rows: string[][] = [['hop', 'carries', 'count', 'p50 us', '95% interval', 'p99 us', '95% interval']];
  for (const h of m.hops) {
    const carries = h.transition ? `${h.transition} ${h.direction ?? ''}`.trim() : '-';
    rows.push([`${h.from} -> ${h.to}`, carries, String(h.count), us(h.p50Us.value), ci(h.p50Us, us), us(h.p99Us.value), ci(h.p99Us, us)]);
  }
  let out = render(rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r']);
  if (m.transitions.length > 0) {
    const tRows: string[][] = [['transition', 'hops (request)', 'round trip p50 us', '95% interval']];
    for (const kind of TRANSITION_KINDS) {
      const t = m.transitions.find((x) => x.kind === kind);
      if (!t) continue;
      const pairs = t.pairs.length > 3 ? `${t.pairs.slice(0, 3).join(', ')} +${t.pairs.length - 3}` : t.pairs.join(', ');
      tRows.push([kind, pairs, us(t.roundTripP50Us.value), ci(t.roundTripP50Us, us)]);
    }
    out += `\n\nper transition kind (request hop p50 + reply hop p50; this host's IPC standing for it, not the hardware's cost):\n${render(tRows, ['l', 'l', 'r', 'r'])}`;
  }
  const res = m.residence ?? [];
  if (res.length > 0) {
    const rRows: string[][] = [['op', 'where', 'entered', 'p50 us', 'p99 us']];
    // Rows come per op, its crossings first (trialFigures); several guests' ops are put together.
    const ops = [...new Set(res.map((x) => x.op))];
    for (const x of ops.flatMap((op) => res.filter((y) => y.op === op))) rRows.push([x.op, x.process, x.process === RESIDENCE_CROSSINGS ? '-' : x.visitsPerOp.toFixed(2), us(x.p50Us.value), us(x.p99Us.value)]);
    out += `\n\nwhere each operation's time went (per operation, each part's own p50 and p99: the parts of one operation add up, their percentiles need not):\n${render(rRows, ['l', 'l', 'r', 'r', 'r'])}`;
  }
  return out;
}
