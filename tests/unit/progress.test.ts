/**
 * Progress on stderr: when a bar is drawn (a terminal, no --json), what it shows, that it fits the
 * terminal and is redrawn in place at most 10 times a second, and that a log (not a terminal) keeps
 * the lines it always had while --json keeps stderr quiet.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Progress, clock, progressMode, renderBar, type ProgressMode } from '../../services/controller/progress.js';

/** Carriage return and erase-to-end-of-line: what starts each redraw of the bar. */
const CLEAR = '\r\x1b[K';

/** A stand-in for stderr that keeps what was written. */
class Sink {
  writes: string[] = [];
  constructor(readonly columns?: number) {}
  write(text: string): boolean {
    this.writes.push(text);
    return true;
  }
  get text(): string {
    return this.writes.join('');
  }
}

describe('progressMode', () => {
  it('draws a bar only on a terminal and never with --json', () => {
    const cases: [boolean, boolean | undefined, ProgressMode][] = [
      [false, true, 'bar'],
      [false, false, 'lines'],
      [false, undefined, 'lines'],
      [true, true, 'off'],
      [true, false, 'off'],
    ];
    for (const [json, isTTY, mode] of cases) expect(progressMode({ json, isTTY }), `json ${json} tty ${isTTY}`).toBe(mode);
  });
});

describe('renderBar', () => {
  const state = { title: 'sweep', done: 3, total: 20, within: 0.5, label: 'topology.psmmus=2 topology.vsmmu=single nested-smmuv3', elapsedMs: 65_000 };

  it('shows done/total, a bar filled to the share done, the share, the time and the item', () => {
    const line = renderBar(state, 200);
    expect(line).toBe('vmmsim: sweep 3/20 [####................]  17% 1:05 eta 5:06  topology.psmmus=2 topology.vsmmu=single nested-smmuv3');
  });

  it('stays narrower than the terminal, keeping the end of the item (its model) when cut', () => {
    for (const columns of [120, 80, 60, 40, 20, 1, 0]) {
      const line = renderBar(state, columns);
      expect(line.length, `${columns}: ${line}`).toBeLessThanOrEqual(Math.max(0, columns - 1));
    }
    expect(renderBar(state, 80)).toMatch(/^vmmsim: sweep 3\/20 \[#+\.+\] {2}17% 1:05 {2}\.\.\..*nested-smmuv3$/);
  });

  it('is full and has no estimate when all is done, and empty at the start', () => {
    expect(renderBar({ ...state, done: 20, within: 0.7 }, 200)).toContain(`20/20 [${'#'.repeat(20)}] 100% 1:05  topology`);
    expect(renderBar({ ...state, done: 0, within: 0, elapsedMs: 0 }, 200)).toContain(`0/20 [${'.'.repeat(20)}]   0% 0:00  topology`);
  });

  it('clamps a share outside 0..1 and counts times in m:ss and h:mm:ss', () => {
    expect(renderBar({ ...state, done: 0, total: 1, within: 7 }, 200)).toContain('100%');
    expect(renderBar({ ...state, done: 0, total: 1, within: Number.NaN }, 200)).toContain('  0%');
    expect(clock(59_999)).toBe('0:59');
    expect(clock(3_725_000)).toBe('1:02:05');
  });
});

describe('Progress', () => {
  let now = 0;
  beforeEach(() => {
    vi.useFakeTimers();
    now = 0;
  });
  afterEach(() => vi.useRealTimers());

  it('writes the usual lines, and nothing else, when stderr is not a terminal', () => {
    const sink = new Sink(100);
    const p = new Progress({ title: 'sweep', total: 2, mode: 'lines', stream: sink, now: () => now });
    p.start('a', 'vmmsim: sweep 1/2: a...\n');
    vi.advanceTimersByTime(5000);
    p.finish();
    p.start('b', 'vmmsim: sweep 2/2: b...\n');
    p.note('vmmsim: saturate b: 1000/s -> achieved 990/s, p99 4.061 us: ok\n');
    p.finish();
    p.end();
    expect(sink.writes).toEqual(['vmmsim: sweep 1/2: a...\n', 'vmmsim: sweep 2/2: b...\n', 'vmmsim: saturate b: 1000/s -> achieved 990/s, p99 4.061 us: ok\n']);
  });

  it('writes nothing with --json', () => {
    const sink = new Sink(100);
    const p = new Progress({ title: 'sweep', total: 1, mode: 'off', stream: sink, now: () => now });
    p.start('a', 'vmmsim: sweep 1/1: a...\n');
    p.note('a step\n');
    vi.advanceTimersByTime(1000);
    p.end();
    expect(sink.writes).toEqual([]);
  });

  it('redraws one line in place on a terminal, at most 10 times a second, and clears it at the end', () => {
    const sink = new Sink(100);
    const p = new Progress({ title: 'compare', total: 4, mode: 'bar', stream: sink, now: () => now, itemSeconds: 10 });
    p.start('nested-smmuv3', 'vmmsim: running nested-smmuv3...\n');
    expect(sink.writes).toHaveLength(1);
    expect(sink.writes[0]?.startsWith(CLEAR)).toBe(true);
    expect(sink.writes[0]?.slice(CLEAR.length)).toMatch(/^vmmsim: compare 0\/4 \[\.+\] {3}0% 0:00 {2}nested-smmuv3$/);
    // Ten seconds of a run bounded to ten seconds, the clock moving every 10 ms.
    for (let t = 0; t < 1000; t++) {
      now += 10;
      vi.advanceTimersByTime(10);
    }
    const redraws = sink.writes.length - 1;
    expect(redraws).toBeGreaterThan(0);
    expect(redraws).toBeLessThanOrEqual(10 * 10 + 1);
    // The run's share follows its duration: after its ten seconds, a quarter of four runs.
    expect(sink.writes[sink.writes.length - 1]).toMatch(/ 1\/4|\s25% /);
    for (const w of sink.writes) {
      expect(w.startsWith(CLEAR)).toBe(true);
      expect(w).not.toContain('\n');
      expect(w.length - 4).toBeLessThanOrEqual(99);
    }
    p.finish();
    p.note('kept line\n');
    expect(sink.writes.at(-2)).toBe(`${CLEAR}kept line\n`);
    expect(sink.writes.at(-1)?.startsWith(`${CLEAR}vmmsim: compare 1/4 `)).toBe(true);
    const before = sink.writes.length;
    p.end();
    expect(sink.writes.slice(before)).toEqual([CLEAR]);
    vi.advanceTimersByTime(5000);
    now += 5000;
    expect(sink.writes).toHaveLength(before + 1);
  });

  it('takes 80 columns from a terminal that reports no width', () => {
    const sink = new Sink(0);
    const p = new Progress({ title: 'sweep', total: 1, mode: 'bar', stream: sink, now: () => now });
    p.start('x'.repeat(200));
    expect(sink.writes[0]?.length).toBe(4 + 79);
    p.end();
  });

  it('shows a search\'s share from its steps', () => {
    const sink = new Sink(100);
    const p = new Progress({ title: 'saturate', total: 2, mode: 'bar', stream: sink, now: () => now });
    p.start('nested-smmuv3');
    p.advance(12 / 24);
    now += 1000;
    vi.advanceTimersByTime(1000);
    expect(sink.writes.at(-1)).toContain(' 0/2 [#####.....');
    expect(sink.writes.at(-1)).toContain(' 25% ');
    p.end();
  });
});
