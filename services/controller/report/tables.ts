/**
 * The report's tables of every number: runs, operations, hops, modeled resources, invalidation
 * deliveries, saturation searches, processes and counters. Each number is printed as the document
 * holds it, in a cell that names its JSON Pointer (data-pointer) and value (data-value).
 */
import { TRANSITION_KINDS } from '../../common/topology.js';
import { dataAttrs, datum, esc } from './html.js';
import { RESOURCE_FIELDS, SUMMARY_FIELDS, type NumberAt, type ReportData, type RunView } from './data.js';

export interface Table {
  id: string;
  title: string;
  html: string;
  /** Long tables (every counter of every process) start folded. */
  folded: boolean;
}

function numCell(pointer: string, value: number): string {
  return `<td class="num"${dataAttrs(datum(pointer, value))}>${Number.isFinite(value) ? esc(String(value)) : '-'}</td>`;
}

function cellAt(n: NumberAt): string {
  return numCell(n.pointer, n.value);
}

function textCell(s: string): string {
  return `<td>${esc(s)}</td>`;
}

function runCells(run: RunView): string {
  return `${numCellPlain(run.index + 1)}${textCell(run.model)}${textCell(run.pointLabel)}`;
}

/** A number of the report's own (a row's position), not the document's: no pointer. */
function numCellPlain(n: number): string {
  return `<td class="num">${n}</td>`;
}

function table(id: string, title: string, head: readonly string[], rows: readonly string[], folded = false): Table | undefined {
  if (rows.length === 0) return undefined;
  const html = `<div class="scroll"><table id="${esc(id)}"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r}</tr>`).join('')}</tbody></table></div>`;
  return { id, title, html, folded };
}

const RUN_HEAD = ['#', 'model', 'point'];

/** Every table of the report, those with rows. */
export function reportTables(data: ReportData): Table[] {
  const { runs } = data;
  const figureNames = [...new Set(runs.flatMap((r) => r.figures.map((f) => f.name)))];
  const withPorts = runs.some((r) => r.processes.some((p) => p.metricsPort));
  const summaryHead = (what: string): string[] => SUMMARY_FIELDS.map((f) => `${what} ${f === 'p999' ? 'p99.9' : f}`);
  const tables: (Table | undefined)[] = [
    table(
      'table-runs',
      'Runs',
      [...RUN_HEAD, ...figureNames],
      runs.map((r) => runCells(r) + figureNames.map((name) => {
        const f = r.figures.find((x) => x.name === name);
        return f ? cellAt(f) : '<td></td>';
      }).join('')),
    ),
    table(
      'table-ops',
      'Operations (transitions per operation; measured latency in us, modeled in ns)',
      [...RUN_HEAD, 'op', 'count', 'failed', ...TRANSITION_KINDS, ...summaryHead('measured'), ...summaryHead('modeled')],
      runs.flatMap((r) =>
        r.ops.map(
          (o) =>
            runCells(r) +
            textCell(o.op) +
            numCell(`${o.pointer}/count`, o.count) +
            numCell(`${o.pointer}/failed`, o.failed) +
            TRANSITION_KINDS.map((k) => numCell(`${o.pointer}/transitions/${k}`, o.transitions[k])).join('') +
            SUMMARY_FIELDS.map((f) => numCell(`${o.pointer}/measuredUs/${f}`, o.measuredUs[f])).join('') +
            SUMMARY_FIELDS.map((f) => numCell(`${o.pointer}/modeledNs/${f}`, o.modeledNs[f])).join(''),
        ),
      ),
    ),
    table(
      'table-hops',
      'Hops (measured one-way latency in us)',
      [...RUN_HEAD, 'from', 'to', 'count', ...summaryHead('measured')],
      runs.flatMap((r) =>
        r.hops.map((h) => runCells(r) + textCell(h.from) + textCell(h.to) + numCell(`${h.pointer}/count`, h.count) + SUMMARY_FIELDS.map((f) => numCell(`${h.pointer}/measuredUs/${f}`, h.measuredUs[f])).join('')),
      ),
    ),
    table(
      'table-resources',
      'Modeled resources (times in ns)',
      [...RUN_HEAD, 'resource', ...RESOURCE_FIELDS],
      runs.flatMap((r) => r.resources.map((m) => runCells(r) + textCell(m.resource) + RESOURCE_FIELDS.map((f) => numCell(`${m.pointer}/${f}`, m.values[f])).join(''))),
    ),
    table(
      'table-deliveries',
      'Invalidation commands delivered to each pSMMU',
      [...RUN_HEAD, 'pSMMU', 'delivered'],
      runs.flatMap((r) => r.delivered.map((d) => runCells(r) + textCell(d.name) + cellAt(d))),
    ),
    table(
      'table-saturation',
      'Saturation searches',
      ['#', 'model', 'point', 'op', 'metric', 'p99 bound us', 'rate /s', 'failed at /s', 'steps', 'stop'],
      data.saturation.map(
        (s) =>
          numCellPlain(s.index + 1) +
          textCell(s.model) +
          textCell(s.pointLabel) +
          textCell(s.op) +
          textCell(s.metric) +
          numCell(`${s.pointer}/p99BoundUs`, s.p99BoundUs) +
          cellAt(s.ratePerSec) +
          cellAt(s.failedAtPerSec) +
          numCell(`${s.pointer}/steps`, s.steps) +
          textCell(s.stop),
      ),
    ),
    table(
      'table-workload-counters',
      'Workload counters',
      [...RUN_HEAD, 'counter', 'value'],
      runs.flatMap((r) => r.workloadCounters.map((c) => runCells(r) + textCell(c.name) + cellAt(c))),
    ),
    table(
      'table-processes',
      'Processes',
      [...RUN_HEAD, 'role', 'name', 'pid', 'host', ...(withPorts ? ['metrics port'] : [])],
      runs.flatMap((r) =>
        r.processes.map((p) => runCells(r) + textCell(p.role) + textCell(p.name) + cellAt(p.pid) + textCell(p.host) + (withPorts ? (p.metricsPort ? cellAt(p.metricsPort) : '<td></td>') : '')),
      ),
      runs.length > 1,
    ),
    table(
      'table-counters',
      'Counters of every process',
      [...RUN_HEAD, 'process', 'counter', 'value'],
      runs.flatMap((r) => r.counters.flatMap((c) => c.values.map((v) => runCells(r) + textCell(c.process) + textCell(v.name) + cellAt(v)))),
      true,
    ),
    table(
      'table-scenario',
      'Scenario',
      ['key', 'value'],
      data.scenario.map(([k, v]) => textCell(k) + textCell(v)),
      true,
    ),
  ];
  return tables.filter((t): t is Table => t !== undefined);
}
