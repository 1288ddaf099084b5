/**
 * The report's charts, built from ReportData with the SVG primitives: transitions per operation,
 * latency percentile curves per operation and per hop, sweep scaling curves, and saturation rates.
 * Every mark names the JSON Pointer of the value it draws (data-pointer) and that value as the
 * document holds it (data-value; `null` when the document has none), so the page can be checked
 * against results.json.
 */
import { COST_STEPS } from '../../cost/steps.js';
import { TRANSITION_KINDS } from '../../runtime/topology.js';
import { datum, esc, pointer, type DataAttrs, type Out } from './html.js';
import { PERCENTILES, shortKeys, type HopView, type OpView, type ReportData, type RunView, type SummaryView } from './data.js';
import { colorOf, fmtNum, writeLineChart, writeStackedBars, type Curve, type CurvePoint, type XAxis } from './svg.js';
import { verdictWords, writeTornado, type SensitivityView } from './sensitivity.js';
import type { NumberAt } from './fields.js';

/** A chart with its heading and a sentence on how to read it. */
export interface Figure {
  id: string;
  title: string;
  caption: string;
  /**
   * Draws the chart to `out`. Called when the page writes the figure, so a large sweep's charts
   * (megabytes of SVG each, and their curves) are built one at a time and never held whole.
   */
  draw: (out: Out) => void;
}

function at(n: NumberAt): DataAttrs {
  return datum(n.pointer, n.value);
}

export const TRANSITION_COLORS: Readonly<Record<(typeof TRANSITION_KINDS)[number], string>> = {
  exit: '#d62728',
  user: '#ff7f0e',
  ioctl: '#9467bd',
  hw: '#1f77b4',
  direct: '#2ca02c',
};

/** One bar per run and operation, stacked by transition kind: what each operation pays. */
export function transitionsFigure(data: ReportData): Figure | undefined {
  const rows = data.runs.flatMap((run) =>
    run.ops.map((op) => ({
      label: `${run.label} · ${op.op}`,
      data: { run: run.index, op: op.op },
      segments: TRANSITION_KINDS.map((kind) => ({
        key: kind,
        value: op.transitions[kind],
        title: `${run.label} ${op.op}: ${Number.isFinite(op.transitions[kind]) ? op.transitions[kind] : '?'} ${kind} per operation`,
        data: { chart: 'transitions', run: run.index, model: run.model, op: op.op, kind, ...datum(`${op.pointer}/transitions/${kind}`, op.transitions[kind]) },
      })),
    })),
  );
  if (rows.length === 0) return undefined;
  return {
    id: 'transitions',
    title: 'Transitions per operation',
    caption:
      'Context transitions each operation paid, on average, stacked by kind: exit (guest to KVM), user (KVM to the VMM), ' +
      'ioctl (VMM into the kernel), hw (kernel to the physical SMMU), direct (guest to hardware with no trap).',
    draw: (out) => writeStackedBars({
      unit: 'transitions per operation',
      keys: TRANSITION_KINDS.map((k) => ({ key: k, color: TRANSITION_COLORS[k] })),
      rows,
      data: { chart: 'transitions' },
      label: 'Transitions per operation, stacked by kind',
    }, out),
  };
}

/** Hues of the layers a step's name starts with (steps.ts): guest, exits, VMM, host kernel, SMMU. */
const LAYER_HUES: readonly [string, number][] = [['guest.', 210], ['exit.', 0], ['vmm.', 30], ['host.', 330], ['ioctl.', 270], ['kernel.', 270], ['smmu.', 120]];

/** A colour per breakdown key: each layer a hue, its steps lighter and darker; waits grey. */
function breakdownColors(keys: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  const groups = new Map<string, string[]>();
  for (const k of keys) {
    const g = k.startsWith('wait:') ? 'wait' : (LAYER_HUES.find(([p]) => k.startsWith(p))?.[0] ?? 'other');
    groups.set(g, [...(groups.get(g) ?? []), k]);
  }
  for (const [g, ks] of groups) {
    const hue = LAYER_HUES.find(([p]) => p === g)?.[1];
    ks.forEach((k, i) => {
      const light = ks.length > 1 ? 32 + (i * 40) / (ks.length - 1) : 48;
      out.set(k, hue === undefined ? `hsl(0, 0%, ${Math.round(light + 10)}%)` : `hsl(${hue}, 62%, ${Math.round(light)}%)`);
    });
  }
  return out;
}

/** Breakdown keys in the order of steps.ts, unknown steps after them, then the waits by name. */
function breakdownKeys(data: ReportData): string[] {
  const all = [...new Set(data.runs.flatMap((r) => r.ops.flatMap((o) => o.breakdown.map((b) => b.step))))];
  const order = new Map(Object.keys(COST_STEPS).map((k, i) => [k, i]));
  const rank = (k: string): number => (k.startsWith('wait:') ? 2e6 : (order.get(k) ?? 1e6));
  return all.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Where the time goes: a bar per run and operation of its mean modeled time, stacked by cost step
 * (results.json breakdown[]) and then by each resource's queueing wait. Steps whose cost is an
 * assumption (confidence U) are hatched and outlined.
 */
export function breakdownFigure(data: ReportData): Figure | undefined {
  const keys = breakdownKeys(data);
  const colors = breakdownColors(keys);
  const rows = data.runs.flatMap((run) =>
    run.ops
      .filter((op) => op.count > 0 && op.breakdown.length > 0)
      .map((op) => ({
        label: `${run.label} · ${op.op}`,
        data: { run: run.index, op: op.op },
        segments: op.breakdown.map((b) => {
          const assumed = !b.wait && b.confidence === 'U';
          const what = b.wait ? `waited for ${b.step.slice('wait:'.length)} (queueing replay)` : `${b.step} x${b.perOp} per operation, confidence ${b.confidence}${assumed ? ' (an assumption)' : ''}`;
          return {
            key: b.step,
            value: b.ns / 1000,
            hatched: assumed,
            title: `${run.label} ${op.op}: ${Number.isFinite(b.ns) ? b.ns : '?'} ns, ${what}${b.functions.length > 0 ? `; ${b.functions.join('; ')}` : ''}`,
            data: { chart: 'breakdown', run: run.index, model: run.model, op: op.op, step: b.step, confidence: b.confidence, assumed: String(assumed), wait: String(b.wait), ...datum(`${b.pointer}/ns`, b.ns) },
          };
        }),
      })),
  );
  if (rows.length === 0) return undefined;
  return {
    id: 'breakdown',
    title: 'Where the modeled time goes',
    caption:
      'Mean modeled time of each operation in microseconds, stacked by what it is made of: a segment per cost step on its critical path, ' +
      'coloured by layer (guest blue, exits red, VMM orange, host kernel purple, host threads pink, SMMU green), then a grey segment per ' +
      'contended resource for what it waited in the queueing replay. Hatched, outlined segments are steps whose cost is an assumption ' +
      '(confidence U in the profile). Each bar adds up to the operation\'s modeled mean (results.json runs[].ops[].breakdown).',
    draw: (out) => writeStackedBars({
      unit: 'modeled time per operation (us)',
      keys: keys.map((k) => ({ key: k, color: colors.get(k) ?? '#999' })),
      rows,
      data: { chart: 'breakdown' },
      label: 'Modeled time per operation, stacked by cost step and queueing wait',
      hatch: { id: 'breakdown-assumed', label: 'hatched: cost is an assumption (U)' },
    }, out),
  };
}

/** The curve of one summary: a point per percentile, y in microseconds, data as the document holds it. */
function percentileCurve(label: string, color: string, dashed: boolean, s: SummaryView, base: string, toUs: number, unit: 'us' | 'ns', data: DataAttrs): Curve {
  const points: CurvePoint[] = PERCENTILES.map((p) => ({
    x: p.label,
    y: s[p.field] / toUs,
    title: `${label} ${p.label}: ${Number.isFinite(s[p.field]) ? s[p.field] : '?'} ${unit}`,
    data: { percentile: p.label, field: p.field, unit, ...datum(`${base}/${p.field}`, s[p.field]) },
  }));
  return { label, color, dashed, points, data };
}

/** Runs are told apart by colour, and by a dashed line once the palette repeats. */
function runStyle(run: RunView): { color: string; dashed: boolean } {
  return { color: colorOf(run.index), dashed: run.index >= 10 };
}

const CLOCKS = [
  { clock: 'modeled', field: 'modeledNs', toUs: 1000, unit: 'ns', what: 'modeled: the cost profile\'s time on the simulated hardware, after queueing' },
  { clock: 'measured', field: 'measuredUs', toUs: 1, unit: 'us', what: 'measured: this host\'s real IPC between the simulator\'s processes, every operation of the first trial' },
] as const;

/**
 * Latency percentile curves, per operation and clock (`clocks`: both by default): a curve per run,
 * p50 to max. Operations that never ran (count 0) have no distribution to draw.
 */
export function latencyFigures(data: ReportData, clocks: readonly ('measured' | 'modeled')[] = ['modeled', 'measured']): Figure[] {
  const names = [...new Set(data.runs.flatMap((r) => r.ops.map((o) => o.op)))];
  const figures: Figure[] = [];
  for (const name of names) {
    const withOp = data.runs.flatMap((run) => run.ops.filter((o) => o.op === name && o.count > 0).map((op): [RunView, OpView] => [run, op]));
    if (withOp.length === 0) continue;
    for (const c of CLOCKS) {
      if (!clocks.includes(c.clock)) continue;
      const curves = (): Curve[] =>
        withOp.map(([run, op]) => {
          const st = runStyle(run);
          return percentileCurve(run.label, st.color, st.dashed, op[c.field], `${op.pointer}/${c.field}`, c.toUs, c.unit, { chart: 'latency', run: run.index, model: run.model, op: name, clock: c.clock });
        });
      figures.push({
        id: `latency-${figures.length}`,
        title: `${name}: ${c.clock} latency percentiles`,
        caption: `Latency of each ${name} in microseconds at p50, p90, p99, p99.9 and max, a curve per run (${c.what}).`,
        draw: (out) => writeLineChart({
          x: { kind: 'category', label: 'percentile', categories: PERCENTILES.map((p) => p.label) },
          yLabel: `${name} latency (us)`,
          curves: curves(),
          data: { chart: 'latency', op: name, clock: c.clock },
          label: `${name} ${c.clock} latency percentiles`,
        }, out),
      });
    }
  }
  return figures;
}

/** Hop latency percentile curves: a chart per link crossing (from -> to), a curve per run that crossed it. */
export function hopFigures(data: ReportData): Figure[] {
  const keys = [...new Set(data.runs.flatMap((r) => r.hops.map((h) => `${h.from} -> ${h.to}`)))];
  const figures: Figure[] = [];
  for (const key of keys) {
    const crossed = (h: HopView): boolean => `${h.from} -> ${h.to}` === key && h.count > 0;
    if (!data.runs.some((run) => run.hops.some(crossed))) continue;
    const curves = (): Curve[] =>
      data.runs.flatMap((run) =>
        run.hops.filter(crossed).map((h) => {
          const st = runStyle(run);
          return percentileCurve(run.label, st.color, st.dashed, h.measuredUs, `${h.pointer}/measuredUs`, 1, 'us', { chart: 'hop-latency', run: run.index, model: run.model, from: h.from, to: h.to });
        }),
      );
    figures.push({
      id: `hop-${figures.length}`,
      title: `hop ${key}: measured one-way latency`,
      caption: `One-way latency of each crossing of the ${key} link in microseconds (measured), a curve per run.`,
      draw: (out) => writeLineChart({
        x: { kind: 'category', label: 'percentile', categories: PERCENTILES.map((p) => p.label) },
        yLabel: 'one-way latency (us)',
        curves: curves(),
        data: { chart: 'hop-latency', hop: key },
        label: `hop ${key} latency percentiles`,
      }, out),
    });
  }
  return figures;
}

interface Metric {
  metric: string;
  title: string;
  yLabel: string;
  /** The drawn value (in the y unit) and the document's value behind it. */
  pick: (run: RunView) => { y: number; at: NumberAt } | undefined;
  /** A reference line (a saturation search's p99 bound) in the y unit. */
  rule?: { y: number; label: string };
}

function p99Metric(clock: 'measured' | 'modeled', rule: Metric['rule']): Metric {
  const field = clock === 'measured' ? 'measuredUs' : 'modeledNs';
  return {
    metric: `p99-${clock}`,
    title: `p99 of the main operation, ${clock}`,
    yLabel: 'p99 (us)',
    pick: (run) => {
      const op = run.mainOp;
      if (!op) return undefined;
      const value = op[field].p99;
      return { y: clock === 'measured' ? value : value / 1000, at: { name: `${op.op} p99`, pointer: `${op.pointer}/${field}/p99`, value } };
    },
    ...(rule ? { rule } : {}),
  };
}

/** The metrics drawn against a swept key: throughput and the main operation's p99 in both clocks, and the achieved rate of open-loop runs. */
function scalingMetrics(data: ReportData): Metric[] {
  const bounds = [...new Set(data.saturation.map((s) => `${s.metric} ${s.p99BoundUs}`))];
  const only = bounds.length === 1 ? data.saturation[0] : undefined;
  const rule = (clock: string): Metric['rule'] => (only && only.metric === clock && Number.isFinite(only.p99BoundUs) ? { y: only.p99BoundUs, label: `p99 bound ${only.p99BoundUs} us` } : undefined);
  const app = data.runs.find((r) => r.application)?.application;
  const metrics: Metric[] = [
    // An application workload's throughput leads.
    ...(app ? [{ metric: 'application-modeled', title: `application throughput (${app.unit}/s), modeled`, yLabel: `${app.unit}/s`, pick: (r: RunView) => (r.application ? { y: r.application.perSec.value, at: r.application.perSec } : undefined) }] : []),
    { metric: 'throughput-modeled', title: 'throughput, modeled', yLabel: 'operations/s', pick: (r) => ({ y: r.throughputModeled.value, at: r.throughputModeled }) },
    p99Metric('modeled', rule('modeled')),
    { metric: 'throughput-measured', title: 'throughput, measured', yLabel: 'operations/s', pick: (r) => ({ y: r.throughputMeasured.value, at: r.throughputMeasured }) },
    p99Metric('measured', rule('measured')),
  ];
  if (data.runs.some((r) => r.achievedModeled)) {
    metrics.push(
      { metric: 'achieved-modeled', title: 'achieved arrival rate, modeled', yLabel: 'arrivals/s', pick: (r) => (r.achievedModeled ? { y: r.achievedModeled.value, at: r.achievedModeled } : undefined) },
      { metric: 'achieved-measured', title: 'achieved arrival rate, measured', yLabel: 'arrivals/s', pick: (r) => (r.achievedMeasured ? { y: r.achievedMeasured.value, at: r.achievedMeasured } : undefined) },
    );
  }
  return metrics;
}

/**
 * The keys scaling curves run along: a sweep's swept keys; the requested rate of a saturation
 * search (its steps), where a sweep --saturate's swept keys tell its curves apart instead.
 */
export function scalingKeys(data: ReportData): string[] {
  if (data.kind === 'saturate' || data.kind === 'sweep-saturate') return data.pointKeys.includes('workload.rate') ? ['workload.rate'] : [];
  if (data.kind === 'sweep') return data.sweepKeys.filter((k) => data.runs.some((r) => k in r.point));
  return [];
}

/** Groups items into curves by model and every other key's value, in order of first appearance. */
function curvesBy<T extends { model: string; point: Record<string, string | number> }>(items: readonly T[], key: string, others: readonly string[]): { label: string; items: T[] }[] {
  const short = shortKeys([key, ...others]);
  const groups = new Map<string, { label: string; items: T[] }>();
  for (const it of items) {
    if (!(key in it.point)) continue;
    const rest = others.filter((k) => k in it.point).map((k) => `${short.get(k)}=${it.point[k]}`);
    const label = [it.model, ...rest].join(' ');
    const g = groups.get(label) ?? { label, items: [] };
    g.items.push(it);
    groups.set(label, g);
  }
  return [...groups.values()];
}

/** Orders points along an axis: numbers by value, strings as they first appear. */
function axisFor(key: string, values: readonly (string | number)[], label: string): { axis: XAxis; order: (a: string | number, b: string | number) => number } {
  if (values.every((v) => typeof v === 'number')) return { axis: { kind: 'number', label }, order: (a, b) => Number(a) - Number(b) };
  const categories = [...new Set(values.map(String))];
  return { axis: { kind: 'category', label, categories }, order: (a, b) => categories.indexOf(String(a)) - categories.indexOf(String(b)) };
}

/** Scaling curves: each metric against each swept key, a curve per model and combination of the other keys. */
export function scalingFigures(data: ReportData): Figure[] {
  const figures: Figure[] = [];
  for (const key of scalingKeys(data)) {
    const others = data.pointKeys.filter((k) => k !== key);
    const groups = curvesBy(data.runs, key, others);
    const { axis, order } = axisFor(key, data.runs.filter((r) => key in r.point).map((r) => r.point[key] as string | number), key === 'workload.rate' ? 'requested rate (workload.rate, arrivals/s)' : key);
    for (const m of scalingMetrics(data)) {
      const curves = (): Curve[] => groups.map((g, i) => ({
        label: g.label,
        color: colorOf(i),
        dashed: i >= 10,
        data: { chart: 'scaling', metric: m.metric, key, curve: g.label },
        points: [...g.items]
          .sort((a, b) => order(a.point[key] as string | number, b.point[key] as string | number) || a.index - b.index)
          .flatMap((run) => {
            const v = m.pick(run);
            if (!v) return [];
            const x = run.point[key] as string | number;
            return [
              {
                x,
                y: v.y,
                title: `${run.label}: ${m.title} ${Number.isFinite(v.at.value) ? v.at.value : '?'}`,
                data: { run: run.index, model: run.model, x: String(x), 'x-pointer': pointer('runs', run.index, 'point', key), ...at(v.at) },
              },
            ];
          }),
      }));
      figures.push({
        id: `scaling-${figures.length}`,
        title: `${m.title} against ${key}`,
        caption: m.metric.startsWith('p99')
          ? `The p99 of each run's main operation (unmap, or the workload's own) in microseconds, against ${key}.`
          : `Each run's ${m.title} against ${key}; each map and each unmap counts as one operation.`,
        draw: (out) => writeLineChart({ x: axis, yLabel: m.yLabel, curves: curves(), data: { chart: 'scaling', metric: m.metric, key }, label: `${m.title} against ${key}`, ...(m.rule ? { rules: [m.rule] } : {}) }, out),
      });
    }
  }
  return figures;
}

/**
 * Saturation rates: a bar per search (point and model), and with a sweep, the rate against each
 * swept key, a curve per model and combination of the other keys. A search where no rate passed
 * has an empty bar and a gap in its curve.
 */
export function saturationFigures(data: ReportData): Figure[] {
  if (data.saturation.length === 0) return [];
  const figures: Figure[] = [
    {
      id: 'saturation-rates',
      title: 'Saturation rates',
      caption:
        'The highest open-loop arrival rate at which a run achieved at least 95% of the requested rate and kept the p99 of the judged ' +
        'operation under the bound, in the clock the search judged ("?": no rate tried passed).',
      draw: (out) => writeStackedBars({
        unit: 'saturation rate (arrivals/s)',
        keys: [{ key: 'saturation rate', color: colorOf(0) }],
        rows: data.saturation.map((s) => ({
          label: `${s.label} (${s.op}, ${s.metric})`,
          data: { index: s.index },
          segments: [
            {
              key: 'saturation rate',
              value: s.ratePerSec.value,
              title: `${s.label}: ${Number.isFinite(s.ratePerSec.value) ? `${s.ratePerSec.value}/s` : 'no rate passed'} (${s.stop}, ${s.steps} steps)`,
              data: { chart: 'saturation', index: s.index, model: s.model, ...at(s.ratePerSec) },
            },
          ],
        })),
        data: { chart: 'saturation' },
        label: 'Saturation rate per search',
      }, out),
    },
  ];
  for (const key of data.sweepKeys) {
    const items = data.saturation.filter((s) => key in s.point);
    if (items.length === 0) continue;
    const others = data.sweepKeys.filter((k) => k !== key);
    const { axis, order } = axisFor(key, items.map((s) => s.point[key] as string | number), key);
    const curves: Curve[] = curvesBy(items, key, others).map((g, i) => ({
      label: g.label,
      color: colorOf(i),
      dashed: i >= 10,
      data: { chart: 'saturation-curve', key, curve: g.label },
      points: [...g.items]
        .sort((a, b) => order(a.point[key] as string | number, b.point[key] as string | number))
        .map((s) => ({
          x: s.point[key] as string | number,
          y: s.ratePerSec.value,
          title: `${s.label}: ${Number.isFinite(s.ratePerSec.value) ? `${s.ratePerSec.value}/s` : 'no rate passed'}`,
          data: { index: s.index, model: s.model, x: String(s.point[key]), ...at(s.ratePerSec) },
        })),
    }));
    figures.push({
      id: `saturation-${figures.length}`,
      title: `Saturation rate against ${key}`,
      caption: `Each search's saturation rate against ${key}, a curve per model and combination of the other swept keys.`,
      draw: (out) => writeLineChart({ x: axis, yLabel: 'saturation rate (arrivals/s)', curves, data: { chart: 'saturation-curve', key }, label: `saturation rate against ${key}` }, out),
    });
  }
  return figures;
}

/** A figure as HTML (heading, caption, chart), written to `out`. */
export function writeFigure(f: Figure, out: Out): void {
  out(`<figure class="chart" id="${esc(f.id)}"><figcaption><h3>${esc(f.title)}</h3><p>${esc(f.caption)}</p></figcaption>`);
  f.draw(out);
  out('</figure>');
}

/** A figure per comparison: its tornado, titled with the ratio's spread and its verdict. */
export function tornadoFigures(s: SensitivityView): Figure[] {
  return s.comparisons.map((c) => ({
    id: `tornado-${c.index}`,
    title: `${c.b} / ${c.a}: ${c.metric}`,
    caption:
      `Ratio ${fmtNum(c.base)} at the profile's costs, ${fmtNum(c.p5)} to ${fmtNum(c.p95)} (p5 to p95, median ${fmtNum(c.p50)}) over ${fmtNum(s.samples)} ` +
      `Latin-hypercube samples of every step across its range; ${verdictWords(c, s.samples)}. Each bar: that step alone at its range's lo and hi, every other at the profile's cost.`,
    draw: (out) => writeTornado(c, out),
  }));
}

/**
 * A study's answer as bars: the modeled mean of each operation that answers it, a bar per run
 * (design and point) and operation.
 */
export function studyFigure(data: ReportData): Figure | undefined {
  const ops = data.study?.ops ?? [];
  const rows = data.runs.flatMap((run) =>
    run.ops
      .filter((op) => ops.includes(op.op) && op.count > 0)
      .map((op) => ({
        label: `${run.label} · ${op.op}`,
        data: { run: run.index, op: op.op },
        segments: [{
          key: 'modeled mean',
          value: op.modeledNs.mean / 1000,
          title: `${run.label} ${op.op}: ${fmtNum(op.modeledNs.mean / 1000)} us modeled mean`,
          data: { chart: 'study', run: run.index, model: run.model, op: op.op, ...datum(`${op.pointer}/modeledNs/mean`, op.modeledNs.mean) },
        }],
      })),
  );
  if (rows.length === 0) return undefined;
  return {
    id: 'study',
    title: 'Modeled latency of the operations that answer the question',
    caption: 'Mean modeled latency per operation in microseconds, a bar per design, point and operation (answer.txt has the same figures).',
    draw: (out) => writeStackedBars({ unit: 'us (modeled mean)', keys: [{ key: 'modeled mean', color: '#1f77b4' }], rows, data: { chart: 'study' }, label: 'Modeled mean latency per operation' }, out),
  };
}
