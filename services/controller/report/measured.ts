/**
 * The report's measured section, read: this host's real IPC between the simulator's processes, apart
 * from the modeled sections that lead the page. Read from a run's `measured` section (results.json,
 * docs/results.md) field by field as data.ts reads the rest (a missing field reads as NaN and the
 * page says so), and written as tables whose cells name their JSON Pointers: per operation and hop
 * with the interval over the trials, per transition kind, the host's floor, the machine's load,
 * and the run's notes.
 */
import { pointer } from './html.js';
import { isObj, num, text, type NumberAt } from './fields.js';






function at(name: string, value: unknown, ...path: (string | number)[]): NumberAt {
  return { name, pointer: pointer(...path), value: num(value) };
}

/** A measured figure: its value (the median of the trials) and its 95% interval, each with its pointer. */
export interface EstimateView {
  value: NumberAt;
  lo: NumberAt | undefined;
  hi: NumberAt | undefined;
  trials: number;
}

function estimate(x: unknown, name: string, ...path: (string | number)[]): EstimateView {
  const o = isObj(x) ? x : {};
  const ci = Array.isArray(o['ci95']) ? o['ci95'] : undefined;
  return {
    value: at(name, o['value'], ...path, 'value'),
    lo: ci ? at(`${name} low`, ci[0], ...path, 'ci95', 0) : undefined,
    hi: ci ? at(`${name} high`, ci[1], ...path, 'ci95', 1) : undefined,
    trials: Array.isArray(o['trials']) ? o['trials'].length : 0,
  };
}

export interface MeasuredView {
  about: string;
  trials: number;
  warmupOps: number;
  pin: string | undefined;
  floor: { raw: NumberAt; rawP99: NumberAt; grpc: NumberAt; grpcP99: NumberAt; how: string } | undefined;
  ops: { op: string; count: NumberAt; p50: EstimateView; p99: EstimateView }[];
  hops: { from: string; to: string; carries: string; count: NumberAt; p50: EstimateView; p99: EstimateView }[];
  transitions: { kind: string; pairs: string; roundTrip: EstimateView }[];
  opsPerSec: EstimateView;
  machine: NumberAt[];
}

/** A run's measured section as the report shows it, or undefined when the run has none (an older document). */
export function measuredView(x: unknown, run: number): MeasuredView | undefined {
  if (!isObj(x)) return undefined;
  const base = ['runs', run, 'measured'];
  const f = isObj(x['floor']) ? x['floor'] : undefined;
  const sumAt = (s: unknown, field: string, name: string, ...path: (string | number)[]): NumberAt => at(name, isObj(s) ? s[field] : undefined, ...path, field);
  const m = isObj(x['machine']) ? x['machine'] : {};
  const placement = isObj(x['placement']) ? x['placement'] : undefined;
  return {
    about: text(x['about'], "this host's real IPC between the simulator's processes"),
    trials: num(x['trials']),
    warmupOps: num(x['warmupOps']),
    pin: placement ? text(placement['pin'], '?') : undefined,
    floor: f
      ? {
        raw: sumAt(f['rawUdsOneWayUs'], 'p50', 'bare Unix socket p50', ...base, 'floor', 'rawUdsOneWayUs'),
        rawP99: sumAt(f['rawUdsOneWayUs'], 'p99', 'bare Unix socket p99', ...base, 'floor', 'rawUdsOneWayUs'),
        grpc: sumAt(f['grpcOneWayUs'], 'p50', 'bare grpc-js p50', ...base, 'floor', 'grpcOneWayUs'),
        grpcP99: sumAt(f['grpcOneWayUs'], 'p99', 'bare grpc-js p99', ...base, 'floor', 'grpcOneWayUs'),
        how: text(f['how'], ''),
      }
      : undefined,
    ops: (Array.isArray(x['ops']) ? x['ops'] : []).map((o, i) => {
      const v = isObj(o) ? o : {};
      const name = text(v['op'], '?');
      return { op: name, count: at('count', v['count'], ...base, 'ops', i, 'count'), p50: estimate(v['p50Us'], `${name} p50`, ...base, 'ops', i, 'p50Us'), p99: estimate(v['p99Us'], `${name} p99`, ...base, 'ops', i, 'p99Us') };
    }),
    hops: (Array.isArray(x['hops']) ? x['hops'] : []).map((h, i) => {
      const v = isObj(h) ? h : {};
      const carries = typeof v['transition'] === 'string' ? `${v['transition']} ${text(v['direction'], '')}`.trim() : '-';
      return { from: text(v['from'], '?'), to: text(v['to'], '?'), carries, count: at('count', v['count'], ...base, 'hops', i, 'count'), p50: estimate(v['p50Us'], 'p50', ...base, 'hops', i, 'p50Us'), p99: estimate(v['p99Us'], 'p99', ...base, 'hops', i, 'p99Us') };
    }),
    transitions: (Array.isArray(x['transitions']) ? x['transitions'] : []).map((t, i) => {
      const v = isObj(t) ? t : {};
      const pairs = Array.isArray(v['pairs']) ? v['pairs'].filter((p): p is string => typeof p === 'string').join(', ') : '';
      return { kind: text(v['kind'], '?'), pairs, roundTrip: estimate(v['roundTripP50Us'], 'round trip p50', ...base, 'transitions', i, 'roundTripP50Us') };
    }),
    opsPerSec: estimate(x['opsPerSec'], 'operations per second', ...base, 'opsPerSec'),
    machine: [
      at('cores', m['cores'], ...base, 'machine', 'cores'),
      at('load average (1 min) at the start', Array.isArray(m['loadAvgStart']) ? m['loadAvgStart'][0] : undefined, ...base, 'machine', 'loadAvgStart', 0),
      at('load average (1 min) at the end', Array.isArray(m['loadAvgEnd']) ? m['loadAvgEnd'][0] : undefined, ...base, 'machine', 'loadAvgEnd', 0),
      at('other processes, cores', m['othersCores'], ...base, 'machine', 'othersCores'),
      at('this run, cores', m['ownCores'], ...base, 'machine', 'ownCores'),
      at('steal %', m['stealPct'], ...base, 'machine', 'stealPct'),
    ],
  };
}

/** Every note about the measured clock has a code under this (controller/measured-notes.ts NOTE_CODES). */
const MEASURED_NOTE_PREFIX = 'measured.';

/** A note (runs[].notes) about the measured clock: shown in the measured section, not beside the modeled figures. */
export function isMeasuredNote(code: string): boolean {
  return code.startsWith(MEASURED_NOTE_PREFIX);
}

