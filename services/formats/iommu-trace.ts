/**
 * Reader for recorded Linux ftrace `iommu:map` / `iommu:unmap` events (`include/trace/events/iommu.h`), the input
 * of trace replay. It accepts the text users actually have: `/sys/kernel/tracing/trace` and `trace_pipe`,
 * `trace-cmd report`, and `perf script` (which prints `iommu:map:` instead of `map:`), with or without the
 * ` - 0x<end>` range end of kernels from about 5.17 on, and with the optional `dev=NAME ` token of some vendor
 * kernels:
 *
 *   comm-pid [cpu] flags seconds.micros: map: IOMMU: [dev=NAME ]iova=0x.. [- 0x..] paddr=0x.. size=N
 *   comm-pid [cpu] flags seconds.micros: unmap: IOMMU: [dev=NAME ]iova=0x.. [- 0x..] size=N unmapped_size=N
 *   comm pid [cpu] seconds.micros: iommu:map: IOMMU: ...          (perf script)
 *   map: IOMMU: iova=0x.. paddr=0x.. size=N                        (bare, no timestamp)
 *
 * Whitespace and the line prefix (comm, pid, tgid, cpu, flags column) are read liberally; the numeric fields
 * strictly (hex is 0x-prefixed hex, sizes are decimal, every value must be exact as a JS number). Nothing here
 * throws on any input: a line is either an event or counted in one of the `skipped` buckets.
 */

export interface TraceEvent {
  /** Seconds since the first event of the trace (the first event is at 0). */
  t: number;
  op: 'map' | 'unmap';
  /** Start IOVA. */
  iova: number;
  /** Bytes: `size=` of the event (for unmap the requested size; what was actually unmapped is `unmappedSize`). */
  size: number;
  /** `unmapped_size=`, unmap only. */
  unmappedSize?: number;
  /** `paddr=`, map only. */
  paddr?: number;
  /** `dev=NAME` when present. */
  device?: string;
  /** From the ftrace / perf line prefix when present. */
  cpu?: number;
  comm?: string;
  pid?: number;
  /** 1-based line number in the input. */
  line: number;
}

export interface TraceParse {
  events: TraceEvent[];
  /**
   * Lines skipped by kind, so users see what was ignored:
   * - header: `#` lines, and trace-cmd's metadata lines (`cpus=N`, `version = N`, `CPU N is empty`,
   *   `CPU:N [LOST N EVENTS]`);
   * - blank: empty or whitespace-only lines;
   * - otherIommuEvent: iommu events other than map/unmap (io_page_fault, attach_device_to_domain,
   *   add_device_to_group, ...);
   * - otherEvent: timestamped events of other trace systems (dma:*, irq:*, ...);
   * - unparsable: map/unmap lines that do not match the formats above or fail the numeric checks, and any
   *   other line that is not a trace line at all.
   */
  skipped: { header: number; blank: number; otherIommuEvent: number; otherEvent: number; unparsable: number };
  /** First few unparsable lines (line number and text, at most 10; text cut at 256 characters) for the error report. */
  unparsableSamples: { line: number; text: string }[];
}

/** How many unparsable lines are kept for the report, and how much of each. */
const MAX_SAMPLES = 10;
const MAX_SAMPLE_CHARS = 256;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** A range [iova, iova+size) must end at or below 2^53 so that iova+size is exact too. */
const RANGE_LIMIT = 1n << 53n;
const NS_PER_S = 1_000_000_000n;

/** Events of the `iommu` trace system; ftrace and trace-cmd print them without the system name. */
const IOMMU_EVENTS: ReadonlySet<string> = new Set([
  'map',
  'unmap',
  'io_page_fault',
  'attach_device_to_domain',
  'detach_device_from_domain',
  'add_device_to_group',
  'remove_device_from_group',
]);

/** `seconds.fraction:` preceded by whitespace or the start of the line (first occurrence). */
const TIMESTAMP_RE = /(?:^|\s)(\d{1,12})\.(\d{1,9}):/;
/** `event:` or perf's `system:event:` at the start of what follows the timestamp. */
const EVENT_RE = /^\s*([A-Za-z_]\w*)(?::([A-Za-z_]\w*))?:(.*)$/s;
const HEX = '0x([0-9a-fA-F]+)';
const MAP_RE = new RegExp(
  `^IOMMU:\\s*(?:dev=(\\S+)\\s+)?iova=${HEX}(?:\\s*-\\s*${HEX})?\\s+paddr=${HEX}\\s+size=(\\d+)$`,
);
const UNMAP_RE = new RegExp(
  `^IOMMU:\\s*(?:dev=(\\S+)\\s+)?iova=${HEX}(?:\\s*-\\s*${HEX})?\\s+size=(\\d+)\\s+unmapped_size=(\\d+)$`,
);
const METADATA_RE =
  /^(?:cpus\s*=\s*\d+|version\s*=\s*\S+|CPU\s*\d+\s+is\s+empty|CPU:\s*\d+\s+\[LOST\s+\d+\s+EVENTS\])$/;

type Parsed = Omit<TraceEvent, 't' | 'line' | 'cpu' | 'comm' | 'pid'>;

/** A safe non-negative integer from decimal or hex digits, or undefined. */
function exact(digits: string | undefined, radix: 10 | 16): bigint | undefined {
  if (digits === undefined) return undefined;
  const v = BigInt(radix === 16 ? `0x${digits}` : digits);
  return v <= MAX_SAFE ? v : undefined;
}

/** Shared checks of a map/unmap range; returns false if the line must count as unparsable. */
function rangeOk(iova: bigint | undefined, size: bigint | undefined, endDigits: string | undefined): boolean {
  if (iova === undefined || size === undefined || size === 0n) return false;
  if (iova + size > RANGE_LIMIT) return false;
  if (endDigits !== undefined && BigInt(`0x${endDigits}`) !== iova + size) return false;
  return true;
}

function parseMap(body: string): Parsed | undefined {
  const m = MAP_RE.exec(body);
  if (!m) return undefined;
  const [, dev, iovaHex, endHex, paddrHex, sizeDec] = m;
  const iova = exact(iovaHex, 16);
  const size = exact(sizeDec, 10);
  const paddr = exact(paddrHex, 16);
  if (paddr === undefined || !rangeOk(iova, size, endHex)) return undefined;
  const ev: Parsed = { op: 'map', iova: Number(iova), size: Number(size), paddr: Number(paddr) };
  if (dev !== undefined) ev.device = dev;
  return ev;
}

function parseUnmap(body: string): Parsed | undefined {
  const m = UNMAP_RE.exec(body);
  if (!m) return undefined;
  const [, dev, iovaHex, endHex, sizeDec, unmappedDec] = m;
  const iova = exact(iovaHex, 16);
  const size = exact(sizeDec, 10);
  // unmapped_size=0 is kept: the kernel traces it when nothing was mapped there, and a replay should see it.
  const unmapped = exact(unmappedDec, 10);
  if (unmapped === undefined || !rangeOk(iova, size, endHex)) return undefined;
  const ev: Parsed = { op: 'unmap', iova: Number(iova), size: Number(size), unmappedSize: Number(unmapped) };
  if (dev !== undefined) ev.device = dev;
  return ev;
}

/** comm, pid and cpu from what precedes the timestamp: `comm-pid [cpu] flags`, `comm-pid (tgid) [cpu] flags`, perf's `comm pid[/tid] [cpu]`. */
function parsePrefix(prefix: string): Pick<TraceEvent, 'cpu' | 'comm' | 'pid'> {
  const out: Pick<TraceEvent, 'cpu' | 'comm' | 'pid'> = {};
  // One space per run keeps the patterns below linear on any input.
  let who = prefix.replace(/\s+/g, ' ').trim();
  const c = /^(.*)\[(\d{1,9})\]/.exec(who); // the last [n]: flags never hold brackets, a comm might
  if (c) {
    out.cpu = Number(c[2]);
    who = (c[1] ?? '').trim();
  }
  who = who.replace(/ \( ?(?:\d{1,10}|-+) ?\)$/, ''); // the tgid column of the `record-tgid` option
  const ftrace = /^(.+)-(\d{1,10})$/.exec(who);
  const perf = ftrace ? null : /^(.+?) (\d{1,10})(?:\/\d{1,10})?$/.exec(who);
  const m = ftrace ?? perf;
  if (m) {
    out.comm = m[1] ?? '';
    out.pid = Number(m[2]);
  } else if (who !== '') {
    out.comm = who;
  }
  return out;
}

interface Pending {
  event: Omit<TraceEvent, 't'>;
  /** Absolute time in ns (own or inherited from the previous event); undefined if none so far. */
  ns: bigint | undefined;
}

/** Streaming parser for big files: push lines in order, then finish(). Gives the same result as parseTrace. */
export class TraceParser {
  private lineNo = 0;
  private readonly pending: Pending[] = [];
  private lastNs: bigint | undefined;
  private minNs: bigint | undefined;
  private readonly skipped: TraceParse['skipped'] = {
    header: 0,
    blank: 0,
    otherIommuEvent: 0,
    otherEvent: 0,
    unparsable: 0,
  };
  private readonly samples: TraceParse['unparsableSamples'] = [];
  private mapEvents = 0;

  /** Map events parsed so far: the controller stops reading a trace once it has one to replay. */
  get maps(): number {
    return this.mapEvents;
  }

  /** One line of the trace, without its newline (a trailing `\r` is dropped). Never throws. */
  push(line: string): void {
    const lineNo = ++this.lineNo;
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    const trimmed = text.trim();
    if (trimmed === '') {
      this.skipped.blank++;
      return;
    }
    if (trimmed.startsWith('#') || METADATA_RE.test(trimmed)) {
      this.skipped.header++;
      return;
    }

    const ts = TIMESTAMP_RE.exec(text);
    let rest = text;
    let ns: bigint | undefined;
    let prefix: string | undefined;
    if (ts) {
      prefix = text.slice(0, ts.index);
      rest = text.slice(ts.index + ts[0].length);
      ns = BigInt(ts[1] ?? '0') * NS_PER_S + BigInt((ts[2] ?? '0').padEnd(9, '0'));
    }

    const e = EVENT_RE.exec(rest);
    if (!e) return this.unparsable(lineNo, text);
    let system = e[2] === undefined ? undefined : e[1];
    let name = e[2] ?? e[1] ?? '';
    let body = (e[3] ?? '').trim();
    if (system !== undefined && name === 'IOMMU') {
      // `map:IOMMU:iova=...` without the usual space: the second word is the IOMMU: tag, not an event.
      name = system;
      system = undefined;
      body = `IOMMU:${body}`;
    }
    const iommu = system === undefined ? IOMMU_EVENTS.has(name) : system === 'iommu';
    if (!iommu) {
      // Other trace systems always come with the line prefix; a bare `word: text` line is not a trace line.
      if (ns === undefined) return this.unparsable(lineNo, text);
      this.skipped.otherEvent++;
      return;
    }
    if (name !== 'map' && name !== 'unmap') {
      this.skipped.otherIommuEvent++;
      return;
    }

    const parsed = name === 'map' ? parseMap(body) : parseUnmap(body);
    if (!parsed) return this.unparsable(lineNo, text);
    const event: Omit<TraceEvent, 't'> = { ...parsed, ...(prefix === undefined ? {} : parsePrefix(prefix)), line: lineNo };
    if (ns === undefined) {
      ns = this.lastNs;
    } else if (this.minNs === undefined || ns < this.minNs) {
      this.minNs = ns;
    }
    this.lastNs = ns;
    if (event.op === 'map') this.mapEvents++;
    this.pending.push({ event, ns });
  }

  /** The events so far, relative to the earliest timestamp and sorted by time (stable: line order on ties). */
  finish(): TraceParse {
    const base = this.minNs ?? 0n;
    const events = this.pending.map(({ event, ns }): TraceEvent => {
      const t = ns === undefined ? 0 : Number(ns - base) / 1e9;
      return { t, ...event };
    });
    events.sort((a, b) => a.t - b.t);
    return {
      events,
      skipped: { ...this.skipped },
      unparsableSamples: this.samples.map((s) => ({ ...s })),
    };
  }

  private unparsable(line: number, text: string): void {
    this.skipped.unparsable++;
    if (this.samples.length < MAX_SAMPLES) {
      this.samples.push({ line, text: text.length > MAX_SAMPLE_CHARS ? `${text.slice(0, MAX_SAMPLE_CHARS)}…` : text });
    }
  }
}

/** Parses a whole trace; lines end with `\n` or `\r\n`, and a final newline does not start another line. */
export function parseTrace(text: string): TraceParse {
  const parser = new TraceParser();
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  for (const line of lines) parser.push(line);
  return parser.finish();
}
