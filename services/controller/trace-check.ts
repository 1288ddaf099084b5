/**
 * The controller's check of a trace-replay scenario's trace, before any process starts: the file
 * is a readable regular file no larger than the guest reads, and holds at least one map event the
 * replay can use. A trace of
 * nothing but headers, other events or lines that do not parse used to start every process, replay
 * nothing and end `status: ok`.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { VmmsimError } from '../runtime/errors.js';
import { TraceParser, type TraceParse } from '../formats/iommu-trace.js';
import { MAX_RUN_FILE_BYTES } from '../machine/run-folder.js';
import { kindOf } from './output-path.js';

/** Read in chunks of this size: reading stops at the first map event, whatever the trace's size. */
const CHUNK_BYTES = 64 * 1024;

const NO_EVENT_FIX = 'record the iommu map and unmap events (echo 1 > /sys/kernel/tracing/events/iommu/map/enable, and unmap) and give workload.trace that trace (see scenarios/traces/sample.trace)';

function cannotRead(shown: string, why: string): VmmsimError {
  return new VmmsimError('E_TRACE_FILE', `cannot read trace ${shown}: ${why}`);
}

/** What a trace with no map event held instead, in one line. */
export function describeSkipped(p: TraceParse): string {
  const unmaps = p.events.filter((e) => e.op === 'unmap').length;
  const s = p.skipped;
  const parts = [
    `${unmaps} unmap events (an unmap replays only after its map)`,
    `${s.header} header lines`,
    `${s.blank} blank lines`,
    `${s.otherIommuEvent} other iommu events`,
    `${s.otherEvent} other events`,
    `${s.unparsable} unparsable`,
  ];
  const first = p.unparsableSamples[0];
  // JSON quoting keeps the message on one line whatever the trace line holds.
  const sample = first ? `; first unparsable, line ${first.line}: ${JSON.stringify(first.text.slice(0, 80))}` : '';
  return `${parts.join(', ')}${sample}`;
}

/**
 * Reads the trace at `path` (`shown` names it in messages, as the user gave it) until its first
 * map event; refuses a file that cannot be read, is not a regular file, or has no map event.
 */
export function checkTraceFile(path: string, shown: string): void {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO is refused below, not waited on for a writer.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw cannotRead(shown, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
  const parser = new TraceParser();
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw cannotRead(shown, `it is ${kindOf(st)}, not a regular file`);
    // The guest reads the run folder's copy whole, up to this size: a larger trace would fail there, after the start.
    if (st.size > MAX_RUN_FILE_BYTES) throw cannotRead(shown, `${st.size} bytes is more than the ${MAX_RUN_FILE_BYTES / (1024 * 1024)} MiB a trace may have`);
    const buf = Buffer.allocUnsafe(CHUNK_BYTES);
    const decoder = new StringDecoder('utf8');
    let rest = '';
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      const text = rest + (n === 0 ? decoder.end() : decoder.write(buf.subarray(0, n)));
      const lines = text.split('\n');
      // The last piece has no newline yet (or is the final line, at the end of the file).
      rest = n === 0 ? '' : (lines.pop() ?? '');
      if (n === 0 && lines[lines.length - 1] === '') lines.pop();
      for (const line of lines) parser.push(line);
      if (parser.maps > 0) return;
      if (n === 0) break;
    }
  } catch (err) {
    if (err instanceof VmmsimError) throw err;
    throw cannotRead(shown, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  } finally {
    closeSync(fd);
  }
  throw new VmmsimError('E_TRACE_FILE', `trace ${shown} has no map event to replay: it holds ${describeSkipped(parser.finish())}`, NO_EVENT_FIX);
}
