/**
 * The report's sensitivity section (results.json `sensitivity`, from `vmmsim sensitivity` or
 * `vmmsim compare --sensitivity`): a tornado chart per comparison and its verdict. Read field by
 * field as the rest of the report is (data.ts): a missing or malformed value reads as NaN or a
 * placeholder, never throws. Every mark names the JSON Pointer of the value it draws.
 */
import { attrs, dataAttrs, datum, esc, pointer, type Out } from './html.js';
import { fmtNum, linearScale } from './svg.js';
import { isObj, num, text, type Obj } from './fields.js';





export interface TornadoBarView {
  pointer: string;
  step: string;
  ratioLo: number;
  ratioHi: number;
  swing: number;
}

export interface ComparisonView {
  index: number;
  pointer: string;
  a: string;
  b: string;
  metric: string;
  base: number;
  p5: number;
  p50: number;
  p95: number;
  holds: number;
  verdict: string;
  dependsOn: string[];
  approximate: boolean;
  tornado: TornadoBarView[];
  /** The base outside the samples' p5-p95: which side it lies on, and the steps leaning the samples away. */
  baseOutside: 'above' | 'below' | undefined;
  leaningOn: string[];
}

export interface SensitivityView {
  samples: number;
  profile: string;
  comparisons: ComparisonView[];
  /** Designs whose re-pricing is approximate, with why. */
  approximate: { model: string; code: string; text: string }[];
  /** Steps whose range is [lo, hi] with lo < hi. */
  varied: number;
}

/** The document's `sensitivity`, or undefined when it has none. */
export function sensitivityView(doc: Readonly<Obj>): SensitivityView | undefined {
  const s = doc['sensitivity'];
  if (!isObj(s)) return undefined;
  const comparisons = (Array.isArray(s['comparisons']) ? s['comparisons'] : []).map((x, i): ComparisonView => {
    const c = isObj(x) ? x : {};
    const tornado = (Array.isArray(c['tornado']) ? c['tornado'] : []).map((y, j): TornadoBarView => {
      const t = isObj(y) ? y : {};
      return { pointer: pointer('sensitivity', 'comparisons', i, 'tornado', j), step: text(t['step'], '?'), ratioLo: num(t['ratioLo']), ratioHi: num(t['ratioHi']), swing: num(t['swing']) };
    });
    return {
      index: i,
      pointer: pointer('sensitivity', 'comparisons', i),
      a: text(c['a'], '?'),
      b: text(c['b'], '?'),
      metric: text(c['metric'], '?'),
      base: num(c['base']),
      p5: num(c['p5']),
      p50: num(c['p50']),
      p95: num(c['p95']),
      holds: num(c['holds']),
      verdict: text(c['verdict'], '?'),
      dependsOn: (Array.isArray(c['dependsOn']) ? c['dependsOn'] : []).map((d) => text(d, '?')),
      approximate: c['approximate'] === true,
      tornado,
      baseOutside: c['baseOutside'] === 'above' || c['baseOutside'] === 'below' ? c['baseOutside'] : undefined,
      leaningOn: (Array.isArray(c['leaningOn']) ? c['leaningOn'] : []).map((d) => text(d, '?')),
    };
  });
  const approximate = (Array.isArray(s['designs']) ? s['designs'] : []).filter(isObj).flatMap((d) =>
    (Array.isArray(d['approximate']) ? d['approximate'] : []).filter(isObj).map((r) => ({ model: text(d['model'], '?'), code: text(r['code'], '?'), text: text(r['text'], '') })),
  );
  const steps = Array.isArray(s['steps']) ? s['steps'].filter(isObj) : [];
  return { samples: num(s['samples']), profile: text(s['profile'], '?'), comparisons, approximate, varied: steps.filter((t) => num(t['hi']) > num(t['lo'])).length };
}

function px(x: number): string {
  return String(Math.round(x * 100) / 100);
}

const FONT = 'font-family="system-ui, sans-serif" font-size="11"';
const WIDTH = 760;
const LO_COLOR = '#1f77b4';
const HI_COLOR = '#ff7f0e';

/** A comparison's verdict in words. */
export function verdictWords(c: ComparisonView, samples: number): string {
  const share = Number.isFinite(c.holds) ? `${Math.round(c.holds * 100)}%` : '?';
  const v = c.verdict === 'robust' ? `robust: the order holds in ${share} of ${fmtNum(samples)} samples` : `depends on ${c.dependsOn.join(', ') || 'no single step'}: the order holds in ${share} of ${fmtNum(samples)} samples`;
  const lean = c.baseOutside
    ? `; the ratio at the profile's costs lies ${c.baseOutside} the samples' p5-p95: the samples lean ${c.baseOutside === 'above' ? 'lower' : 'higher'}${c.leaningOn.length > 0 ? ` on ${c.leaningOn.join(', ')}, whose ranges reach further on one side of their costs` : ''}`
    : '';
  return `${v}${c.approximate ? ' (approximate)' : ''}${lean}`;
}

/**
 * A tornado: a row per step (largest swing first), a bar from the ratio at the profile's costs to
 * the ratio with that step alone at its range's lo (blue) and at its hi (orange); a line at the
 * base ratio, and a dashed one at parity (1) when it is in view.
 */
export function writeTornado(c: ComparisonView, out: Out): void {
  const labelW = Math.min(300, Math.max(80, ...c.tornado.map((t) => t.step.length * 6.6)) + 10);
  const left = labelW + 8;
  const right = WIDTH - 56;
  const rowH = 18;
  const top = 8;
  const values = [c.base, ...c.tornado.flatMap((t) => [t.ratioLo, t.ratioHi])].filter(Number.isFinite);
  const scale = linearScale(Math.min(...values, c.base), Math.max(...values, c.base), left, right);
  const lo = scale.ticks[0] as number;
  const hi = scale.ticks[scale.ticks.length - 1] as number;
  const rows = Math.max(1, c.tornado.length);
  const plotBottom = top + rowH * rows;
  const height = plotBottom + 62;
  out(`<svg xmlns="http://www.w3.org/2000/svg"${dataAttrs({ chart: 'tornado', comparison: c.index, a: c.a, b: c.b, metric: c.metric })}${attrs({ role: 'img', 'aria-label': `tornado of ${c.b} / ${c.a} ${c.metric}`, viewBox: `0 0 ${WIDTH} ${px(height)}`, width: WIDTH, height: px(height) })} ${FONT}>`);
  for (const t of scale.ticks) {
    out(`<line class="grid" x1="${px(scale(t))}" y1="${top}" x2="${px(scale(t))}" y2="${px(plotBottom)}" stroke="#ddd"/><text x="${px(scale(t))}" y="${px(plotBottom + 14)}" text-anchor="middle">${esc(fmtNum(t))}</text>`);
  }
  if (lo <= 1 && 1 <= hi) out(`<line class="parity" x1="${px(scale(1))}" y1="${top}" x2="${px(scale(1))}" y2="${px(plotBottom)}" stroke="#555" stroke-dasharray="4 3"/>`);
  const x0 = Number.isFinite(c.base) ? scale(c.base) : left;
  if (c.tornado.length === 0) out(`<text x="${px(left)}" y="${px(top + 12)}">no step moves this ratio across its range</text>`);
  c.tornado.forEach((t, i) => {
    const y = top + i * rowH;
    let row = `<g class="bar"${dataAttrs({ step: t.step, swing: Number.isFinite(t.swing) ? t.swing : 'null' })}><text x="${px(labelW)}" y="${px(y + 12)}" text-anchor="end">${esc(t.step)}<title>${esc(t.step)}: swing ${fmtNum(t.swing)}</title></text>`;
    for (const [end, value, color] of [['lo', t.ratioLo, LO_COLOR], ['hi', t.ratioHi, HI_COLOR]] as const) {
      const xv = Number.isFinite(value) ? scale(value) : x0;
      const a = Math.min(x0, xv);
      row += `<rect class="mark"${dataAttrs({ chart: 'tornado', comparison: c.index, step: t.step, end, ...datum(`${t.pointer}/ratio${end === 'lo' ? 'Lo' : 'Hi'}`, value) })} x="${px(a)}" y="${px(y + 3)}" width="${px(Math.abs(xv - x0))}" height="12" fill="${color}" fill-opacity="0.85"><title>${esc(`${t.step} at its ${end}: ratio ${Number.isFinite(value) ? value : '?'}`)}</title></rect>`;
    }
    out(row + '</g>');
  });
  out(`<line class="mark base"${dataAttrs({ chart: 'tornado', comparison: c.index, end: 'base', ...datum(`${c.pointer}/base`, c.base) })} x1="${px(x0)}" y1="${top - 4}" x2="${px(x0)}" y2="${px(plotBottom + 2)}" stroke="#000" stroke-width="1.5"><title>at the profile's costs: ${esc(String(c.base))}</title></line>`);
  out(`<text x="${px((left + right) / 2)}" y="${px(plotBottom + 30)}" text-anchor="middle">${esc(`ratio ${c.b} / ${c.a} (${c.metric})`)}</text>`);
  const ly = plotBottom + 42;
  out(`<rect x="8" y="${ly}" width="12" height="12" fill="${LO_COLOR}"/><text x="26" y="${ly + 10}">step at its range's lo</text>`);
  out(`<rect x="170" y="${ly}" width="12" height="12" fill="${HI_COLOR}"/><text x="188" y="${ly + 10}">step at its range's hi</text>`);
  out(`<line x1="330" y1="${ly + 6}" x2="346" y2="${ly + 6}" stroke="#000" stroke-width="1.5"/><text x="352" y="${ly + 10}">at the profile's costs</text>`);
  out(`<line x1="490" y1="${ly + 6}" x2="506" y2="${ly + 6}" stroke="#555" stroke-dasharray="4 3"/><text x="512" y="${ly + 10}">parity (1)</text>`);
  out('</svg>');
}
