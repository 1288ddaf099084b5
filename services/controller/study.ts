/**
 * Studies: a question engineers argue about, as data (scenarios/studies/NAME.yaml), and what
 * answers it. A study names a base scenario, parts (each a set of designs and scenario values,
 * lists swept as a cross product), the figures that answer the question and the pairs of designs
 * whose order matters. This module loads and checks a study, plans its runs, and writes the answer
 * as a kernel mailing list carries numbers: plain text of at most ANSWER_COLUMNS columns.
 */
import { existsSync, readdirSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { PINNED } from '../cost/steps.js';
import { designOf } from '../designs/registry.js';
import { VmmsimError } from '../runtime/errors.js';
import { packageRoot } from '../runtime/paths.js';
import { MODELS, type ModelName, type Scenario } from '../scenario/schema.js';
import type { ApplicationResult } from './application.js';
import type { OpResult, ResultsDoc, RunResult } from './results.js';
import { loadYamlFile } from './scenario-load.js';
import { crossProduct, valueAt, type SweptKey } from './sweep.js';

/** The widest line of answer.txt: what a mailing-list reply quotes without wrapping. */
export const ANSWER_COLUMNS = 72;

/** Where the shipped studies are: scenarios/studies/ of the installation. */
export function studiesDir(): string {
  return join(packageRoot(), 'scenarios', 'studies');
}

/** A scenario value as a study gives it: one value, or a list swept as a cross product. */
export type StudyValue = string | number | boolean | (string | number | boolean)[];

export interface StudyPart {
  /** Names the part in tables, results (runs[].point.part) and the answer. */
  label: string;
  models: ModelName[];
  /** Scenario keys (dotted) over the base scenario; a list is swept. */
  set: Record<string, StudyValue>;
  /** Keys set over the study's quick values under --quick, for this part only. */
  quick: Record<string, StudyValue>;
}

/** A pair of designs whose order the question turns on: `a` against `b` in part `part`. */
export interface StudyPair {
  a: ModelName;
  b: ModelName;
  part: string;
}

export interface Study {
  name: string;
  /** The question, in words. */
  question: string;
  /** Where the question comes from (a thread, a series). */
  source: string;
  /** The base scenario file, resolved against the study's folder. */
  scenario: string;
  /** The design every other is read against in the answer's ratio column (absent: no such column). */
  baseline?: ModelName;
  /** The operations whose modeled latency answers the question, in the answer's order. */
  ops: string[];
  /** The operation whose transitions the answer shows. */
  transitionsOf: string;
  parts: StudyPart[];
  /** --quick: scenario values over every part's (a list replaces a part's list). */
  quick: Record<string, StudyValue>;
  pairs: StudyPair[];
  /** What to keep in mind reading the answer, one line each. */
  remarks: string[];
  /** The study file. */
  file: string;
}

const STUDY_KEYS = ['name', 'question', 'source', 'scenario', 'baseline', 'ops', 'transitionsOf', 'parts', 'quick', 'pairs', 'remarks'] as const;

function studyError(file: string, message: string): VmmsimError {
  return new VmmsimError('E_STUDY', `study ${file}: ${message}`);
}

/** The shipped studies' names, sorted. */
export function studyNames(dir = studiesDir()): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => basename(f, '.yaml'))
    .sort();
}

/** The study file of a name in the shipped folder, or a path. */
export function studyFile(nameOrPath: string, dir = studiesDir()): string {
  if (nameOrPath.endsWith('.yaml') || nameOrPath.includes('/')) return resolve(nameOrPath);
  if (!/^[a-z0-9][a-z0-9-]*$/.test(nameOrPath) || !studyNames(dir).includes(nameOrPath)) {
    throw new VmmsimError('E_STUDY', `no study named "${nameOrPath}"; studies: ${studyNames(dir).join(', ') || '(none found)'}`);
  }
  return join(dir, `${nameOrPath}.yaml`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function text(file: string, doc: Record<string, unknown>, key: string, required = true): string {
  const v = doc[key];
  if (v === undefined && !required) return '';
  if (typeof v !== 'string' || v.trim() === '') throw studyError(file, `${key} must be a non-empty string`);
  return v.trim().replace(/\s+/g, ' ');
}

function model(file: string, where: string, v: unknown): ModelName {
  if (typeof v !== 'string' || !(MODELS as readonly string[]).includes(v)) throw studyError(file, `${where}: "${String(v)}" is not a design (${MODELS.join(', ')})`);
  return v as ModelName;
}

function values(file: string, where: string, v: unknown): Record<string, StudyValue> {
  if (v === undefined) return {};
  if (!isRecord(v)) throw studyError(file, `${where} must be a mapping of dotted scenario keys to values`);
  const out: Record<string, StudyValue> = {};
  for (const [k, x] of Object.entries(v)) {
    const scalar = (y: unknown): y is string | number | boolean => typeof y === 'string' || typeof y === 'number' || typeof y === 'boolean';
    if (k === 'model') throw studyError(file, `${where}: list the designs in models, not as the key model`);
    if (scalar(x) || (Array.isArray(x) && x.length > 0 && x.every(scalar))) out[k] = x;
    else throw studyError(file, `${where}.${k} must be a value or a non-empty list of values`);
  }
  return out;
}

/** Loads and checks a study file (every scenario it implies is checked when it is planned). */
export function loadStudy(file: string): Study {
  const doc = loadYamlFile(file);
  if (!isRecord(doc)) throw studyError(file, 'must be a mapping (name, question, scenario, parts...)');
  for (const k of Object.keys(doc)) if (!(STUDY_KEYS as readonly string[]).includes(k)) throw studyError(file, `unknown key ${k}; keys: ${STUDY_KEYS.join(', ')}`);
  const name = text(file, doc, 'name');
  const rawParts = doc['parts'];
  if (!Array.isArray(rawParts) || rawParts.length === 0) throw studyError(file, 'parts must be a non-empty list');
  const parts = rawParts.map((p, i): StudyPart => {
    if (!isRecord(p)) throw studyError(file, `parts[${i}] must be a mapping (label, models, set, quick)`);
    const label = text(file, p, 'label');
    const models = p['models'];
    if (!Array.isArray(models) || models.length === 0) throw studyError(file, `parts[${i}].models must be a non-empty list of designs`);
    for (const k of Object.keys(p)) if (!['label', 'models', 'set', 'quick'].includes(k)) throw studyError(file, `parts[${i}]: unknown key ${k}; keys: label, models, set, quick`);
    return { label, models: models.map((m, j) => model(file, `parts[${i}].models[${j}]`, m)), set: values(file, `parts[${i}].set`, p['set']), quick: values(file, `parts[${i}].quick`, p['quick']) };
  });
  const labels = parts.map((p) => p.label);
  const twice = labels.find((l, i) => labels.indexOf(l) !== i);
  if (twice) throw studyError(file, `part label "${twice}" is used twice`);
  const ops = doc['ops'] ?? ['map', 'unmap'];
  if (!Array.isArray(ops) || ops.length === 0 || !ops.every((o) => typeof o === 'string')) throw studyError(file, 'ops must be a list of operation names');
  const rawPairs = doc['pairs'] ?? [];
  if (!Array.isArray(rawPairs)) throw studyError(file, 'pairs must be a list of [designA, designB, part]');
  const pairs = rawPairs.map((p, i): StudyPair => {
    if (!Array.isArray(p) || p.length !== 3) throw studyError(file, `pairs[${i}] must be [designA, designB, part]`);
    const part = String(p[2]);
    if (!labels.includes(part)) throw studyError(file, `pairs[${i}]: no part labelled "${part}"`);
    const pair = { a: model(file, `pairs[${i}][0]`, p[0]), b: model(file, `pairs[${i}][1]`, p[1]), part };
    const inPart = parts.find((x) => x.label === part) as StudyPart;
    for (const m of [pair.a, pair.b]) if (!inPart.models.includes(m)) throw studyError(file, `pairs[${i}]: part ${part} does not run ${m}`);
    return pair;
  });
  const remarks = doc['remarks'] ?? [];
  if (!Array.isArray(remarks) || !remarks.every((r) => typeof r === 'string')) throw studyError(file, 'remarks must be a list of strings');
  const scenario = resolve(dirname(file), text(file, doc, 'scenario'));
  if (!existsSync(scenario)) throw studyError(file, `its scenario ${scenario} does not exist`);
  return {
    name,
    question: text(file, doc, 'question'),
    source: text(file, doc, 'source', false),
    scenario,
    ...(doc['baseline'] !== undefined ? { baseline: model(file, 'baseline', doc['baseline']) } : {}),
    ops: ops as string[],
    transitionsOf: typeof doc['transitionsOf'] === 'string' ? doc['transitionsOf'] : 'unmap',
    parts,
    quick: values(file, 'quick', doc['quick']),
    pairs,
    remarks: (remarks as string[]).map((r) => r.trim().replace(/\s+/g, ' ')),
    file,
  };
}

/** One point of a part: its --set assignments and the swept keys' values. */
export interface StudyPoint {
  part: string;
  /** Index among the study's points, in order (parts, then each part's cross product). */
  index: number;
  sets: string[];
  /** The swept keys' assignments (key=value), shown in the answer beside the part's label. */
  swept: string[];
  models: ModelName[];
}

function assignments(set: Record<string, StudyValue>): { plain: string[]; swept: SweptKey[] } {
  const plain: string[] = [];
  const swept: SweptKey[] = [];
  for (const [key, v] of Object.entries(set)) {
    if (Array.isArray(v)) swept.push({ key, values: v.map(String) });
    else plain.push(`${key}=${String(v)}`);
  }
  return { plain, swept };
}

/** The study's points: each part's cross product, with --quick's values over the part's own. */
export function studyPoints(study: Study, quick: boolean): StudyPoint[] {
  const out: StudyPoint[] = [];
  for (const part of study.parts) {
    const set = quick ? { ...part.set, ...study.quick, ...part.quick } : part.set;
    const { plain, swept } = assignments(set);
    for (const point of crossProduct(swept)) out.push({ part: part.label, index: out.length, sets: [...plain, ...point], swept: point, models: part.models });
  }
  return out;
}

/** A point's label in tables: the part, then its swept values (short key names). */
export function pointLabel(part: string, values: Readonly<Record<string, string | number>>): string {
  const swept = Object.entries(values)
    .filter(([k]) => k !== 'part')
    .map(([k, v]) => `${k.split('.').pop() ?? k}=${v}`);
  return [part, ...swept].join(' ');
}

/** The scenario values a point swept, as its run records them (runs[].point). */
export function pointValues(part: string, scenario: Scenario, swept: readonly string[]): Record<string, string | number> {
  const v: Record<string, string | number> = { part };
  for (const a of swept) {
    const key = a.slice(0, a.indexOf('='));
    v[key] = valueAt(scenario, key);
  }
  return v;
}

// ---- the answer -------------------------------------------------------------------------------

/** A ratio's robustness, as `vmmsim sensitivity` gives it (absent when it did not run). */
export interface PairVerdict {
  a: string;
  b: string;
  part: string;
  /** What the ratio compares: an operation's modeled latency, or application throughput. */
  figure: string;
  /** b / a at the profile's own costs (the tables' figures). */
  base: number;
  p5: number;
  p50: number;
  p95: number;
  verdict: 'robust' | 'depends on';
  /** With `depends on`: the steps whose ranges move the ratio most. */
  steps: string[];
  /** Re-pricing was an approximation for this pair (lazy timers, open-loop backlog): why. */
  approximate?: string;
}

/** What results.json carries of a study (doc.study). */
export interface StudyRecord {
  name: string;
  question: string;
  source: string;
  quick: boolean;
  command: string;
  file: string;
  parts: { label: string; models: string[]; set: Record<string, StudyValue> }[];
  /** The operations whose modeled latency answers the question. */
  ops: string[];
  verdicts: PairVerdict[];
  /** answer.txt as written beside results.json. */
  answer: string;
}

/** Modeled mean of an operation in microseconds, as the answer prints it. */
export function fmtUs(ns: number): string {
  const us = ns / 1000;
  if (us >= 1000) return us.toFixed(0);
  if (us >= 100) return us.toFixed(1);
  if (us >= 10) return us.toFixed(2);
  return us.toFixed(3);
}

/** A per-operation transition count (a mean), as the answer prints it. */
export function fmtCount(x: number): string {
  if (Number.isInteger(x)) return String(x);
  // Below 0.01 two decimals would show 0.0: one significant digit says how rare it is.
  if (x < 0.01) return String(Number(x.toPrecision(1)));
  return x.toFixed(x < 10 ? 2 : 1).replace(/0$/, '');
}

/** A rate (per second), as the answer prints it: 3 significant digits with k, M or G. */
export function fmtRate(x: number): string {
  if (!Number.isFinite(x) || x <= 0) return '-';
  const units: [number, string][] = [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [d, u] of units) if (x >= d) return `${(x / d).toPrecision(3)}${u}`;
  return x.toPrecision(3);
}

/** A ratio, as the answer prints it. */
export function fmtRatio(x: number): string {
  if (!Number.isFinite(x) || x <= 0) return '-';
  // Below 0.1 two decimals would leave one digit: two significant ones say how far below.
  return x >= 100 ? `${x.toFixed(0)}x` : x >= 10 ? `${x.toFixed(1)}x` : x >= 0.1 ? `${x.toFixed(2)}x` : `${Number(x.toPrecision(2))}x`;
}

/** The application figure of a run (runs[].application), when its workload has one. */
export function applicationOf(run: RunResult): ApplicationResult | undefined {
  return run.application;
}

/** What bounds each design's application throughput at one point, and how busy it is. */
function boundLine(runs: readonly RunResult[]): string[] {
  const parts = runs.flatMap((r) => (r.application ? [`${r.model} ${r.application.bottleneck} ${Math.round((r.application.utilization[r.application.bottleneck] ?? 0) * 100)}%`] : []));
  return parts.length === 0 ? [] : wrap(`bound by: ${parts.join(', ')}`, ANSWER_COLUMNS, '    ').map((l, i) => (i === 0 ? `  ${l.trimStart()}` : l));
}

function opOf(run: RunResult, op: string): OpResult | undefined {
  return run.ops.find((o) => o.op === op && o.count > 0);
}

/** The modeled mean of an operation in ns, or undefined when it did not run. */
export function modeledMean(run: RunResult, op: string): number | undefined {
  return opOf(run, op)?.modeledNs.mean;
}

/**
 * An operation's own path in ns: the mean of its cost steps (its breakdown without the wait:
 * entries, what it queued for a vCPU, a lock or a queue). Under an application's load an
 * operation's latency is mostly its wait for its vCPU; its path is what the design costs.
 */
export function pathNs(run: RunResult, op: string): number | undefined {
  const o = opOf(run, op);
  if (!o) return undefined;
  if (o.breakdown.length === 0) return o.modeledNs.mean;
  return Math.round(o.breakdown.filter((e) => !e.step.startsWith('wait:')).reduce((sum, e) => sum + e.ns, 0) * 1000) / 1000;
}

/**
 * The operations a block's columns show for one the study names: the operation itself where its
 * runs have it, else its rows before and after a live migration (op@before, op@after).
 */
export function blockOps(runs: readonly RunResult[], ops: readonly string[]): string[] {
  const has = (name: string): boolean => runs.some((r) => opOf(r, name) !== undefined);
  return ops.flatMap((op) => (has(op) ? [op] : [`${op}@before`, `${op}@after`].filter(has)));
}

/** A column heading of at most 9 characters for an operation (unmap@after: `unmap aft`). */
function opHeading(op: string): string {
  const [name, when] = op.split('@');
  return when ? `${(name ?? '').slice(0, 5)} ${when.slice(0, 3)}` : `${op.slice(0, 6)} us`;
}

function transitions(run: RunResult, op: string): string {
  const t = opOf(run, op)?.transitions;
  if (!t) return '-';
  return [t.exit, t.user, t.ioctl, t.hw, t.direct].map(fmtCount).join('/');
}

/** Wraps words to lines of at most `width` columns, each after `indent`. */
export function wrap(words: string, width: number, indent = ''): string[] {
  const lines: string[] = [];
  let line = '';
  for (const w of words.split(/\s+/).filter(Boolean)) {
    const next = line === '' ? indent + w : `${line} ${w}`;
    if (next.length > width && line !== '') {
      lines.push(line);
      line = indent + w;
    } else line = next;
  }
  if (line !== '') lines.push(line);
  // A word longer than the width (a path) is cut, never left to overflow.
  return lines.flatMap((l) => (l.length <= width ? [l] : chunk(l, width, indent)));
}

function chunk(l: string, width: number, indent: string): string[] {
  const out = [l.slice(0, width)];
  for (let i = width; i < l.length; i += width - indent.length) out.push(indent + l.slice(i, i + width - indent.length));
  return out;
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

/** The figure of a run that the baseline column compares: application throughput, else the last op's path. */
function compared(run: RunResult, ops: readonly string[]): { value: number; higherIsBetter: boolean } | undefined {
  const app = applicationOf(run);
  if (app) return { value: app.perSecModeled, higherIsBetter: true };
  const op = ops[ops.length - 1];
  const ns = op === undefined ? undefined : pathNs(run, op);
  return ns === undefined ? undefined : { value: ns, higherIsBetter: false };
}

/** One block's columns: the operations shown, and the one whose transitions are shown. */
interface Columns {
  ops: string[];
  transitionsOf: string;
  /** Width of the transitions column: its heading or its longest cell. */
  tWidth: number;
  /** The baseline design ran at this point: the `vs base` column. */
  vsBase: boolean;
  /** Transitions too wide for one line: each row's go on a line of their own under it. */
  split: boolean;
}

function columnsOf(runs: readonly RunResult[], study: Study): Columns {
  const ops = blockOps(runs, study.ops);
  const t = blockOps(runs, [study.transitionsOf]);
  const transitionsOf = t[t.length - 1] ?? study.transitionsOf;
  const tWidth = Math.max(14, ...runs.map((r) => transitions(r, transitionsOf).length));
  return { ops: ops.length > 0 ? ops : [...study.ops], transitionsOf, tWidth, vsBase: study.baseline !== undefined && runs.some((r) => r.model === study.baseline), split: false };
}

const OP_WIDTH = 9;

/**
 * The answer's table rows for one point: a row per design, with the figures the study names and,
 * against the baseline design, the ratio (throughput: design / baseline; latency: design / baseline).
 */
function pointRows(runs: readonly RunResult[], study: Study, cols: Columns, withApp: boolean): string[] {
  const base = study.baseline ? runs.find((r) => r.model === study.baseline) : undefined;
  const baseFig = base ? compared(base, cols.ops) : undefined;
  return runs.flatMap((r) => {
    const cells = [pad(r.model, 19)];
    for (const op of cols.ops) {
      const ns = pathNs(r, op);
      cells.push(pad(ns === undefined ? '-' : fmtUs(ns), OP_WIDTH, true));
    }
    if (!cols.split) cells.push(pad(transitions(r, cols.transitionsOf), cols.tWidth, true));
    cells.push(pad(fmtRate(withApp ? (applicationOf(r)?.perSecModeled ?? 0) : r.throughput.opsPerSecModeled), 7, true));
    if (cols.vsBase) {
      const fig = compared(r, cols.ops);
      const ratio = fig && baseFig && baseFig.value > 0 ? fig.value / baseFig.value : Number.NaN;
      cells.push(pad(fmtRatio(ratio), 7, true));
    }
    const row = `  ${cells.join(' ')}`.trimEnd();
    return cols.split ? [row, `    ${cols.transitionsOf} e/u/i/h/d: ${transitions(r, cols.transitionsOf)}`] : [row];
  });
}

function header(cols: Columns, withApp: boolean): string[] {
  const t = cols.transitionsOf.includes('@') ? opHeading(cols.transitionsOf) : cols.transitionsOf.slice(0, 5);
  const cells = [pad('design', 19), ...cols.ops.map((op) => pad(opHeading(op), OP_WIDTH, true))];
  if (!cols.split) cells.push(pad(`${t.length + 10 <= cols.tWidth ? `${t} ` : ''}e/u/i/h/d`, cols.tWidth, true));
  cells.push(pad(withApp ? 'app/s' : 'ops/s', 7, true));
  if (cols.vsBase) cells.push(pad('vs base', 7, true));
  return [`  ${cells.join(' ')}`.trimEnd()];
}

function setupLines(doc: ResultsDoc): string[] {
  const s = doc.scenario;
  const t = s.topology;
  const w = s.workload;
  const lines = [
    ...wrap(`Setup: profile ${doc.profile.name} (${doc.profile.arch}); paths follow Linux ${PINNED.linux} and QEMU ${PINNED.qemu}; modeled time, seed ${doc.seed}.`, ANSWER_COLUMNS),
    ...wrap(
      `Base: ${w.kind}, ${w.threads} vCPU${w.threads === 1 ? '' : 's'}, ${w.granulePages} page${w.granulePages === 1 ? '' : 's'} per I/O, ${w.ops} ops, dma=${s.dma}; ` +
        `${t.vms} VM, ${t.psmmus} pSMMU, ${t.devicesPerPsmmu} device per pSMMU, vSMMU ${t.vsmmu}.`,
      ANSWER_COLUMNS,
    ),
  ];
  return lines;
}

/**
 * answer.txt: the question, the setup, a table per point (the figures that answer it), the
 * robustness verdict of each pair, what is exploration rather than upstream, and the command that
 * reproduces it. Every line fits ANSWER_COLUMNS.
 */
export function answerText(doc: ResultsDoc, study: Study, record: StudyRecord): string {
  const out: string[] = [];
  out.push(`vmmsim study ${study.name}${record.quick ? ' (quick)' : ''}`);
  out.push('');
  out.push(...wrap(`Q: ${study.question}`, ANSWER_COLUMNS));
  if (study.source) out.push(...wrap(`(from: ${study.source})`, ANSWER_COLUMNS));
  out.push('');
  out.push(...setupLines(doc));
  const withApp = doc.runs.some((r) => applicationOf(r) !== undefined);
  out.push('');
  out.push(...wrap(`Modeled figures: each operation's own path in us (the mean of its cost steps; what it queued for a vCPU, a lock or a queue is in results.json's breakdown), transitions per ${study.transitionsOf} (exits/user/ioctl/hw/direct; bef/aft: before and after a live migration), ${withApp ? 'application throughput per second (its unit in results.json)' : 'DMA-API operations per second'}${study.baseline ? `, and against ${study.baseline} (vs base: ${withApp ? 'throughput' : `${study.ops[study.ops.length - 1]} path`} ratio)` : ''}.`, ANSWER_COLUMNS));
  const byPoint = new Map<string, RunResult[]>();
  for (const r of doc.runs) {
    const label = pointLabel(String(r.point?.['part'] ?? ''), r.point ?? {});
    byPoint.set(label, [...(byPoint.get(label) ?? []), r]);
  }
  for (const [label, runs] of byPoint) {
    const part = study.parts.find((p) => p.label === String(runs[0]?.point?.['part'] ?? ''));
    const fixed = Object.entries(part?.set ?? {})
      .filter(([k, v]) => !Array.isArray(v) && !(record.quick && (k in study.quick || k in (part?.quick ?? {}))))
      .map(([k, v]) => `${k}=${String(v)}`);
    out.push('');
    out.push(...wrap(`[${label}]${fixed.length > 0 ? ` ${fixed.join(' ')}` : ''}`, ANSWER_COLUMNS, '  '));
    const cols = columnsOf(runs, study);
    let table = [...header(cols, withApp), ...pointRows(runs, study, cols, withApp)];
    if (table.some((l) => l.length > ANSWER_COLUMNS)) {
      const split = { ...cols, split: true };
      table = [...header(split, withApp), ...pointRows(runs, study, split, withApp)];
    }
    out.push(...table);
    out.push(...boundLine(runs));
  }
  out.push('');
  if (record.verdicts.length > 0) {
    out.push(...wrap('Robustness: each ratio at the profile\'s costs, then its p5-p95 over every cost step\'s range (Latin-hypercube samples), and whether the order holds in 95% of them:', ANSWER_COLUMNS));
    for (const v of record.verdicts) {
      const head = `${v.b} / ${v.a} [${v.part}] ${v.figure}: ${fmtRatio(v.base)} (${fmtRatio(v.p5)}-${fmtRatio(v.p95)}) ${v.verdict}${v.verdict === 'depends on' ? ` ${v.steps.join(', ')}` : ''}${v.approximate ? ` (approximate: ${v.approximate})` : ''}`;
      out.push(...wrap(head, ANSWER_COLUMNS, '    ').map((l, i) => (i === 0 ? `  ${l.trimStart()}` : l)));
    }
  }
  const notUpstream = [...new Set(doc.runs.map((r) => r.model))].filter((m) => designOf(m as ModelName).status !== 'upstream');
  if (notUpstream.length > 0) {
    out.push('');
    out.push('Not upstream:');
    for (const m of notUpstream) {
      const d = designOf(m as ModelName);
      out.push(...wrap(d.summary.startsWith(d.status) ? `${m}: ${d.summary}` : `${m}: ${d.status}. ${d.summary}`, ANSWER_COLUMNS, '    ').map((l, i) => (i === 0 ? `  ${l.trimStart()}` : l)));
    }
  }
  if (study.remarks.length > 0) {
    out.push('');
    out.push('Remarks:');
    for (const r of study.remarks) out.push(...wrap(r, ANSWER_COLUMNS, '    ').map((l, i) => (i === 0 ? `  ${l.trimStart()}` : l)));
  }
  out.push('');
  out.push('Reproduce:');
  out.push(...wrap(record.command, ANSWER_COLUMNS, '    ').map((l, i) => (i === 0 ? `  ${l.trimStart()}` : l)));
  return out.join('\n') + '\n';
}
