/**
 * `vmmsim run` replaying a Linux ftrace of iommu map/unmap events: the shipped sample, a trace with
 * lines that do not parse (counted, the run goes on), and a trace file that cannot be read.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { Runs, STACK_LINE, lines, readResults, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => runs.removeFolders());

const SAMPLE = join(ROOT, 'scenarios', 'traces', 'sample.trace');
const replay = (trace: string, out: string): string[] => [
  'run', '--model', 'nested-smmuv3', '--set', 'workload.kind=trace-replay', '--set', `workload.trace=${trace}`, '--set', 'workload.timeScale=0', '--out', out, '--json',
];

describe('trace-replay', () => {
  it('replays every map and unmap of the sample trace through the nested path and counts the lines it skipped', async () => {
    const out = runs.folder();
    const r = await runWatched(runs, replay(SAMPLE, out));
    expect(r.code, r.stderr).toBe(0);
    const run = readResults(out).runs[0];
    expect(run?.ops.find((o) => o.op === 'map')?.count).toBe(10);
    const unmap = run?.ops.find((o) => o.op === 'unmap');
    expect(unmap?.count).toBe(10);
    expect(unmap?.transitions).toMatchObject({ exit: 2, user: 2, ioctl: 1, hw: 1 });
    expect(run?.workloadCounters).toMatchObject({ events: 20, replayed: 20, unmatchedUnmaps: 0, 'skipped.header': 12, 'skipped.otherIommuEvent': 5, 'skipped.otherEvent': 2, 'skipped.unparsable': 0 });
    expect(await waitForNoProcesses(r.marker, 5000)).toEqual([]);
  });

  it('counts lines that do not parse and unmaps with no earlier map, and the run goes on', async () => {
    const dir = runs.folder();
    const trace = join(dir, 'mixed.trace');
    const text = readFileSync(SAMPLE, 'utf8');
    writeFileSync(trace, `${text}this line is not a trace event\n  x-1 [000] ..... 13.0: map: IOMMU: iova=0xZZ size=4096\n  y-2 [000] ..... 13.1: unmap: IOMMU: iova=0x0000000000400000 - 0x0000000000401000 size=4096 unmapped_size=4096\n`);
    const out = join(dir, 'out');
    const r = await runWatched(runs, replay(trace, out));
    expect(r.code, r.stderr).toBe(0);
    expect(readResults(out).runs[0]?.workloadCounters).toMatchObject({ events: 21, replayed: 20, unmatchedUnmaps: 1, 'skipped.unparsable': 2 });
  });

  it('refuses a trace it cannot read with exit 2 and one line naming the file, before any process starts', async () => {
    const r = await runWatched(runs, replay('/nonexistent/x.trace', runs.folder()));
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const err = lines(r.stderr);
    expect(err).toHaveLength(1);
    expect(err[0]).toMatch(/^vmmsim: E_TRACE_FILE: cannot read trace \/nonexistent\/x\.trace: ENOENT/);
    expect(r.stderr).not.toMatch(STACK_LINE);
    expect(r.spawned).toEqual([]);
  });

  it('refuses a trace given to another workload as conflicting options', async () => {
    const r = await runWatched(runs, ['run', '--set', `workload.trace=${SAMPLE}`, '--ops', '10']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)[0]).toMatch(/^vmmsim: E_SCENARIO_FIELD: scenario key workload.trace: only trace-replay reads a trace/);
    expect(r.spawned).toEqual([]);
  });
});
