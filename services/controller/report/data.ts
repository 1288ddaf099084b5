/**
 * What the report shows, read from a results document field by field. Any document the CLI writes
 * (run, compare, sweep, saturate, and failed or interrupted ones with few or no runs) and any hand-
 * edited one gives a ReportData: a field that is missing or of the wrong type reads as NaN (numbers)
 * or a placeholder (strings), and a note says what was missing. Nothing here throws on content.
 * Every value keeps the JSON Pointer it came from, so each chart mark and table cell can name it.
 */
import { TRANSITION_KINDS, type TransitionKind } from '../../runtime/topology.js';
import { mainOp } from '../sweep.js';
import { pointer } from './html.js';
import { isObj, num, text, type NumberAt, type Obj } from './fields.js';
import { measuredView, type MeasuredView } from './measured.js';
import { sensitivityView, type SensitivityView } from './sensitivity.js';





export const SUMMARY_FIELDS = ['count', 'mean', 'stddev', 'min', 'p50', 'p90', 'p99', 'p999', 'max'] as const;
export type SummaryField = (typeof SUMMARY_FIELDS)[number];
export type SummaryView = Record<SummaryField, number>;

/** The points of a latency curve, in order: the summary field and how people write it. */
export const PERCENTILES = [
  { field: 'p50', label: 'p50' },
  { field: 'p90', label: 'p90' },
  { field: 'p99', label: 'p99' },
  { field: 'p999', label: 'p99.9' },
  { field: 'max', label: 'max' },
] as const satisfies readonly { field: SummaryField; label: string }[];

/** One entry of an operation's breakdown: a cost step, or a resource's queueing wait. */
export interface BreakdownView {
  pointer: string;
  step: string;
  /** A queueing wait (`wait:<resource>`), not a cost step. */
  wait: boolean;
  perOp: number;
  ns: number;
  confidence: string;
  functions: string[];
}

export interface OpView {
  pointer: string;
  op: string;
  count: number;
  failed: number;
  transitions: Record<TransitionKind, number>;
  measuredUs: SummaryView;
  modeledNs: SummaryView;
  /** Where its modeled time goes (empty: the document has no breakdown). */
  breakdown: BreakdownView[];
}

export interface HopView {
  pointer: string;
  from: string;
  to: string;
  count: number;
  measuredUs: SummaryView;
}

export const RESOURCE_FIELDS = ['holds', 'busyNs', 'waitNs', 'maxWaitNs', 'maxQueue', 'utilization'] as const;
export type ResourceField = (typeof RESOURCE_FIELDS)[number];

export interface ResourceView {
  pointer: string;
  resource: string;
  values: Record<ResourceField, number>;
}


export interface RunView {
  index: number;
  pointer: string;
  model: string;
  point: Record<string, string | number>;
  /** The point in short form (`psmmus=2 vsmmu=single`), empty outside sweeps and searches. */
  pointLabel: string;
  /** Model and point: names the run in charts and tables. */
  label: string;
  ops: OpView[];
  /** The operation a sweep reports (unmap, or the workload's own), as the sweep table picks it. */
  mainOp: OpView | undefined;
  hops: HopView[];
  /** Scalars of the run: elapsed time, throughput, invalidations, DMA, load. */
  figures: NumberAt[];
  /** Commands each pSMMU executed. */
  delivered: NumberAt[];
  resources: ResourceView[];
  processes: { role: string; name: string; pid: NumberAt; host: string; metricsPort: NumberAt | undefined }[];
  workloadCounters: NumberAt[];
  counters: { process: string; values: NumberAt[] }[];
  /**
   * runs[].notes, every one: the modeled figures' (what no upstream code runs in this run's model,
   * a profile of another architecture) and the measured clock's (measured.*: isMeasuredNote).
   */
  notes: { code: string; text: string }[];
  throughputMeasured: NumberAt;
  throughputModeled: NumberAt;
  /** Application workloads: packets or requests per second and what bounds them (runs[].application). */
  application: ApplicationView | undefined;
  /** Open-loop runs: achieved arrivals per second in each clock. */
  achievedMeasured: NumberAt | undefined;
  achievedModeled: NumberAt | undefined;
  /** The run's measured section (this host's IPC, over its trials), absent in older documents. */
  measured: MeasuredView | undefined;
}

export interface ApplicationView {
  unit: string;
  perSec: NumberAt;
  bytesPerSec: NumberAt;
  bottleneck: string;
  bottleneckKind: string;
  saturated: boolean;
  /** Each resource's working utilization, 0..1. */
  utilization: NumberAt[];
}

export interface SaturationView {
  index: number;
  pointer: string;
  model: string;
  point: Record<string, string | number>;
  pointLabel: string;
  label: string;
  /** NaN when no rate passed. */
  ratePerSec: NumberAt;
  failedAtPerSec: NumberAt;
  metric: string;
  p99BoundUs: number;
  op: string;
  steps: number;
  stop: string;
  /** The hard cap of the search's bound (NaN in documents written before it existed). */
  capPerSec: number;
  /** A rate passed at the cap: the design saturates above it, the search did not find where. */
  capped: boolean;
}

export type ReportKind = 'run' | 'compare' | 'sweep' | 'saturate' | 'sweep-saturate';

export interface ReportData {
  kind: ReportKind;
  status: string;
  error: { code: string; message: string } | undefined;
  scenarioName: string;
  /** Header facts: schema, tool, times, seed, profile, sweep. */
  facts: [string, string][];
  /** The resolved scenario as dotted keys and values. */
  scenario: [string, string][];
  /** Keys of the runs' points: the swept keys first, then others (workload.rate of a search). */
  pointKeys: string[];
  /** doc.sweep.keys (empty outside sweeps). */
  sweepKeys: string[];
  runs: RunView[];
  saturation: SaturationView[];
  /** `vmmsim sensitivity` and `compare --sensitivity`: the comparisons re-priced across the cost ranges. */
  sensitivity: SensitivityView | undefined;
  /** What is missing or partial, one sentence each. */
  notes: string[];
  /** `vmmsim study`: the study's name and question, the operations that answer it, and answer.txt. */
  study: StudyView | undefined;
  /** What ran, for the title: the runs' workloads (workload.kind) and DMA modes, each distinct one in order. */
  workloads: string[];
  dmaModes: string[];
}

export interface StudyView {
  name: string;
  question: string;
  ops: string[];
  answer: string;
}

function studyView(x: unknown): StudyView | undefined {
  if (!isObj(x)) return undefined;
  const ops = Array.isArray(x['ops']) ? x['ops'].filter((o): o is string => typeof o === 'string') : [];
  return { name: text(x['name'], 'study'), question: text(x['question'], ''), ops, answer: text(x['answer'], '') };
}

function summary(x: unknown, where: string, notes: string[]): SummaryView {
  const o = isObj(x) ? x : {};
  const out = {} as SummaryView;
  const missing: string[] = [];
  for (const f of SUMMARY_FIELDS) {
    out[f] = num(o[f]);
    if (Number.isNaN(out[f])) missing.push(f);
  }
  if (!isObj(x)) notes.push(`${where}: no summary`);
  else if (missing.length > 0) notes.push(`${where}: no ${missing.join(', ')}`);
  return out;
}

function numberAt(name: string, value: unknown, ...path: (string | number)[]): NumberAt {
  return { name, pointer: pointer(...path), value: num(value) };
}

/** Name-number pairs of an object's numeric fields (counters), in the document's order. */
function numbers(x: unknown, ...path: (string | number)[]): NumberAt[] {
  if (!isObj(x)) return [];
  return Object.entries(x)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => numberAt(k, v, ...path, k));
}

/**
 * Every number under an object, nested ones too, named by their dotted path below `name`: the
 * run's sections gain fields over time, and each one still reaches the table.
 */
function leafNumbers(x: unknown, name: string, skip: readonly string[], ...path: (string | number)[]): NumberAt[] {
  if (!isObj(x)) return [];
  return Object.entries(x).flatMap(([k, v]) => {
    if (skip.includes(k)) return [];
    if (typeof v === 'number') return [numberAt(`${name}.${k}`, v, ...path, k)];
    return isObj(v) ? leafNumbers(v, `${name}.${k}`, [], ...path, k) : [];
  });
}

/** A point's values: strings and numbers only. */
function pointOf(x: unknown): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  if (!isObj(x)) return out;
  for (const [k, v] of Object.entries(x)) if (typeof v === 'string' || typeof v === 'number') out[k] = v;
  return out;
}

/** Short names for point keys: the last dotted part, unless two keys share it. */
export function shortKeys(keys: readonly string[]): Map<string, string> {
  const last = (k: string): string => k.slice(k.lastIndexOf('.') + 1);
  return new Map(keys.map((k) => [k, keys.filter((x) => last(x) === last(k)).length > 1 ? k : last(k)]));
}

function describePoint(point: Record<string, string | number>, keys: readonly string[], short: Map<string, string>): string {
  return keys.filter((k) => k in point).map((k) => `${short.get(k) ?? k}=${point[k]}`).join(' ');
}

function opView(x: unknown, where: string, path: (string | number)[], notes: string[]): OpView {
  const o = isObj(x) ? x : {};
  const name = text(o['op'], '?');
  const t = isObj(o['transitions']) ? o['transitions'] : {};
  if (!isObj(o['transitions'])) notes.push(`${where} ${name}: no transitions`);
  const transitions = {} as Record<TransitionKind, number>;
  for (const k of TRANSITION_KINDS) transitions[k] = num(t[k]);
  const count = num(o['count']);
  const breakdown = (Array.isArray(o['breakdown']) ? o['breakdown'] : []).map((b, i): BreakdownView => {
    const e = isObj(b) ? b : {};
    const step = text(e['step'], '?');
    return {
      pointer: pointer(...path, 'breakdown', i),
      step,
      wait: step.startsWith('wait:'),
      perOp: num(e['perOp']),
      ns: num(e['ns']),
      confidence: text(e['confidence'], '?'),
      functions: Array.isArray(e['functions']) ? e['functions'].filter((f): f is string => typeof f === 'string') : [],
    };
  });
  return {
    pointer: pointer(...path),
    op: name,
    count,
    failed: num(o['failed']),
    transitions,
    measuredUs: summary(o['measuredUs'], `${where} ${name} measuredUs`, notes),
    modeledNs: summary(o['modeledNs'], `${where} ${name} modeledNs`, notes),
    breakdown,
  };
}

function runView(x: unknown, index: number, keys: readonly string[], short: Map<string, string>, notes: string[]): RunView {
  const r = isObj(x) ? x : {};
  const path = ['runs', index];
  const model = text(r['model'], '?');
  const point = pointOf(r['point']);
  const pointLabel = describePoint(point, keys, short);
  const where = `run ${index + 1} (${pointLabel ? `${pointLabel} ` : ''}${model})`;
  if (!isObj(x)) notes.push(`run ${index + 1}: not an object`);
  const opsRaw = Array.isArray(r['ops']) ? r['ops'] : [];
  if (opsRaw.length === 0) notes.push(`${where}: no operations`);
  const ops = opsRaw.map((o, i) => opView(o, where, [...path, 'ops', i], notes));
  const main = mainOp({ ops });
  const hops = (Array.isArray(r['hops']) ? r['hops'] : []).map((h, i): HopView => {
    const o = isObj(h) ? h : {};
    const from = text(o['from'], '?');
    const to = text(o['to'], '?');
    return { pointer: pointer(...path, 'hops', i), from, to, count: num(o['count']), measuredUs: summary(o['measuredUs'], `${where} hop ${from} -> ${to}`, notes) };
  });
  const th = isObj(r['throughput']) ? r['throughput'] : {};
  const inv = isObj(r['invalidations']) ? r['invalidations'] : {};
  const load = isObj(r['load']) ? r['load'] : undefined;
  const achieved = load && isObj(load['achievedPerSec']) ? load['achievedPerSec'] : undefined;
  const throughputMeasured = numberAt('throughput.opsPerSecMeasured', th['opsPerSecMeasured'], ...path, 'throughput', 'opsPerSecMeasured');
  const throughputModeled = numberAt('throughput.opsPerSecModeled', th['opsPerSecModeled'], ...path, 'throughput', 'opsPerSecModeled');
  if (!isObj(r['throughput'])) notes.push(`${where}: no throughput`);
  const app = isObj(r['application']) ? r['application'] : undefined;
  const application: ApplicationView | undefined = app
    ? {
      unit: text(app['unit'], 'ios'),
      perSec: numberAt(`application.perSecModeled (${text(app['unit'], 'ios')}/s)`, app['perSecModeled'], ...path, 'application', 'perSecModeled'),
      bytesPerSec: numberAt('application.bytesPerSecModeled', app['bytesPerSecModeled'], ...path, 'application', 'bytesPerSecModeled'),
      bottleneck: text(app['bottleneck'], '?'),
      bottleneckKind: text(app['bottleneckKind'], '?'),
      saturated: app['saturated'] === true,
      utilization: numbers(app['utilization'], ...path, 'application', 'utilization'),
    }
    : undefined;
  // Modeled figures first, as in every table; an application workload's throughput leads them.
  const figures: NumberAt[] = [
    ...(application ? [application.perSec, application.bytesPerSec] : []),
    numberAt('modeledElapsedNs', r['modeledElapsedNs'], ...path, 'modeledElapsedNs'),
    throughputModeled,
    numberAt('elapsedSec', r['elapsedSec'], ...path, 'elapsedSec'),
    throughputMeasured,
    ...leafNumbers(th, 'throughput', ['opsPerSecMeasured', 'opsPerSecModeled'], ...path, 'throughput'),
    // Deliveries per pSMMU have a table of their own.
    ...leafNumbers(inv, 'invalidations', ['deliveredPerPsmmu'], ...path, 'invalidations'),
    ...leafNumbers(r['dma'], 'dma', [], ...path, 'dma'),
    ...leafNumbers(load, 'load', [], ...path, 'load'),
  ];
  const resources = (Array.isArray(r['modeledResources']) ? r['modeledResources'] : []).map((m, i): ResourceView => {
    const o = isObj(m) ? m : {};
    const values = {} as Record<ResourceField, number>;
    for (const f of RESOURCE_FIELDS) values[f] = num(o[f]);
    return { pointer: pointer(...path, 'modeledResources', i), resource: text(o['resource'], '?'), values };
  });
  const processes = (Array.isArray(r['processes']) ? r['processes'] : []).map((p, i) => {
    const o = isObj(p) ? p : {};
    return {
      role: text(o['role'], '?'),
      name: text(o['name'], '?'),
      pid: numberAt('pid', o['pid'], ...path, 'processes', i, 'pid'),
      host: text(o['host'], '?'),
      metricsPort: typeof o['metricsPort'] === 'number' ? numberAt('metricsPort', o['metricsPort'], ...path, 'processes', i, 'metricsPort') : undefined,
    };
  });
  const counters = isObj(r['counters']) ? Object.entries(r['counters']).map(([process, c]) => ({ process, values: numbers(c, ...path, 'counters', process) })) : [];
  return {
    index,
    pointer: pointer(...path),
    model,
    point,
    pointLabel,
    label: pointLabel ? `${pointLabel} ${model}` : model,
    ops,
    mainOp: ops.find((o) => o === main),
    hops,
    figures,
    delivered: numbers(inv['deliveredPerPsmmu'], ...path, 'invalidations', 'deliveredPerPsmmu'),
    resources,
    processes,
    workloadCounters: numbers(r['workloadCounters'], ...path, 'workloadCounters'),
    counters,
    notes: (Array.isArray(r['notes']) ? r['notes'] : []).filter(isObj).map((n) => ({ code: text(n['code'], '?'), text: text(n['text'], '') })),
    throughputMeasured,
    throughputModeled,
    application,
    achievedMeasured: load ? numberAt('achieved measured', achieved?.['measured'], ...path, 'load', 'achievedPerSec', 'measured') : undefined,
    achievedModeled: load ? numberAt('achieved modeled', achieved?.['modeled'], ...path, 'load', 'achievedPerSec', 'modeled') : undefined,
    measured: measuredView(r['measured'], index),
  };
}

/** Every leaf of an object as dotted key and text, in the document's order. */
function flatten(x: unknown, prefix = ''): [string, string][] {
  if (!isObj(x)) return prefix ? [[prefix, text(x, JSON.stringify(x) ?? '')]] : [];
  return Object.entries(x).flatMap(([k, v]) => (isObj(v) ? flatten(v, `${prefix}${k}.`) : [[`${prefix}${k}`, Array.isArray(v) ? JSON.stringify(v) : text(v, 'null')] as [string, string]]));
}

/** Reads a results document (already known to carry the results schema) into what the report shows. */
export function reportData(document: object): ReportData {
  const doc = document as Readonly<Obj>;
  const notes: string[] = [];
  const sweep = isObj(doc['sweep']) ? doc['sweep'] : undefined;
  const sweepKeys = sweep && Array.isArray(sweep['keys']) ? sweep['keys'].filter((k): k is string => typeof k === 'string') : [];
  const runsRaw = Array.isArray(doc['runs']) ? doc['runs'] : [];
  if (!Array.isArray(doc['runs'])) notes.push('The document has no runs[].');
  const pointKeys = [...sweepKeys];
  for (const r of runsRaw) if (isObj(r)) for (const k of Object.keys(pointOf(r['point']))) if (!pointKeys.includes(k)) pointKeys.push(k);
  const short = shortKeys(pointKeys);
  const runs = runsRaw.map((r, i) => runView(r, i, pointKeys, short, notes));
  const satRaw = Array.isArray(doc['saturation']) ? doc['saturation'] : undefined;
  const saturation = (satRaw ?? []).map((x, i): SaturationView => {
    const s = isObj(x) ? x : {};
    const point = pointOf(s['point']);
    const pointLabel = describePoint(point, sweepKeys, short);
    const model = text(s['model'], '?');
    return {
      index: i,
      pointer: pointer('saturation', i),
      model,
      point,
      pointLabel,
      label: pointLabel ? `${pointLabel} ${model}` : model,
      ratePerSec: numberAt('ratePerSec', s['ratePerSec'], 'saturation', i, 'ratePerSec'),
      failedAtPerSec: numberAt('failedAtPerSec', s['failedAtPerSec'], 'saturation', i, 'failedAtPerSec'),
      metric: text(s['metric'], '?'),
      p99BoundUs: num(s['p99BoundUs']),
      op: text(s['op'], '?'),
      steps: num(s['steps']),
      stop: text(s['stop'], '?'),
      capPerSec: num(s['capPerSec']),
      capped: s['capped'] === true,
    };
  });
  const status = text(doc['status'], 'unknown');
  const err = isObj(doc['error']) ? { code: text(doc['error']['code'], '?'), message: text(doc['error']['message'], '') } : undefined;
  if (runs.length === 0) {
    notes.unshift(status === 'ok' ? 'No runs: there is nothing to chart.' : `No run finished before the command ${status === 'interrupted' ? 'was interrupted' : 'failed'}: there is nothing to chart.`);
  } else if (status !== 'ok') {
    notes.unshift(`The command ${status === 'interrupted' ? 'was interrupted' : 'failed'}: these are partial results (${runs.length} run${runs.length === 1 ? '' : 's'}).`);
  }
  if (sweep) {
    const planned = num(sweep['points']);
    const seen = new Set(runs.map((r) => JSON.stringify(sweepKeys.map((k) => r.point[k])))).size;
    if (runs.length > 0 && planned > seen) notes.push(`The sweep has ${planned} points; runs reached ${seen} of them.`);
    if (sweepKeys.length === 0) notes.push('sweep.keys is missing: the runs cannot be placed on a swept axis.');
    const pointless = runs.filter((r) => sweepKeys.some((k) => !(k in r.point))).length;
    if (pointless > 0) notes.push(`${pointless} run${pointless === 1 ? '' : 's'} lack the value of a swept key in their point.`);
  }
  for (const s of saturation) if (Number.isNaN(s.ratePerSec.value)) notes.push(`Saturation of ${s.label}: no rate tried passed (failed at ${Number.isNaN(s.failedAtPerSec.value) ? '?' : s.failedAtPerSec.value}/s).`);
  for (const s of saturation) {
    if (s.capped) notes.push(`Saturation of ${s.label}: stopped at the cap of ${Number.isNaN(s.capPerSec) ? '?' : s.capPerSec}/s (--cap): it passed there, so it saturates above the cap; the search did not find where.`);
    else if (s.stop === 'step-cap' && !Number.isNaN(s.ratePerSec.value) && Number.isNaN(s.failedAtPerSec.value)) {
      notes.push(`Saturation of ${s.label}: stopped after ${s.steps} steps (--steps) with every rate up to ${s.ratePerSec.value}/s passing: it saturates above that.`);
    }
  }
  const kind: ReportKind = satRaw ? (sweep ? 'sweep-saturate' : 'saturate') : sweep ? 'sweep' : runs.length > 1 ? 'compare' : 'run';
  const scenario = isObj(doc['scenario']) ? doc['scenario'] : undefined;
  if (!scenario) notes.push('The document has no scenario.');
  const profile = isObj(doc['profile']) ? doc['profile'] : {};
  const tool = isObj(doc['tool']) ? doc['tool'] : {};
  // What ran: each run's own workload and DMA mode (a sweep or a study may vary them), else the scenario's.
  const distinct = (values: unknown[]): string[] => [...new Set(values.filter((v): v is string => typeof v === 'string' && v !== ''))];
  const runObjs = runsRaw.filter(isObj);
  const scenarioWorkload = isObj(scenario?.['workload']) ? scenario['workload']['kind'] : undefined;
  const workloads = distinct(runObjs.map((r) => (isObj(r['workload']) ? r['workload']['kind'] : undefined)));
  const dmaModes = distinct(runObjs.map((r) => (isObj(r['dma']) ? r['dma']['mode'] : undefined)));
  const facts: [string, string][] = [
    ['schema', text(doc['schema'], '?')],
    ['tool', `${text(tool['name'], '?')} ${text(tool['version'], '?')}`],
    ['started', text(doc['startedAt'], '?')],
    ['finished', text(doc['finishedAt'], '?')],
    ['seed', text(doc['seed'], '?')],
    ['profile', `${text(profile['name'], '?')} (${text(profile['path'], '?')})`],
  ];
  if (sweep) facts.push(['sweep', `${sweepKeys.join(' x ') || '?'}, ${text(sweep['points'], '?')} points`]);
  return {
    kind,
    status,
    error: err,
    scenarioName: text(scenario?.['name'], 'scenario'),
    facts,
    scenario: flatten(scenario),
    pointKeys,
    sweepKeys,
    runs,
    saturation,
    sensitivity: sensitivityView(doc),
    notes,
    study: studyView(doc['study']),
    workloads: workloads.length > 0 ? workloads : distinct([scenarioWorkload]),
    dmaModes: dmaModes.length > 0 ? dmaModes : distinct([scenario?.['dma']]),
  };
}
