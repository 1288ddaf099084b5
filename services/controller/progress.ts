/**
 * Progress of a command's runs on stderr: a bar redrawn in place when stderr is a terminal, the
 * usual line per run when it is not (a log or a pipe keeps every line), nothing with --json. The
 * controller alone updates it, between runs and search steps, and the bar is redrawn from a timer
 * at most 10 times a second, so the processes under test never wait for it.
 */

export type ProgressMode = 'bar' | 'lines' | 'off';

/** --json keeps stderr quiet but for errors; a bar only where someone watches a terminal. */
export function progressMode(o: { json: boolean; isTTY: boolean | undefined }): ProgressMode {
  if (o.json) return 'off';
  return o.isTTY === true ? 'bar' : 'lines';
}

export interface BarState {
  /** The command: compare, sweep, saturate. */
  title: string;
  /** Items (runs, searches) finished, and in all. */
  done: number;
  total: number;
  /** How far the current item is, 0..1, when known (a run bounded by its duration, a search's steps). */
  within: number;
  /** The current item. */
  label: string;
  elapsedMs: number;
}

const BAR_WIDTH = 20;

/** m:ss, or h:mm:ss past an hour. */
export function clock(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/**
 * One line of the bar, at most `columns - 1` characters (a line as wide as the terminal would wrap,
 * and a wrapped line cannot be redrawn in place): the command, done/total, the bar, the share, the
 * time so far, the current item, and the estimated time left when there is room. An item too long
 * to fit loses its start: its end names the model.
 */
export function renderBar(s: BarState, columns: number): string {
  const total = Math.max(1, s.total);
  const within = Number.isFinite(s.within) ? Math.min(1, Math.max(0, s.within)) : 0;
  const fraction = Math.min(1, Math.max(0, (s.done + (s.done < s.total ? within : 0)) / total));
  const filled = Math.round(fraction * BAR_WIDTH);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
  const head = `vmmsim: ${s.title} ${s.done}/${s.total} ${bar} ${String(Math.floor(fraction * 100)).padStart(3)}% ${clock(s.elapsedMs)}`;
  const eta = fraction > 0 && fraction < 1 ? ` eta ${clock((s.elapsedMs / fraction) * (1 - fraction))}` : '';
  const room = Math.max(0, columns - 1);
  if (head.length >= room) return head.slice(0, room);
  const label = s.label ? `  ${s.label}` : '';
  if (head.length + eta.length + label.length <= room) return head + eta + label;
  const fit = room - head.length;
  if (label.length <= fit) return head + label;
  return fit > 6 ? `${head}  ...${s.label.slice(s.label.length - (fit - 5))}` : head;
}

/** Where progress goes: stderr, or a stand-in in tests. */
export interface ProgressStream {
  write(text: string): unknown;
  columns?: number | undefined;
}

export interface ProgressOptions {
  title: string;
  total: number;
  mode: ProgressMode;
  stream?: ProgressStream;
  /** A run's duration bound in seconds (workload.durationSec), from which a run's share is timed. */
  itemSeconds?: number;
  now?: () => number;
  /** Least time between two redraws. */
  intervalMs?: number;
}

/** Erase the line the cursor is on, from its start. */
const CLEAR = '\r\x1b[K';

/** A command's progress: start an item, note lines that must stay, finish it; end clears the bar. */
export class Progress {
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly intervalMs: number;
  private readonly t0: number;
  private done = 0;
  private within = 0;
  private label = '';
  private itemStart = 0;
  private timer: NodeJS.Timeout | undefined;
  private shown = '';
  private lastDraw = Number.NEGATIVE_INFINITY;
  private ended = false;

  constructor(private readonly o: ProgressOptions) {
    this.stream = o.stream ?? process.stderr;
    this.now = o.now ?? Date.now;
    this.intervalMs = o.intervalMs ?? 100;
    this.t0 = this.now();
  }

  /** Starts the next item; `line` is what a log shows for it (empty: nothing). */
  start(label: string, line = ''): void {
    this.label = label;
    this.within = 0;
    this.itemStart = this.now();
    if (this.o.mode === 'lines') {
      if (line) this.stream.write(line);
      return;
    }
    if (this.o.mode !== 'bar' || this.ended) return;
    if (!this.timer) {
      this.timer = setInterval(() => this.draw(), this.intervalMs);
      // The bar never keeps the command alive.
      this.timer.unref();
    }
    this.draw();
  }

  /** How far the current item is (0..1), when the controller knows: a search's steps. */
  advance(within: number): void {
    this.within = within;
  }

  /** The current item is done. */
  finish(): void {
    this.done = Math.min(this.o.total, this.done + 1);
    this.within = 0;
  }

  /** A line that stays (a search step's verdict): above the bar, or as it is in a log. */
  note(line: string): void {
    if (this.o.mode === 'lines') this.stream.write(line);
    else if (this.o.mode === 'bar' && !this.ended) {
      this.stream.write(`${this.shown ? CLEAR : ''}${line}`);
      this.shown = '';
      this.draw(true);
    }
  }

  /** Clears the bar and stops redrawing; what follows on stderr starts on a clean line. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.shown) this.stream.write(CLEAR);
    this.shown = '';
  }

  /** The bar as it would be drawn now. */
  line(): string {
    const now = this.now();
    const timed = this.o.itemSeconds && this.o.itemSeconds > 0 ? (now - this.itemStart) / (this.o.itemSeconds * 1000) : 0;
    return renderBar(
      { title: this.o.title, done: this.done, total: this.o.total, within: Math.max(this.within, timed), label: this.label, elapsedMs: now - this.t0 },
      // A terminal that reports no width (0, as a bare pty does) gets the classic 80.
      this.stream.columns || 80,
    );
  }

  private draw(force = false): void {
    if (this.ended || this.o.mode !== 'bar') return;
    const now = this.now();
    if (!force && now - this.lastDraw < this.intervalMs) return;
    const text = this.line();
    if (text === this.shown) return;
    this.stream.write(`${CLEAR}${text}`);
    this.shown = text;
    this.lastDraw = now;
  }
}
