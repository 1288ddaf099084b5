/**
 * Chart primitives for the report, drawn as inline SVG text when the report is generated: scales and
 * ticks, horizontal stacked bars, and curves over a category or numeric axis. Each mark (bar segment,
 * curve, point) carries its datum as data-* attributes given by the caller, and a <title> that a
 * browser shows on hover. Nothing here knows about results documents.
 */
import { attrs, collect, dataAttrs, esc, type DataAttrs, type Out } from './html.js';

/** Colours that stay apart for the common case of up to ten series (then they repeat, dashed). */
export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'] as const;

export function colorOf(i: number): string {
  return PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length] as string;
}

/** A number as an axis or bar label: short, with k/M/G above 10 000. */
export function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return '?';
  const a = Math.abs(x);
  if (a === 0) return '0';
  if (a >= 1e9) return `${trim(x / 1e9)}G`;
  if (a >= 1e6) return `${trim(x / 1e6)}M`;
  if (a >= 1e4) return `${trim(x / 1e3)}k`;
  if (a >= 100) return String(Math.round(x));
  if (a >= 0.01) return trim(x);
  return x.toExponential(1);
}

function trim(x: number): string {
  return String(Number(x.toPrecision(3)));
}

/** Coordinates are rounded to 0.01 px: enough for any screen, and keeps the file small. */
function px(x: number): string {
  return String(Math.round(x * 100) / 100);
}

/** A map from data values to pixels. */
export interface Scale {
  (v: number): number;
  readonly ticks: readonly number[];
  readonly log: boolean;
}

/** A step of 1, 2 or 5 times a power of ten that splits `span` into about `count` parts. */
export function niceStep(span: number, count: number): number {
  if (!(span > 0)) return 1;
  const raw = span / Math.max(1, count);
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/** Linear scale over [min, max] widened to nice ticks; [0, 1] when there is no data. */
export function linearScale(min: number, max: number, r0: number, r1: number, count = 5): Scale {
  let lo = Number.isFinite(min) ? min : 0;
  let hi = Number.isFinite(max) ? max : 1;
  if (hi <= lo) hi = lo === 0 ? 1 : lo + Math.abs(lo);
  const step = niceStep(hi - lo, count);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const ticks: number[] = [];
  for (let t = lo; t <= hi + step / 2; t += step) ticks.push(Number(t.toPrecision(12)));
  const f = (v: number): number => r0 + ((v - lo) / (hi - lo)) * (r1 - r0);
  return Object.assign(f, { ticks, log: false });
}

/**
 * Base-10 log scale over [min, max] (both > 0) widened to powers of ten; ticks at the powers, and at
 * 2 and 5 times them when the range is two decades or less.
 */
export function logScale(min: number, max: number, r0: number, r1: number): Scale {
  const lo = Math.floor(Math.log10(min));
  let hi = Math.ceil(Math.log10(max));
  if (hi <= lo) hi = lo + 1;
  const ticks: number[] = [];
  for (let e = lo; e <= hi; e++) {
    const p = 10 ** e;
    ticks.push(Number(p.toPrecision(12)));
    if (hi - lo <= 2 && e < hi) ticks.push(Number((2 * p).toPrecision(12)), Number((5 * p).toPrecision(12)));
  }
  const f = (v: number): number => r0 + ((Math.log10(v) - lo) / (hi - lo)) * (r1 - r0);
  return Object.assign(f, { ticks, log: true });
}

/**
 * The scale for values that may span decades: log when every value is > 0 and they span at least
 * `decadeShare` times, else linear from 0 (or from the minimum when it is negative).
 */
export function autoScale(values: readonly number[], r0: number, r1: number, ratio = 20): Scale {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return linearScale(0, 1, r0, r1);
  const min = Math.min(...v);
  const max = Math.max(...v);
  if (min > 0 && max / min >= ratio) return logScale(min, max, r0, r1);
  return linearScale(Math.min(0, min), max, r0, r1);
}

/** Width of a label in pixels at the charts' 11 px font, near enough to lay out columns. */
function textWidth(s: string): number {
  return s.length * 6.6;
}

function clip(s: string, maxPx: number): string {
  const n = Math.max(4, Math.floor(maxPx / 6.6));
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}

const FONT = 'font-family="system-ui, sans-serif" font-size="11"';
const WIDTH = 760;

/** Legend items in rows below a plot: a swatch (filled, hatched with a pattern, or a line) and the label. */
function legend(items: readonly { label: string; color: string; dashed?: boolean; line?: boolean; hatch?: string; data?: DataAttrs }[], top: number): { svg: string; height: number } {
  let x = 8;
  let y = top;
  let out = '';
  for (const it of items) {
    const label = clip(it.label, WIDTH - 40);
    const w = 22 + textWidth(label) + 14;
    if (x + w > WIDTH && x > 8) {
      x = 8;
      y += 16;
    }
    const swatch = it.line
      ? `<line x1="${px(x)}" y1="${px(y + 6)}" x2="${px(x + 16)}" y2="${px(y + 6)}" stroke="${it.color}" stroke-width="2"${it.dashed ? ' stroke-dasharray="5 3"' : ''}/>`
      : `<rect x="${px(x)}" y="${px(y)}" width="12" height="12" fill="${it.color}"/>${it.hatch ? `<rect x="${px(x)}" y="${px(y)}" width="12" height="12" fill="url(#${it.hatch})" stroke="#000" stroke-width="0.8"/>` : ''}`;
    out += `<g class="legend-item"${dataAttrs(it.data)}>${swatch}<text x="${px(x + 20)}" y="${px(y + 10)}">${esc(label)}</text><title>${esc(it.label)}</title></g>`;
    x += w;
  }
  return { svg: out, height: items.length > 0 ? y - top + 20 : 0 };
}

export interface BarSegment {
  key: string;
  value: number;
  data: DataAttrs;
  title: string;
  /** Drawn hatched and outlined (StackedBarsSpec.hatch says what that means). */
  hatched?: boolean;
}

export interface BarRow {
  label: string;
  segments: readonly BarSegment[];
  data?: DataAttrs;
}

export interface StackedBarsSpec {
  /** What a bar's length counts (the value axis label). */
  unit: string;
  /** The segment keys in stacking order, with their colours (the legend). */
  keys: readonly { key: string; color: string }[];
  rows: readonly BarRow[];
  data: DataAttrs;
  label: string;
  /**
   * How hatched segments are told apart: the pattern's id (unique in the page) and its legend
   * label. Absent: no segment is hatched.
   */
  hatch?: { id: string; label: string };
}

/**
 * Horizontal stacked bars, one row each, segments stacked left to right in `keys` order. Every
 * segment is drawn, a zero-length one too, so each datum has its mark; a segment's width is its
 * value times the scale, the same for every bar. A row whose values are not all numbers shows "?".
 */
export function stackedBars(spec: StackedBarsSpec): string {
  return collect((out) => writeStackedBars(spec, out));
}

/** stackedBars, written piece by piece (a bar each) to `out`. */
export function writeStackedBars(spec: StackedBarsSpec, out: Out): void {
  const labelW = Math.min(360, Math.max(60, ...spec.rows.map((r) => textWidth(r.label))) + 10);
  const left = labelW + 8;
  const right = WIDTH - 56;
  const rowH = 18;
  const top = 8;
  const totals = spec.rows.map((r) => r.segments.reduce((n, s) => n + (Number.isFinite(s.value) ? s.value : 0), 0));
  const scale = linearScale(0, Math.max(0, ...totals), left, right);
  const plotBottom = top + rowH * spec.rows.length;
  const color = new Map(spec.keys.map((k) => [k.key, k.color]));
  // The legend first: the height in the opening tag depends on it.
  const hatch = spec.hatch;
  const lg = legend([...spec.keys.map((k) => ({ label: k.key, color: k.color })), ...(hatch ? [{ label: hatch.label, color: '#fff', hatch: hatch.id }] : [])], plotBottom + 42);
  const height = plotBottom + 42 + lg.height;
  out(`<svg xmlns="http://www.w3.org/2000/svg"${dataAttrs(spec.data)}${attrs({ role: 'img', 'aria-label': spec.label, viewBox: `0 0 ${WIDTH} ${px(height)}`, width: WIDTH, height: px(height) })} ${FONT}>`);
  if (hatch) {
    // Dark diagonal stripes over the segment's own colour.
    out(`<defs><pattern id="${esc(hatch.id)}" patternUnits="userSpaceOnUse" width="5" height="5" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="5" stroke="#000" stroke-width="1.6" stroke-opacity="0.55"/></pattern></defs>`);
  }
  for (const t of scale.ticks) {
    const x = scale(t);
    out(`<line class="grid" x1="${px(x)}" y1="${top}" x2="${px(x)}" y2="${px(plotBottom)}" stroke="#ddd"/><text x="${px(x)}" y="${px(plotBottom + 14)}" text-anchor="middle">${esc(fmtNum(t))}</text>`);
  }
  spec.rows.forEach((row, i) => {
    const y = top + i * rowH;
    let body = `<g class="bar"${dataAttrs(row.data)}><text x="${px(labelW)}" y="${px(y + 12)}" text-anchor="end">${esc(clip(row.label, labelW - 4))}<title>${esc(row.label)}</title></text>`;
    let cum = 0;
    let unknown = false;
    for (const s of row.segments) {
      const v = Number.isFinite(s.value) ? s.value : 0;
      unknown ||= !Number.isFinite(s.value);
      const x0 = scale(cum);
      const x1 = scale(cum + v);
      body += `<rect class="mark${s.hatched ? ' hatched' : ''}"${dataAttrs(s.data)} x="${px(x0)}" y="${px(y + 3)}" width="${px(x1 - x0)}" height="12" fill="${color.get(s.key) ?? '#999'}"><title>${esc(s.title)}</title></rect>`;
      if (s.hatched && hatch) body += `<rect class="hatch" x="${px(x0)}" y="${px(y + 3)}" width="${px(x1 - x0)}" height="12" fill="url(#${esc(hatch.id)})" stroke="#000" stroke-width="0.8" pointer-events="none"/>`;
      cum += v;
    }
    body += `<text x="${px(scale(cum) + 4)}" y="${px(y + 12)}">${unknown ? '?' : esc(fmtNum(cum))}</text></g>`;
    out(body);
  });
  out(`<text x="${px((left + right) / 2)}" y="${px(plotBottom + 30)}" text-anchor="middle">${esc(spec.unit)}</text>`);
  out(`${lg.svg}</svg>`);
}

export interface CurvePoint {
  /** A category's name, or a number on a numeric axis. */
  x: string | number;
  /** In the axis unit; NaN leaves a gap (the point is not drawn, its datum stays on the curve). */
  y: number;
  data: DataAttrs;
  title: string;
}

export interface Curve {
  label: string;
  color: string;
  dashed?: boolean;
  points: readonly CurvePoint[];
  data: DataAttrs;
}

export type XAxis = { kind: 'category'; label: string; categories: readonly string[] } | { kind: 'number'; label: string };

export interface LineChartSpec {
  x: XAxis;
  yLabel: string;
  curves: readonly Curve[];
  data: DataAttrs;
  label: string;
  /** Horizontal reference lines (a bound), in the y unit. */
  rules?: readonly { y: number; label: string }[];
}

/**
 * Curves over a category axis (evenly spaced, in the given order) or a numeric one (log when the
 * values span decades, ticks at the values themselves when there are few). The y axis is log when
 * the values span decades. A value of 0 or less on a log axis is drawn at the axis floor; its
 * datum keeps the true value.
 */
export function lineChart(spec: LineChartSpec): string {
  return collect((out) => writeLineChart(spec, out));
}

/** lineChart, written piece by piece (a curve each) to `out`. */
export function writeLineChart(spec: LineChartSpec, out: Out): void {
  const left = 64;
  const right = WIDTH - 20;
  const top = 10;
  const bottom = 230;
  const ys = spec.curves.flatMap((c) => c.points.map((p) => p.y)).concat((spec.rules ?? []).map((r) => r.y));
  const yScale = autoScale(ys, bottom, top);
  const yFloor = yScale.log ? (yScale.ticks[0] ?? 1) : Number.NEGATIVE_INFINITY;
  const yOf = (v: number): number => yScale(Math.max(v, yFloor));
  let xOf: (x: string | number) => number;
  let xTicks: { at: number; label: string }[];
  if (spec.x.kind === 'category') {
    const cats = spec.x.categories;
    const step = (right - left) / Math.max(1, cats.length);
    const pos = new Map(cats.map((c, i) => [c, left + step * (i + 0.5)]));
    xOf = (x) => pos.get(String(x)) ?? Number.NaN;
    xTicks = cats.map((c) => ({ at: pos.get(c) as number, label: c }));
  } else {
    const xs = [...new Set(spec.curves.flatMap((c) => c.points.map((p) => Number(p.x))).filter((x) => Number.isFinite(x)))].sort((a, b) => a - b);
    const min = xs[0] ?? 0;
    const max = xs[xs.length - 1] ?? 1;
    const inner = (max - min) * 0.04 || 1;
    const scale = min > 0 && max / min >= 8 ? logScale(min, max, left + 12, right - 12) : linearScale(min - inner, max + inner, left + 12, right - 12);
    // A log scale widened to whole decades would leave the ends empty: place the values themselves.
    const f = scale.log ? (v: number): number => left + 12 + ((Math.log10(v) - Math.log10(min)) / (Math.log10(max) - Math.log10(min) || 1)) * (right - left - 24) : scale;
    xOf = (x) => f(Number(x));
    xTicks = (xs.length <= 12 ? xs : scale.ticks.filter((t) => t >= min && t <= max)).map((t) => ({ at: f(t), label: fmtNum(t) }));
  }
  // The legend first: the height in the opening tag depends on it.
  const lg = legend(
    spec.curves.map((c) => ({ label: c.label, color: c.color, dashed: c.dashed ?? false, line: true })),
    bottom + 44,
  );
  const height = bottom + 44 + lg.height;
  out(`<svg xmlns="http://www.w3.org/2000/svg"${dataAttrs(spec.data)}${attrs({ role: 'img', 'aria-label': spec.label, viewBox: `0 0 ${WIDTH} ${px(height)}`, width: WIDTH, height: px(height) })} ${FONT}>`);
  let body = '';
  for (const t of yScale.ticks) {
    const y = yScale(t);
    body += `<line class="grid" x1="${left}" y1="${px(y)}" x2="${right}" y2="${px(y)}" stroke="#ddd"/><text x="${left - 4}" y="${px(y + 4)}" text-anchor="end">${esc(fmtNum(t))}</text>`;
  }
  for (const t of xTicks) body += `<text x="${px(t.at)}" y="${bottom + 14}" text-anchor="middle">${esc(clip(t.label, 120))}</text>`;
  body += `<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="#888"/><line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#888"/>`;
  body += `<text x="${px((left + right) / 2)}" y="${bottom + 32}" text-anchor="middle">${esc(spec.x.label)}</text>`;
  body += `<text transform="translate(14 ${px((top + bottom) / 2)}) rotate(-90)" text-anchor="middle">${esc(spec.yLabel)}</text>`;
  for (const r of spec.rules ?? []) {
    if (!Number.isFinite(r.y)) continue;
    const y = yOf(r.y);
    body += `<g class="rule"><line x1="${left}" y1="${px(y)}" x2="${right}" y2="${px(y)}" stroke="#000" stroke-dasharray="2 3"/><text x="${right - 2}" y="${px(y - 3)}" text-anchor="end">${esc(r.label)}</text></g>`;
  }
  if (!ys.some((y) => Number.isFinite(y))) body += `<text x="${px((left + right) / 2)}" y="${px((top + bottom) / 2)}" text-anchor="middle">no data</text>`;
  out(body);
  for (const c of spec.curves) {
    let d = '';
    let pen = false;
    let marks = '';
    for (const p of c.points) {
      const x = xOf(p.x);
      const drawn = Number.isFinite(p.y) && Number.isFinite(x);
      if (drawn) {
        d += `${pen ? 'L' : 'M'}${px(x)} ${px(yOf(p.y))}`;
        marks += `<circle class="mark"${dataAttrs(p.data)} cx="${px(x)}" cy="${px(yOf(p.y))}" r="3" fill="${c.color}"><title>${esc(p.title)}</title></circle>`;
      } else {
        // No value: a hollow mark on the x axis (a search where no rate passed), and the datum stays.
        const where = Number.isFinite(x) ? ` cx="${px(x)}" cy="${bottom}" r="3" fill="#fff" stroke="${c.color}"` : ' r="0"';
        marks += `<circle class="mark missing"${dataAttrs(p.data)}${where}><title>${esc(p.title)}</title></circle>`;
      }
      pen = drawn;
    }
    out(`<g class="curve"${dataAttrs(c.data)}><path d="${d}" fill="none" stroke="${c.color}" stroke-width="1.5"${c.dashed ? ' stroke-dasharray="5 3"' : ''}/>${marks}<title>${esc(c.label)}</title></g>`);
  }
  out(`${lg.svg}</svg>`);
}
