import { TRANSITION_KINDS } from '../common/topology.js';
import type { RunResult } from './results.js';

function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return '-';
  if (x !== 0 && Math.abs(x) < 0.01) return x.toExponential(1);
  return x.toFixed(digits);
}

function ratio(x: number, base: number | undefined): string {
  if (base === undefined || base <= 0) return '-';
  const r = x / base;
  return `${r >= 10 ? r.toFixed(0) : r.toPrecision(2)}x`;
}

/** Breaks a sentence into lines of at most `width` columns. */
function wrap(text: string, width: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join('\n');
}

function render(rows: string[][], align: ('l' | 'r')[]): string {
  const widths = align.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (align[i] === 'l' ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd()).join('\n');
}

/** Transitions per operation as exit/user/ioctl/hw/direct. */
function transitions(t: RunResult['ops'][number]['transitions']): string {
  return TRANSITION_KINDS.map((k) => (t[k] % 1 === 0 ? String(t[k]) : t[k].toFixed(2))).join('/');
}

/**
 * The side-by-side comparison: per model and operation, the transitions it paid, measured and
 * modeled latency, and each against the `none` baseline; then throughput per model. Fits 120 columns.
 */
export function comparisonTable(runs: readonly RunResult[]): string {
  const base = runs.find((r) => r.model === 'none');
  const header = ['model', 'op', 'n', TRANSITION_KINDS.map((k) => k[0]).join('/'), 'meas p50', 'meas p99', 'model mean', 'model p99', 'vs none'];
  const rows: string[][] = [header];
  for (const run of runs) {
    for (const op of run.ops) {
      const b = base?.ops.find((o) => o.op === op.op);
      rows.push([
        run.model,
        op.op,
        String(op.count),
        transitions(op.transitions),
        fmt(op.measuredUs.p50),
        fmt(op.measuredUs.p99),
        fmt(op.modeledNs.mean / 1000, 3),
        fmt(op.modeledNs.p99 / 1000, 3),
        run === base ? 'baseline' : `${ratio(op.measuredUs.p50, b?.measuredUs.p50)} / ${ratio(op.modeledNs.mean, b?.modeledNs.mean)}`,
      ]);
    }
  }
  const modes = [...new Set(runs.map((r) => r.dma.mode))].join(', ');
  const legend =
    `DMA mode ${modes}. Latency in us; per operation: transitions e/u/i/h/d = exit/user/ioctl/hw/direct; ` +
    'vs none = measured p50 / modeled mean against the no-vIOMMU baseline.';
  const ops = `${wrap(legend, 120)}\n${render(rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'])}`;
  const tRows: string[][] = [['model', 'ops/s measured', 'ops/s modeled', 'vs none', 'guest invalidations', 'delivered', 'fanout']];
  for (const run of runs) {
    const delivered = Object.values(run.invalidations.deliveredPerPsmmu).reduce((a, b) => a + b, 0);
    tRows.push([
      run.model,
      fmt(run.throughput.opsPerSecMeasured, 0),
      fmt(run.throughput.opsPerSecModeled, 0),
      run === base ? 'baseline' : `${ratio(run.throughput.opsPerSecMeasured, base?.throughput.opsPerSecMeasured)} / ${ratio(run.throughput.opsPerSecModeled, base?.throughput.opsPerSecModeled)}`,
      String(run.invalidations.guestCommands),
      String(delivered),
      fmt(run.invalidations.fanout, 2),
    ]);
  }
  const thr = render(tRows, ['l', 'r', 'r', 'r', 'r', 'r', 'r']);
  const dRows: string[][] = [['model', 'device DMA', 'IOTLB hits', 'walk reads', 'faults', 'after unmap', 'stale']];
  for (const run of runs) {
    const d = run.dma;
    dRows.push([run.model, String(d.translations), fmt(d.iotlbHitRate, 3), String(d.walkAccesses), String(d.faults), String(d.useAfterUnmap), String(d.staleTranslations)]);
  }
  const dma = render(dRows, ['l', 'r', 'r', 'r', 'r', 'r', 'r']);
  return `${ops}\n\n${thr}\n\n${dma}`;
}

/** Per-hop measured one-way latency of one run. */
export function hopTable(run: RunResult): string {
  const rows: string[][] = [['hop', 'count', 'p50 us', 'p99 us', 'max us']];
  for (const h of run.hops) rows.push([`${h.from} -> ${h.to}`, String(h.count), fmt(h.measuredUs.p50), fmt(h.measuredUs.p99), fmt(h.measuredUs.max)]);
  return render(rows, ['l', 'r', 'r', 'r', 'r']);
}

/**
 * Linux's dma_map_benchmark report lines (tools/dma/dma_map_benchmark.c) for one run, measured and
 * modeled: average map and unmap latency in microseconds with their standard deviation.
 */
export function dmaMapBenchmarkReport(run: RunResult): string {
  const w = run.workload;
  const op = (name: string): RunResult['ops'][number] | undefined => run.ops.find((o) => o.op === name);
  const lines = [`${run.model}: dma mapping benchmark: threads:${w.threads} seconds:${w.durationSec} granule: ${w.granulePages}`];
  for (const [what, pick] of [
    ['measured', (o: RunResult['ops'][number]) => o.measuredUs],
    ['modeled', (o: RunResult['ops'][number]) => ({ mean: o.modeledNs.mean / 1000, stddev: o.modeledNs.stddev / 1000 })],
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
