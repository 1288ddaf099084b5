import { TRANSITION_KINDS } from '../runtime/topology.js';
import { loadOf, stepMeasure } from './load.js';
import type { RunResult, SaturationMetric, SaturationResult } from './results.js';
import { judge } from './saturation-search.js';
import { wrap } from './wrap.js';
import { sweepOps } from './sweep.js';
import { MODEL } from '../designs/names.js';
import { hopTable, measuredOf, measuredTable, us as measuredUsText } from './measured-table.js';

function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return '-';
  if (x !== 0 && Math.abs(x) < 0.01) return x.toExponential(1);
  return x.toFixed(digits);
}

/** Three significant digits and k/M/G: a number that stays narrow however large (1.23M). */
function compact(x: number): string {
  const a = Math.abs(x);
  const [div, unit] = a >= 1e9 ? [1e9, 'G'] : a >= 1e6 ? [1e6, 'M'] : [1e3, 'k'];
  return `${Number((x / div).toPrecision(3))}${unit}`;
}

/** A count: exact below a million, then compact, so the column stays narrow (results.json is exact). */
function count(x: number): string {
  if (!Number.isFinite(x)) return '-';
  return Math.abs(x) >= 1e6 ? compact(x) : String(x);
}

/** Operations per second: whole numbers below ten million, then compact. */
function perSec(x: number): string {
  if (!Number.isFinite(x)) return '-';
  return Math.abs(x) >= 1e7 ? compact(x) : fmt(x, 0);
}

/** A modeled latency in us from ns, about four significant digits: at most 7 columns. */
function modeledUs(ns: number): string {
  const x = ns / 1000;
  if (!Number.isFinite(x)) return '-';
  const a = Math.abs(x);
  return a >= 1e5 ? compact(x) : fmt(x, a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3);
}

function ratio(x: number, base: number | undefined): string {
  if (base === undefined || base <= 0) return '-';
  const r = x / base;
  return `${r >= 1e4 ? compact(r) : r >= 10 ? r.toFixed(0) : r.toPrecision(2)}x`;
}

function render(rows: string[][], align: ('l' | 'r')[]): string {
  const widths = align.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (align[i] === 'l' ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd()).join('\n');
}

/** Transitions per operation as exit/user/ioctl/hw/direct. */
function transitions(t: RunResult['ops'][number]['transitions']): string {
  return TRANSITION_KINDS.map((k) => (t[k] % 1 === 0 ? String(t[k]) : t[k].toFixed(2))).join('/');
}

/** Bytes per second as bits: 21.4 Gbit/s. */
function bitsPerSec(bytes: number): string {
  if (!Number.isFinite(bytes)) return '-';
  const gbit = (bytes * 8) / 1e9;
  return gbit >= 1 ? `${Number(gbit.toPrecision(3))} Gbit/s` : `${Number((gbit * 1000).toPrecision(3))} Mbit/s`;
}

/** An application's bottleneck as the table names it: the resource, what it is, and saturated or not. */
function bottleneckText(a: NonNullable<RunResult['application']>): string {
  const u = a.utilization[a.bottleneck];
  return a.saturated ? `${a.bottleneck} (${a.bottleneckKind}, ${Math.round((u ?? 0) * 100)}%)` : `${a.bottleneck} latency (${a.bottleneckKind}, nothing saturated)`;
}

/**
 * Application throughput per model, when the workload has one (packet-stream, block): packets or
 * requests per second in modeled time and as bits, the resource that bounds it, and each against
 * the no-vIOMMU design (`none`) and bare metal (`host`) where they ran. Empty otherwise.
 */
export function applicationTable(runs: readonly RunResult[]): string {
  const apps = runs.filter((r) => r.application);
  const first = apps[0]?.application;
  if (!first) return '';
  const none = runs.find((r) => r.model === MODEL.none)?.application;
  const host = runs.find((r) => r.model === MODEL.host)?.application;
  const rows: string[][] = [['model', `${first.unit}/s modeled`, 'throughput', 'vs none', 'vs host', 'bottleneck']];
  for (const run of apps) {
    const a = run.application as NonNullable<RunResult['application']>;
    rows.push([
      run.model,
      perSec(a.perSecModeled),
      bitsPerSec(a.bytesPerSecModeled),
      run.model === MODEL.none ? 'baseline' : ratio(a.perSecModeled, none?.perSecModeled),
      run.model === MODEL.host ? 'baseline' : ratio(a.perSecModeled, host?.perSecModeled),
      bottleneckText(a),
    ]);
  }
  const modes = [...new Set(runs.map((r) => r.dma.mode))].join(', ');
  const legend =
    `Modeled: application throughput (DMA mode ${modes}), ${first.unit} per second in modeled time, from the queueing replay of every ` +
    'vCPU, lock, queue, device and link; vs none / vs host = against the no-vIOMMU design and bare metal (- when not run); ' +
    'bottleneck = the saturated resource and its utilization, or, when none is saturated, the one the I/Os in flight spend the most time on.';
  return `${wrap(legend, 120)}
${render(rows, ['l', 'r', 'r', 'r', 'r', 'l'])}`;
}

/**
 * A comparison, the two clocks apart. First the modeled figures, which lead: per model and
 * operation the transitions it paid and its modeled latency against the `none` baseline's, then
 * modeled throughput and the run's DMA. Then, in a section of its own, the measured figures: this
 * host's real IPC between the processes (measured-table.ts). No column holds both. Fits 120 columns.
 */
export function comparisonTable(runs: readonly RunResult[]): string {
  return `${modeledTable(runs)}\n\n${measuredTable(runs)}`;
}

/** The modeled part of a comparison: latency, throughput, and the run's DMA. */
export function modeledTable(runs: readonly RunResult[]): string {
  const base = runs.find((r) => r.model === MODEL.none);
  const header = ['model', 'op', 'n', TRANSITION_KINDS.map((k) => k[0]).join('/'), 'mean us', 'p99 us', 'vs none'];
  const rows: string[][] = [header];
  for (const run of runs) {
    for (const op of run.ops) {
      const b = base?.ops.find((o) => o.op === op.op);
      rows.push([run.model, op.op, count(op.count), transitions(op.transitions), modeledUs(op.modeledNs.mean), modeledUs(op.modeledNs.p99), run === base ? 'baseline' : ratio(op.modeledNs.mean, b?.modeledNs.mean)]);
    }
  }
  const modes = [...new Set(runs.map((r) => r.dma.mode))].join(', ');
  const legend =
    `Modeled: each path's steps priced by the cost profile and queued in modeled time (deterministic). DMA mode ${modes}. ` +
    'Per operation: transitions e/u/i/h/d = exit/user/ioctl/hw/direct; vs none = modeled mean against the no-vIOMMU baseline.';
  const ops = `${wrap(legend, 120)}\n${render(rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r'])}`;
  const tRows: string[][] = [['model', 'ops/s modeled', 'vs none', 'guest invalidations', 'delivered', 'fanout']];
  for (const run of runs) {
    const delivered = Object.values(run.invalidations.deliveredPerPsmmu).reduce((a, b) => a + b, 0);
    tRows.push([
      run.model,
      perSec(run.throughput.opsPerSecModeled),
      run === base ? 'baseline' : ratio(run.throughput.opsPerSecModeled, base?.throughput.opsPerSecModeled),
      String(run.invalidations.guestCommands),
      String(delivered),
      fmt(run.invalidations.fanout, 2),
    ]);
  }
  const thr = render(tRows, ['l', 'r', 'r', 'r', 'r', 'r']) + loadLines(runs);
  const dRows: string[][] = [['model', 'device DMA', 'IOTLB hits', 'walk reads', 'faults', 'after unmap', 'stale']];
  for (const run of runs) {
    const d = run.dma;
    dRows.push([run.model, String(d.translations), fmt(d.iotlbHitRate, 3), String(d.walkAccesses), String(d.faults), String(d.useAfterUnmap), String(d.staleTranslations)]);
  }
  // Device DMA follows the real clock (a device issues it at a rate per second of the run), so its
  // counts change from run to run: said above the table, which sits among the modeled ones.
  const dmaLegend =
    'Device DMA the pSMMUs served while the run lasted (real time: the counts follow how long the run took, not the modeled clock); ' +
    'faults, after unmap (accesses attempted after the unmap returned) and stale (translations served from a stale entry) check the design.';
  const dma = `${wrap(dmaLegend, 120)}\n${render(dRows, ['l', 'r', 'r', 'r', 'r', 'r', 'r'])}`;
  // An application workload leads with its throughput; the DMA API's operations follow.
  const app = applicationTable(runs);
  return `${app ? `${app}\n\n` : ''}${ops}\n\n${thr}\n\n${dma}`;
}

export { hopTable, measuredTable };

/**
 * Linux's dma_map_benchmark report lines (tools/dma/dma_map_benchmark.c) for one run, modeled and
 * then measured (this host's IPC, every operation of the first trial): average map and unmap
 * latency in microseconds with their standard deviation.
 */
export function dmaMapBenchmarkReport(run: RunResult): string {
  const w = run.workload;
  const op = (name: string): RunResult['ops'][number] | undefined => run.ops.find((o) => o.op === name);
  const lines = [`${run.model}: dma mapping benchmark: threads:${w.threads} seconds:${w.durationSec} granule: ${w.granulePages}`];
  for (const [what, pick] of [
    ['modeled', (o: RunResult['ops'][number]) => ({ mean: o.modeledNs.mean / 1000, stddev: o.modeledNs.stddev / 1000 })],
    ['measured', (o: RunResult['ops'][number]) => o.measuredUs],
  ] as const) {
    for (const name of ['map', 'unmap']) {
      const o = op(name);
      if (!o || o.count === 0) continue;
      const s = pick(o);
      const digits = what === 'modeled' ? 3 : 1;
      lines.push(`  ${what.padEnd(8)} average ${name} latency(us):${s.mean.toFixed(digits)} standard deviation:${s.stddev.toFixed(digits)}`);
    }
  }
  return lines.join('\n');
}

/**
 * A table whose header has a second line above it, each label over a span of columns (`from` to
 * `to`, inclusive, right-aligned over it); a span narrower than its label widens its first column.
 */
function renderSpanned(spans: { label: string; from: number; to: number }[], rows: string[][], align: ('l' | 'r')[]): string {
  const widths = align.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const spanWidth = (s: { from: number; to: number }): number => widths.slice(s.from, s.to + 1).reduce((a, b) => a + b, 0) + 2 * (s.to - s.from);
  for (const s of spans) widths[s.from] = (widths[s.from] ?? 0) + Math.max(0, s.label.length - spanWidth(s));
  const start = (i: number): number => widths.slice(0, i).reduce((a, b) => a + b + 2, 0);
  let top = '';
  for (const s of spans) top = top.padEnd(start(s.from) + spanWidth(s) - s.label.length) + s.label;
  const body = rows.map((r) => r.map((c, i) => (align[i] === 'l' ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd());
  return [top, ...body].join('\n');
}


/**
 * A sweep, the two clocks apart: first the modeled table, one row per operation of each run (map,
 * unmap, flush, static-setup, io, the @before and @after rows of a migration...: every operation
 * that ran, in the run's order): the run's first row carries the swept keys' values, the model, the
 * application throughput and bottleneck where the run has them, the run's modeled throughput and
 * invalidation fanout; its other rows only the operation, its transitions and modeled latency. Then
 * the measured one (the same rows: measured latency, and on the first the run's measured
 * throughput, this host's IPC). Each fits 120 columns with two swept keys.
 */
export function sweepTable(keys: readonly string[], runs: readonly RunResult[]): string {
  const last = (k: string): string => k.slice(k.lastIndexOf('.') + 1);
  // A key's last part names its column, unless two swept keys share it.
  const names = keys.map((k) => (keys.filter((x) => last(x) === last(k)).length > 1 ? k : last(k)));
  const n = keys.length;
  const numeric = keys.map((k) => runs.length > 0 && runs.every((r) => typeof r.point?.[k] === 'number'));
  const keyAlign = numeric.map((x): 'l' | 'r' => (x ? 'r' : 'l'));
  const app = runs.some((r) => r.application);
  const rows: string[][] = [[...names, 'model', ...(app ? ['app/s', 'bottleneck'] : []), 'op', TRANSITION_KINDS.map((k) => k[0]).join('/'), 'mean', 'p99', 'ops/s', 'fanout']];
  const mRows: string[][] = [[...names, 'model', 'op', 'p50', 'p99', 'ops/s']];
  for (const run of runs) {
    const a = run.application;
    const ran = sweepOps(run);
    const m = measuredOf(run);
    (ran.length > 0 ? ran : [undefined]).forEach((op, i) => {
      const first = i === 0;
      const values = keys.map((k) => (first ? String(run.point?.[k] ?? '-') : ''));
      rows.push([
        ...values,
        first ? run.model : '',
        ...(app ? (first ? [a ? perSec(a.perSecModeled) : '-', a ? `${a.bottleneck}${a.saturated ? '' : ' (latency)'}` : '-'] : ['', '']) : []),
        op?.op ?? '-',
        op ? transitions(op.transitions) : '-',
        op ? modeledUs(op.modeledNs.mean) : '-',
        op ? modeledUs(op.modeledNs.p99) : '-',
        first ? perSec(run.throughput.opsPerSecModeled) : '',
        first ? fmt(run.invalidations.fanout, 2) : '',
      ]);
      const mo = op ? m.ops.find((o) => o.op === op.op) : undefined;
      mRows.push([...values, first ? run.model : '', op?.op ?? '-', mo ? measuredUsText(mo.p50Us.value) : '-', mo ? measuredUsText(mo.p99Us.value) : '-', first ? perSec(m.opsPerSec.value) : '']);
    });
  }
  const extra = app ? 2 : 0;
  const spans = [{ label: 'modeled us', from: n + extra + 3, to: n + extra + 4 }];
  const points = new Set(runs.map((r) => JSON.stringify(r.point ?? {}))).size;
  const models = new Set(runs.map((r) => r.model)).size;
  const legend =
    `Sweep of ${keys.join(' x ')} (${points} point${points === 1 ? '' : 's'}) x ${models} model${models === 1 ? '' : 's'}. ` +
    (app ? 'Modeled, per run: application throughput (app/s: packets or requests per second) and its bottleneck; then ' : 'Modeled, per run: ') +
    'a row per operation that ran with its transitions per op e/u/i/h/d = exit/user/ioctl/hw/direct and modeled mean/p99 latency in us; ' +
    'on its first row, modeled throughput of all operations (ops/s) and ' +
    'fanout = commands delivered to the pSMMUs per guest invalidation.';
  const modeled = `${wrap(legend, 120)}\n${renderSpanned(spans, rows, [...keyAlign, 'l', ...(app ? (['r', 'l'] as const) : []), 'l', 'r', 'r', 'r', 'r', 'r'])}`;
  const mLegend = 'Measured (this host\'s real IPC between the simulator\'s processes, not real hardware): the same operation\'s p50/p99 in us and the run\'s operations per second.';
  const measured = `${wrap(mLegend, 120)}\n${renderSpanned([{ label: 'measured us', from: n + 2, to: n + 3 }], mRows, [...keyAlign, 'l', 'l', 'r', 'r', 'r'])}`;
  return `${modeled}\n\n${measured}`;
}

/** A saturation's bound as the tables print it: the resource, its kind and utilization. */
function boundByText(b: SaturationResult['boundBy']): string {
  return b ? `${b.resource} (${b.kind}, ${Math.round(b.utilization * 100)}%)` : '-';
}

/**
 * A sweep with --saturate: per point and model, the saturation rate found, the lowest failing rate
 * above it, and how the search ended.
 */
export function sweepSaturationTable(keys: readonly string[], results: readonly SaturationResult[]): string {
  const last = (k: string): string => k.slice(k.lastIndexOf('.') + 1);
  const names = keys.map((k) => (keys.filter((x) => last(x) === last(k)).length > 1 ? k : last(k)));
  const rows: string[][] = [[...names, 'model', 'op', 'saturation /s', 'failed at /s', 'steps', 'stop', 'bound by']];
  for (const r of results) {
    rows.push([
      ...keys.map((k) => String(r.point?.[k] ?? '-')),
      r.model,
      r.op,
      r.ratePerSec === null ? 'none passed' : fmtRate(r.ratePerSec),
      r.failedAtPerSec === null ? '-' : fmtRate(r.failedAtPerSec),
      String(r.steps),
      r.stop,
      boundByText(r.boundBy),
    ]);
  }
  const numeric = keys.map((k) => results.length > 0 && results.every((r) => typeof r.point?.[k] === 'number'));
  const align: ('l' | 'r')[] = [...numeric.map((x): 'l' | 'r' => (x ? 'r' : 'l')), 'l', 'l', 'r', 'r', 'r', 'l', 'l'];
  const first = results[0];
  const legend = first
    ? `Saturation rate per point and model: the highest open-loop arrival rate at which a run achieved >= 95% of the requested rate ` +
      `and kept its ${first.op} p99 under ${first.p99BoundUs} us, in ${first.metric} time ("failed at": the lowest failing rate above it; bound by: the resource busiest in the modeled replay of that failing step).`
    : 'No saturation search ran.';
  return `${wrap(legend, 120)}\n${render(rows, align)}`;
}

/** A rate per second as people read it: whole numbers, three significant digits below 100. */
export function fmtRate(x: number): string {
  if (!Number.isFinite(x)) return '-';
  return x >= 100 ? String(Math.round(x)) : String(Number(x.toPrecision(3)));
}

/** A line per open-loop run: the rate it was asked for against what it achieved in each clock. */
function loadLines(runs: readonly RunResult[]): string {
  const lines: string[] = [];
  for (const run of runs) {
    const load = run.load ?? loadOf(run);
    if (!load) continue;
    const pct = (x: number): string => `${Math.round((x / load.requestedPerSec) * 100)}%`;
    lines.push(
      `${run.model}: requested ${fmtRate(load.requestedPerSec)}/s (${load.arrivals}), achieved ${fmtRate(load.achievedPerSec.measured)}/s measured (${pct(load.achievedPerSec.measured)}), ` +
        `${fmtRate(load.achievedPerSec.modeled)}/s modeled (${pct(load.achievedPerSec.modeled)})`,
    );
  }
  return lines.length > 0 ? `\nopen loop:\n${lines.map((l) => `  ${l}`).join('\n')}` : '';
}

/**
 * The saturation rate each step run would give in `metric`'s clock, from the steps alone: the
 * highest rate that passed there, as a lower bound (`>=`), or `<` the lowest rate tried when none did.
 */
function fromSteps(steps: readonly RunResult[], metric: SaturationMetric, op: string, p99BoundUs: number): string {
  const rates = steps.map((r) => ({ rate: r.workload.rate, ok: judge(r.workload.rate, stepMeasure(r, metric, op), p99BoundUs).ok }));
  if (rates.length === 0) return '-';
  const passed = rates.filter((x) => x.ok).map((x) => x.rate);
  return passed.length > 0 ? `>=${fmtRate(Math.max(...passed))}` : `<${fmtRate(Math.min(...rates.map((x) => x.rate)))}`;
}

/**
 * `vmmsim saturate`, one row per model: its saturation rate in the clock the search judged, the
 * lowest rate above it that failed, the steps and why the search stopped; the other clock's rate
 * as far as the same steps tell; and the achieved rate and p99 of the step at the saturation rate.
 */
export function saturationTable(results: readonly SaturationResult[], runs: readonly RunResult[]): string {
  const rows: string[][] = [['model', 'op', 'modeled', 'measured', 'failed at', 'steps', 'stop', 'achieved', 'p99 us', 'achieved', 'p99 us']];
  for (const r of results) {
    const steps = runs.filter((x) => x.model === r.model && x.point?.['workload.rate'] !== undefined);
    const found = r.ratePerSec === null ? `<${fmtRate(Math.min(...steps.map((x) => x.workload.rate)))}` : fmtRate(r.ratePerSec);
    const at = steps.find((x) => x.workload.rate === r.ratePerSec);
    const m = at ? stepMeasure(at, 'modeled', r.op) : undefined;
    const t = at ? stepMeasure(at, 'measured', r.op) : undefined;
    rows.push([
      r.model,
      r.op,
      r.metric === 'modeled' ? found : fromSteps(steps, 'modeled', r.op, r.p99BoundUs),
      r.metric === 'measured' ? found : fromSteps(steps, 'measured', r.op, r.p99BoundUs),
      r.failedAtPerSec === null ? '-' : fmtRate(r.failedAtPerSec),
      String(r.steps),
      r.stop,
      m ? fmtRate(m.achievedPerSec) : '-',
      m ? fmt(m.p99Us, 3) : '-',
      t ? fmtRate(t.achievedPerSec) : '-',
      t ? fmt(t.p99Us) : '-',
    ]);
  }
  const first = results[0];
  const legend = first
    ? `Saturation rate (arrivals/s): the highest rate at which a run achieved >= 95% of the requested rate and kept its ` +
      `${first.op} p99 under ${first.p99BoundUs} us, searched in ${first.metric} time (doubling, then bisection to 5%; "failed at" is the ` +
      `lowest failing rate above it). The ${first.metric === 'modeled' ? 'measured' : 'modeled'} column reads the same steps in the other clock. ` +
      'Then the step at the saturation rate: achieved rate and p99, modeled and measured. Under the table, what bounds each rate: ' +
      'the resource busiest in the modeled replay of the lowest failing step, and its utilization.'
    : 'No saturation search ran.';
  const spans = [
    { label: 'saturation /s', from: 2, to: 3 },
    { label: 'at it, modeled', from: 7, to: 8 },
    { label: 'measured', from: 9, to: 10 },
  ];
  const bounds = results.filter((r) => r.boundBy).map((r) => `  ${r.model}: ${boundByText(r.boundBy)}`);
  const boundLines = bounds.length > 0 ? `\nbound by:\n${bounds.join('\n')}` : '';
  return `${wrap(legend, 120)}\n${renderSpanned(spans, rows, ['l', 'l', 'r', 'r', 'r', 'r', 'l', 'r', 'r', 'r', 'r'])}${boundLines}`;
}
