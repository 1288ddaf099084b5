/**
 * The report's measured section, written (measured.ts reads it): what the figures are, the floor
 * beside them, each run's notes, then per operation, hop and transition kind with the interval
 * over the trials, and the machine's load. Every cell names its JSON Pointer.
 */
import { dataAttrs, datum, esc, type Out } from './html.js';
import type { RunView } from './data.js';
import { isMeasuredNote, type EstimateView, type MeasuredView } from './measured.js';
import type { NumberAt } from './fields.js';

function cell(n: NumberAt | undefined): string {
  if (!n) return '<td class="num">-</td>';
  return `<td class="num"${dataAttrs(datum(n.pointer, n.value))}>${Number.isFinite(n.value) ? esc(String(n.value)) : '-'}</td>`;
}

function interval(e: EstimateView): string {
  return e.lo && e.hi ? `${cell(e.lo)}${cell(e.hi)}` : '<td class="num">-</td><td class="num">-</td>';
}

function table(id: string, title: string, head: string[], rows: string[], out: Out): void {
  if (rows.length === 0) return;
  out(`<h3>${esc(title)}</h3><div class="scroll"><table id="${esc(id)}" data-clock="measured"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>`);
  for (const r of rows) out(`<tr>${r}</tr>`);
  out('</tbody></table></div>');
}

/**
 * The measured section's own tables and words, for the runs that have a measured section: what
 * the figures are, the floor beside them, each run's notes, then the figures with their intervals.
 */
export function writeMeasuredTables(runs: readonly RunView[], out: Out): void {
  const withM = runs.filter((r) => r.measured);
  if (withM.length === 0) {
    out('<p class="missing">These results have no measured section (written before it existed): the measured figures are in the tables of every number, first trial only.</p>');
    return;
  }
  const first = withM[0]?.measured as MeasuredView;
  out(`<p class="measured-about">Measured: ${esc(first.about)}. ${Number.isFinite(first.trials) && first.trials > 1 ? `Each figure is the median of ${first.trials} trials, with its 95% bootstrap interval.` : 'One trial: no interval (--trials N gives one).'}${first.warmupOps > 0 ? ` The first ${first.warmupOps} operations of each guest thread are left out as warm-up.` : ''}${first.pin ? ` Processes pinned (--pin ${esc(first.pin)}).` : ''}</p>`);
  const label = (r: RunView): string => `<td>${r.index + 1}</td><td>${esc(r.label)}</td>`;
  table('table-measured-floor', "The host's floor at the start: one way, two idle processes", ['#', 'run', 'bare Unix socket p50 us', 'p99 us', 'bare grpc-js p50 us', 'p99 us'], withM.filter((r) => r.measured?.floor).map((r) => {
    const f = r.measured?.floor as NonNullable<MeasuredView['floor']>;
    return `${label(r)}${cell(f.raw)}${cell(f.rawP99)}${cell(f.grpc)}${cell(f.grpcP99)}`;
  }), out);
  const notes = withM.flatMap((r) => r.notes.filter((n) => isMeasuredNote(n.code)).map((n) => ({ r, n })));
  if (notes.length > 0) out(`<div class="notes" id="measured-notes"><strong>Notes on the measured figures</strong><ul>${notes.map(({ r, n }) => `<li data-code="${esc(n.code)}"><strong>${esc(r.label)}</strong> [${esc(n.code)}]: ${esc(n.text)}</li>`).join('')}</ul></div>`);
  table('table-measured-ops', 'Operations, measured (steady: after the warm-up)', ['#', 'run', 'op', 'n', 'p50 us', 'low', 'high', 'p99 us', 'low', 'high'], withM.flatMap((r) => (r.measured as MeasuredView).ops.map((o) => `${label(r)}<td>${esc(o.op)}</td>${cell(o.count)}${cell(o.p50.value)}${interval(o.p50)}${cell(o.p99.value)}${interval(o.p99)}`)), out);
  table('table-measured-throughput', 'Throughput, measured', ['#', 'run', 'operations/s', 'low', 'high'], withM.map((r) => `${label(r)}${cell((r.measured as MeasuredView).opsPerSec.value)}${interval((r.measured as MeasuredView).opsPerSec)}`), out);
  table('table-measured-hops', 'Hops, measured (one way)', ['#', 'run', 'hop', 'carries', 'n', 'p50 us', 'low', 'high', 'p99 us', 'low', 'high'], withM.flatMap((r) => (r.measured as MeasuredView).hops.map((h) => `${label(r)}<td>${esc(`${h.from} -> ${h.to}`)}</td><td>${esc(h.carries)}</td>${cell(h.count)}${cell(h.p50.value)}${interval(h.p50)}${cell(h.p99.value)}${interval(h.p99)}`)), out);
  table('table-measured-transitions', "Per transition kind: this host's IPC standing for it (request hop + reply hop), not the hardware's cost", ['#', 'run', 'transition', 'hops (request)', 'round trip p50 us', 'low', 'high'], withM.flatMap((r) => (r.measured as MeasuredView).transitions.map((t) => `${label(r)}<td>${esc(t.kind)}</td><td>${esc(t.pairs)}</td>${cell(t.roundTrip.value)}${interval(t.roundTrip)}`)), out);
  table('table-measured-machine', 'The machine while the measured part ran', ['#', 'run', ...(first.machine.map((m) => m.name))], withM.map((r) => `${label(r)}${(r.measured as MeasuredView).machine.map(cell).join('')}`), out);
}
