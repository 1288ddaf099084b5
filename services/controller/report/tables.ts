/**
 * The report's tables of every number: runs, operations, hops, modeled resources, invalidation
 * deliveries, saturation searches, processes and counters. Each number is printed as the document
 * holds it, in a cell that names its JSON Pointer (data-pointer) and value (data-value).
 */
import { TRANSITION_KINDS } from '../../runtime/topology.js';
import { dataAttrs, datum, esc, type Out } from './html.js';
import { RESOURCE_FIELDS, SUMMARY_FIELDS, type ReportData, type RunView } from './data.js';
import type { NumberAt } from './fields.js';

export interface Table {
  id: string;
  title: string;
  /**
   * Writes the table's HTML row by row: a large sweep's counters table is tens of MiB, and held as
   * one string (with the rows it was joined from) it was what made a report take gigabytes.
   */
  write: (out: Out) => void;
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

/** A table of the rows `rows()` gives (built one at a time as the table is written), or none when it gives none. */
function table(id: string, title: string, head: readonly string[], rows: () => Iterable<string>, folded = false): Table | undefined {
  if (rows()[Symbol.iterator]().next().done) return undefined;
  const write = (out: Out): void => {
    out(`<div class="scroll"><table id="${esc(id)}"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>`);
    for (const r of rows()) out(`<tr>${r}</tr>`);
    out('</tbody></table></div>');
  };
  return { id, title, write, folded };
}

/** Each item's rows, in order, built as they are read. */
function* each<T>(items: readonly T[], rows: (item: T) => Iterable<string>): Generator<string> {
  for (const item of items) yield* rows(item);
}

/** `f` of each item, built as read. */
function* mapped<T>(items: readonly T[], f: (item: T) => string): Generator<string> {
  for (const item of items) yield f(item);
}

const RUN_HEAD = ['#', 'model', 'point'];

/** Every table of the report, those with rows. */
export function reportTables(data: ReportData): Table[] {
  const { runs } = data;
  const figureNames = [...new Set(runs.flatMap((r) => r.figures.map((f) => f.name)))];
  const withPorts = runs.some((r) => r.processes.some((p) => p.metricsPort));
  const summaryHead = (what: string): string[] => SUMMARY_FIELDS.map((f) => `${what} ${f === 'p999' ? 'p99.9' : f}`);
  const apps = runs.filter((r) => r.application);
  const tables: (Table | undefined)[] = [
    // Application throughput first, where the workload has one.
    table(
      'table-application',
      'Application throughput (modeled)',
      [...RUN_HEAD, 'unit', 'per second', 'bytes per second', 'bottleneck', 'kind', 'saturated'],
      () => mapped(apps, (r) => {
        const a = r.application as NonNullable<RunView['application']>;
        return `${runCells(r)}${textCell(a.unit)}${cellAt(a.perSec)}${cellAt(a.bytesPerSec)}${textCell(a.bottleneck)}${textCell(a.bottleneckKind)}${textCell(a.saturated ? 'yes' : 'no (latency-bound)')}`;
      }),
    ),
    table(
      'table-application-utilization',
      'Application: utilization of each resource (modeled)',
      [...RUN_HEAD, 'resource', 'utilization'],
      () => each(apps, (r) => mapped((r.application as NonNullable<RunView['application']>).utilization, (u) => `${runCells(r)}${textCell(u.name)}${cellAt(u)}`)),
    ),
    table(
      'table-runs',
      'Runs',
      [...RUN_HEAD, ...figureNames],
      () => mapped(runs, (r) => runCells(r) + figureNames.map((name) => {
        const f = r.figures.find((x) => x.name === name);
        return f ? cellAt(f) : '<td></td>';
      }).join('')),
    ),
    table(
      'table-ops',
      'Operations, modeled (transitions per operation; modeled latency in ns)',
      [...RUN_HEAD, 'op', 'count', 'failed', ...TRANSITION_KINDS, ...summaryHead('modeled')],
      () => each(runs, (r) =>
        r.ops.map(
          (o) =>
            runCells(r) +
            textCell(o.op) +
            numCell(`${o.pointer}/count`, o.count) +
            numCell(`${o.pointer}/failed`, o.failed) +
            TRANSITION_KINDS.map((k) => numCell(`${o.pointer}/transitions/${k}`, o.transitions[k])).join('') +
            SUMMARY_FIELDS.map((f) => numCell(`${o.pointer}/modeledNs/${f}`, o.modeledNs[f])).join(''),
        ),
      ),
    ),
    table(
      'table-breakdown',
      'Where the modeled time goes (mean per operation; wait: a resource\'s queueing wait)',
      [...RUN_HEAD, 'op', 'step', 'per op', 'ns', 'confidence', 'functions'],
      () => each(runs, (r) =>
        each(r.ops, (o) =>
          o.breakdown.map((b) => runCells(r) + textCell(o.op) + textCell(b.step) + numCell(`${b.pointer}/perOp`, b.perOp) + numCell(`${b.pointer}/ns`, b.ns) + textCell(b.confidence) + textCell(b.functions.join('; '))),
        ),
      ),
      true,
    ),
    table(
      'table-resources',
      'Modeled resources (times in ns)',
      [...RUN_HEAD, 'resource', ...RESOURCE_FIELDS],
      () => each(runs, (r) => r.resources.map((m) => runCells(r) + textCell(m.resource) + RESOURCE_FIELDS.map((f) => numCell(`${m.pointer}/${f}`, m.values[f])).join(''))),
    ),
    table(
      'table-ops-measured',
      "Operations, measured (this host's IPC; every operation of the first trial, latency in us)",
      [...RUN_HEAD, 'op', 'count', ...summaryHead('measured')],
      () => each(runs, (r) => r.ops.map((o) => runCells(r) + textCell(o.op) + numCell(`${o.pointer}/count`, o.count) + SUMMARY_FIELDS.map((f) => numCell(`${o.pointer}/measuredUs/${f}`, o.measuredUs[f])).join(''))),
    ),
    table(
      'table-hops',
      "Hops, measured (this host's IPC: one-way latency in us, every crossing of the first trial)",
      [...RUN_HEAD, 'from', 'to', 'count', ...summaryHead('measured')],
      () => each(runs, (r) =>
        r.hops.map((h) => runCells(r) + textCell(h.from) + textCell(h.to) + numCell(`${h.pointer}/count`, h.count) + SUMMARY_FIELDS.map((f) => numCell(`${h.pointer}/measuredUs/${f}`, h.measuredUs[f])).join('')),
      ),
    ),
    table(
      'table-deliveries',
      'Invalidation commands delivered to each pSMMU',
      [...RUN_HEAD, 'pSMMU', 'delivered'],
      () => each(runs, (r) => r.delivered.map((d) => runCells(r) + textCell(d.name) + cellAt(d))),
    ),
    table(
      'table-saturation',
      'Saturation searches',
      ['#', 'model', 'point', 'op', 'metric', 'p99 bound us', 'rate /s', 'failed at /s', 'steps', 'stop'],
      () => mapped(
        data.saturation,
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
      () => each(runs, (r) => r.workloadCounters.map((c) => runCells(r) + textCell(c.name) + cellAt(c))),
    ),
    table(
      'table-processes',
      'Processes',
      [...RUN_HEAD, 'role', 'name', 'pid', 'host', ...(withPorts ? ['metrics port'] : [])],
      () => each(runs, (r) =>
        r.processes.map((p) => runCells(r) + textCell(p.role) + textCell(p.name) + cellAt(p.pid) + textCell(p.host) + (withPorts ? (p.metricsPort ? cellAt(p.metricsPort) : '<td></td>') : '')),
      ),
      runs.length > 1,
    ),
    table(
      'table-counters',
      'Counters of every process',
      [...RUN_HEAD, 'process', 'counter', 'value'],
      () => each(runs, (r) => each(r.counters, (c) => c.values.map((v) => runCells(r) + textCell(c.process) + textCell(v.name) + cellAt(v)))),
      true,
    ),
    table(
      'table-scenario',
      'Scenario',
      ['key', 'value'],
      () => mapped(data.scenario, ([k, v]) => textCell(k) + textCell(v)),
      true,
    ),
  ];
  return tables.filter((t): t is Table => t !== undefined);
}
