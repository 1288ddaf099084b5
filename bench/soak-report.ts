/**
 * What a soak run found and whether it met its targets: memory growth of every process between
 * the end of the warm-up and the end of the run, errors of any kind, stale translations. Pure
 * functions over the figures bench/soak.ts gathers, so the judgement is tested apart from the load.
 */

/** Resident memory of one process after the warm-up and at the end, in KiB (VmRSS of /proc/PID/status; see memoryOf). */
export interface ProcessMemory {
  name: string;
  pid: number;
  warmKib: number;
  endKib: number;
}

export interface MemoryRow extends ProcessMemory {
  /** (end - warm) / warm: 0.05 is 5% more than after the warm-up; negative when it shrank. */
  growth: number;
}

/** One error counter of one process with the total it reached over the soak (only those above 0). */
export interface ErrorCount {
  process: string;
  counter: string;
  count: number;
}

export interface SoakFigures {
  minutes: number;
  runs: number;
  /** Runs of the warm-up, before the first memory sample. */
  warmupRuns: number;
  /** Guest operations completed (map, unmap, I/Os...). */
  operations: number;
  /** Guest operations that returned an error. */
  failedOps: number;
  /** Guest invalidations issued, and those that did not complete. */
  guestCommands: number;
  guestCommandsFailed: number;
  /** Error counters of the processes (errno counters, queue errors, refused requests). */
  errorCounters: ErrorCount[];
  /** Runs that failed outright (a process died or stopped answering), with why. */
  runFailures: string[];
  /** Device translations served from a stale IOTLB entry after their unmap returned (strict: must stay 0). */
  staleTranslations: number;
  /** Informational: translations, device faults, stale hits while the unmap was still in progress. */
  translations: number;
  faults: number;
  staleDuringUnmap: number;
  memory: ProcessMemory[];
  /** Every reading after the warm-up, per process (the figures behind `memory`). */
  memorySeries?: MemorySeries[];
}

export interface Target {
  name: string;
  value: number;
  /** The largest value that passes. */
  limit: number;
  unit: '%' | '';
  ok: boolean;
}

export interface SoakReport extends SoakFigures {
  memoryRows: MemoryRow[];
  /** Every error of the soak: failed ops, failed invalidations, error counters, failed runs. */
  errors: number;
  targets: Target[];
  /** Runs went on after the warm-up: without them the memory figures compare a point with itself. */
  loadAfterWarmup: boolean;
  ok: boolean;
}

/** The soak's targets: memory growth under 10% in every process, no error, no stale translation. */
export const MAX_MEMORY_GROWTH = 0.1;

/**
 * The counters that count errors: `errors` and `errors.<errno>`, anything ending in `Errors` or
 * `Failed`, `failed`, and `rejected` (requests a device refused). Names follow the roles' stats().
 */
const ERROR_COUNTER = /^(errors?(\..+)?|failed|rejected|[a-zA-Z]+Errors|[a-zA-Z]+Failed)$/;

export function isErrorCounter(name: string): boolean {
  return ERROR_COUNTER.test(name);
}

/** The error counters above zero among one run's counters of every process, by process name. */
export function errorCounts(counters: Record<string, Record<string, number>>): ErrorCount[] {
  const out: ErrorCount[] = [];
  for (const [process, c] of Object.entries(counters)) {
    for (const [counter, count] of Object.entries(c)) if (count > 0 && isErrorCounter(counter)) out.push({ process, counter, count });
  }
  return out;
}

/** Adds `more` into `into`, counter by counter (the totals of a soak over its runs). */
export function addErrorCounts(into: ErrorCount[], more: readonly ErrorCount[]): void {
  for (const m of more) {
    const have = into.find((e) => e.process === m.process && e.counter === m.counter);
    if (have) have.count += m.count;
    else into.push({ ...m });
  }
}

/** VmRSS samples of one process after the warm-up, one per run, oldest first. */
export interface MemorySeries {
  name: string;
  pid: number;
  kib: readonly number[];
}

/**
 * Memory after the warm-up and at the end: the highest reading of each half of the samples. The
 * heap grows and shrinks with every collection, so a reading at one instant judges the garbage
 * collector's timing; the peak of each half is the level the process keeps coming back to, and a
 * leak raises the second half's above the first's.
 */
export function memoryOf(series: readonly MemorySeries[]): ProcessMemory[] {
  return series.map((m) => {
    const half = Math.max(1, Math.floor(m.kib.length / 2));
    return { name: m.name, pid: m.pid, warmKib: Math.max(0, ...m.kib.slice(0, half)), endKib: Math.max(0, ...m.kib.slice(-half)) };
  });
}

export function memoryRows(memory: readonly ProcessMemory[]): MemoryRow[] {
  return memory.map((m) => ({ ...m, growth: m.warmKib > 0 ? (m.endKib - m.warmKib) / m.warmKib : 0 }));
}

/** The figures judged against the targets. */
export function soakReport(f: SoakFigures): SoakReport {
  const rows = memoryRows(f.memory);
  const errors = f.failedOps + f.guestCommandsFailed + f.errorCounters.reduce((n, e) => n + e.count, 0) + f.runFailures.length;
  const worst = rows.reduce((m, r) => Math.max(m, r.growth), 0);
  const targets: Target[] = [
    // A soak with no memory sample of some process proves nothing about it.
    { name: 'memory growth (largest)', value: worst, limit: MAX_MEMORY_GROWTH, unit: '%', ok: rows.length > 0 && worst < MAX_MEMORY_GROWTH },
    { name: 'errors', value: errors, limit: 0, unit: '', ok: errors === 0 },
    { name: 'stale translations (strict)', value: f.staleTranslations, limit: 0, unit: '', ok: f.staleTranslations === 0 },
  ];
  // A soak that ran nothing after its warm-up met no target.
  const loadAfterWarmup = f.runs > f.warmupRuns && f.operations > 0;
  return { ...f, memoryRows: rows, errors, targets, loadAfterWarmup, ok: loadAfterWarmup && targets.every((t) => t.ok) };
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}

function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

function table(rows: string[][], leftColumns = 1): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => `  ${r.map((c, i) => (i < leftColumns ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ')}`.trimEnd()).join('\n');
}

/** The report as text: the load, memory per process, errors, and each target with its verdict. */
export function formatSoakReport(r: SoakReport): string {
  const out: string[] = [];
  out.push(`soak: ${r.minutes.toFixed(1)} min, ${r.runs} runs (${r.warmupRuns} of warm-up), ${r.operations} operations, ${r.guestCommands} guest invalidations, ${r.translations} device translations`);
  out.push('');
  out.push('memory (VmRSS, MiB; read after every run once warm): highest in the first half, highest in the second half');
  out.push(table([['process', 'pid', 'warm', 'end', 'growth'], ...r.memoryRows.map((m) => [m.name, String(m.pid), mib(m.warmKib), mib(m.endKib), pct(m.growth)])], 1));
  out.push('');
  out.push(`errors: ${r.failedOps} failed operations, ${r.guestCommandsFailed} failed invalidations, ${r.runFailures.length} failed runs` + (r.errorCounters.length > 0 ? `; counters: ${r.errorCounters.map((e) => `${e.process}.${e.counter}=${e.count}`).join(', ')}` : ''));
  for (const f of r.runFailures) out.push(`  run failed: ${f}`);
  out.push(`dma: ${r.staleTranslations} stale translations, ${r.staleDuringUnmap} stale during unmap, ${r.faults} faults`);
  out.push('');
  out.push(table([['target', 'value', 'limit', 'result'], ...r.targets.map((t) => [t.name, t.unit === '%' ? pct(t.value) : String(t.value), t.unit === '%' ? `< ${pct(t.limit)}` : `${t.limit}`, t.ok ? 'ok' : 'MISSED'])], 1));
  out.push('');
  if (!r.loadAfterWarmup) out.push('soak: nothing ran after the warm-up, so nothing was judged (raise --minutes)');
  else out.push(r.ok ? 'soak: every target met' : 'soak: a target was missed');
  return out.join('\n');
}
