/**
 * The report's chart primitives: escaping, JSON Pointers, scales and ticks, and that each mark is
 * drawn where its datum says (bar widths proportional to values on one scale, higher values
 * higher on a curve, the category order kept), with its datum on it.
 */
import { describe, expect, it } from 'vitest';
import { attrs, dataAttrs, esc, pointer } from '../../services/controller/report/html.js';
import { autoScale, fmtNum, linearScale, logScale, niceStep, lineChart, stackedBars } from '../../services/controller/report/svg.js';

/** Every element of a tag name with its attributes, from SVG text. */
function elements(svg: string, tag: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const m of svg.matchAll(new RegExp(`<${tag}\\b([^>]*)>`, 'g'))) {
    const a: Record<string, string> = {};
    for (const x of (m[1] ?? '').matchAll(/([\w-]+)="([^"]*)"/g)) a[x[1] as string] = x[2] as string;
    out.push(a);
  }
  return out;
}

describe('escaping', () => {
  it('escapes the five characters that can open a tag or close an attribute', () => {
    expect(esc(`<img src=x onerror="a('&')">`)).toBe('&lt;img src=x onerror=&quot;a(&#39;&amp;&#39;)&quot;&gt;');
    expect(esc('plain text')).toBe('plain text');
  });

  it('escapes attribute values and refuses attribute names that are not plain', () => {
    expect(attrs({ title: '"><script>', skip: undefined })).toBe(' title="&quot;&gt;&lt;script&gt;"');
    expect(dataAttrs({ model: 'a"b', value: 3 })).toBe(' data-model="a&quot;b" data-value="3"');
    expect(() => dataAttrs({ 'x"y': 1 })).toThrow(/bad attribute name/);
    expect(() => dataAttrs({ Upper: 1 })).toThrow(/bad attribute name/);
  });

  it('builds JSON Pointers with ~ and / escaped (RFC 6901)', () => {
    expect(pointer('runs', 3, 'point', 'topology.psmmus')).toBe('/runs/3/point/topology.psmmus');
    expect(pointer('counters', 'a/b~c')).toBe('/counters/a~1b~0c');
  });
});

describe('scales', () => {
  it('picks steps of 1, 2 or 5 times a power of ten', () => {
    expect(niceStep(10, 5)).toBe(2);
    expect(niceStep(4, 5)).toBe(1);
    expect(niceStep(3e6, 5)).toBe(1e6);
    expect(niceStep(0.07, 5)).toBeCloseTo(0.02, 10);
  });

  it('widens a linear scale to ticks that cover the data and maps the ends to the range', () => {
    const s = linearScale(3, 97, 0, 100);
    expect(s.ticks[0]).toBeLessThanOrEqual(3);
    expect(s.ticks[s.ticks.length - 1]).toBeGreaterThanOrEqual(97);
    expect(s(s.ticks[0] as number)).toBeCloseTo(0, 9);
    expect(s(s.ticks[s.ticks.length - 1] as number)).toBeCloseTo(100, 9);
    expect(s(50)).toBeGreaterThan(s(10));
  });

  it('uses whole decades on a log scale and goes log only when values span decades', () => {
    const s = logScale(0.03, 11229, 0, 100);
    expect(s.ticks[0]).toBe(0.01);
    expect(s.ticks[s.ticks.length - 1]).toBe(100000);
    expect(s(1) - s(0.1)).toBeCloseTo(s(100) - s(10), 9);
    expect(autoScale([0.03, 11229], 0, 100).log).toBe(true);
    expect(autoScale([4, 5.4], 0, 100).log).toBe(false);
    expect(autoScale([0, 5000], 0, 100).log).toBe(false);
    expect(autoScale([], 0, 100).log).toBe(false);
  });

  it('labels numbers short', () => {
    expect(fmtNum(33333333.333)).toBe('33.3M');
    expect(fmtNum(479501)).toBe('480k');
    expect(fmtNum(4061)).toBe('4061');
    expect(fmtNum(0.03)).toBe('0.03');
    expect(fmtNum(0)).toBe('0');
    expect(fmtNum(Number.NaN)).toBe('?');
  });
});

describe('stacked bars', () => {
  const rows = [
    { label: 'nested-smmuv3 · unmap', segments: [{ key: 'exit', value: 1 }, { key: 'hw', value: 4 }] },
    { label: 'vcmdq · unmap', segments: [{ key: 'exit', value: 0 }, { key: 'hw', value: 0.5 }] },
    { label: 'broken', segments: [{ key: 'exit', value: Number.NaN }, { key: 'hw', value: 2 }] },
  ].map((r, i) => ({ label: r.label, segments: r.segments.map((s) => ({ ...s, title: `${r.label} ${s.key}`, data: { row: i, kind: s.key, value: s.value } })) }));
  const svg = stackedBars({ unit: 'per op', keys: [{ key: 'exit', color: '#f00' }, { key: 'hw', color: '#00f' }], rows, data: { chart: 't' }, label: 'bars' });
  const marks = elements(svg, 'rect').filter((r) => r['class'] === 'mark');

  it('draws every segment, a zero one too, with its datum', () => {
    expect(marks).toHaveLength(6);
    expect(marks.map((m) => `${m['data-row']}:${m['data-kind']}:${m['data-value']}`)).toEqual(['0:exit:1', '0:hw:4', '1:exit:0', '1:hw:0.5', '2:exit:NaN', '2:hw:2']);
    expect(svg).toContain('data-chart="t"');
  });

  it('gives each segment a width proportional to its value, on one scale for all bars, stacked left to right', () => {
    const perUnit = marks.filter((m) => Number(m['data-value']) > 0).map((m) => Number(m['width']) / Number(m['data-value']));
    for (const k of perUnit) expect(k).toBeCloseTo(perUnit[0] as number, 1);
    expect(Number(marks[1]?.['x'])).toBeCloseTo(Number(marks[0]?.['x']) + Number(marks[0]?.['width']), 1);
    expect(Number(marks[2]?.['width'])).toBe(0);
  });

  it('marks a bar whose values are not all known with "?"', () => {
    expect(svg).toMatch(/<text[^>]*>\?<\/text><\/g>/);
  });
});

describe('line chart', () => {
  const point = (x: string | number, y: number, i: number) => ({ x, y, title: `p${i}`, data: { i, value: y } });

  it('puts a higher value higher, keeps the category order, and draws a curve through its points', () => {
    const svg = lineChart({
      x: { kind: 'category', label: 'pct', categories: ['p50', 'p90', 'p99'] },
      yLabel: 'us',
      curves: [{ label: 'a', color: '#000', points: [point('p50', 1, 0), point('p90', 10, 1), point('p99', 1000, 2)], data: { curve: 'a' } }],
      data: { chart: 'l' },
      label: 'l',
    });
    const c = elements(svg, 'circle');
    expect(c).toHaveLength(3);
    const cx = c.map((m) => Number(m['cx']));
    const cy = c.map((m) => Number(m['cy']));
    expect(cx[0]).toBeLessThan(cx[1] as number);
    expect(cx[1]).toBeLessThan(cx[2] as number);
    expect(cy[0]).toBeGreaterThan(cy[1] as number);
    expect(cy[1]).toBeGreaterThan(cy[2] as number);
    // Log y: a decade is the same height everywhere.
    expect((cy[0] as number) - (cy[1] as number)).toBeCloseTo(((cy[1] as number) - (cy[2] as number)) / 2, 1);
    expect(svg).toMatch(/<path d="M[\d.]+ [\d.]+L[\d.]+ [\d.]+L[\d.]+ [\d.]+"/);
  });

  it('places numbers by value on a numeric axis, and a value it lacks as a hollow mark on the axis', () => {
    const svg = lineChart({
      x: { kind: 'number', label: 'psmmus' },
      yLabel: 'ops/s',
      curves: [{ label: 'a', color: '#000', points: [point(1, 100, 0), point(2, Number.NaN, 1), point(3, 300, 2)], data: {} }],
      data: {},
      label: 'l',
    });
    const c = elements(svg, 'circle');
    expect(c.map((m) => m['data-i'])).toEqual(['0', '1', '2']);
    expect(c[1]?.['class']).toBe('mark missing');
    const cx = c.map((m) => Number(m['cx']));
    expect((cx[1] as number) - (cx[0] as number)).toBeCloseTo((cx[2] as number) - (cx[1] as number), 1);
    // The gap splits the curve: two pens down, no line through the missing point.
    expect((svg.match(/<path d="([^"]*)"/)?.[1] ?? '').match(/M/g)).toHaveLength(2);
  });

  it('says "no data" when nothing can be drawn', () => {
    const svg = lineChart({ x: { kind: 'number', label: 'x' }, yLabel: 'y', curves: [], data: {}, label: 'l' });
    expect(svg).toContain('no data');
  });
});
