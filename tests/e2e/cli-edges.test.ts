/**
 * The CLI's edges (issue 12, "CLI and report edges"), each hole pinned by its own test through the
 * built CLI:
 * - every file vmmsim writes lands on a regular file only: a device node, a FIFO, a symbolic link or
 *   a folder where a file goes (and a file where --out wants a folder) is E_OUTPUT_PATH, exit 2, one
 *   line, nothing replaced and, for --out, nothing started;
 * - a write that fails on stdout (ENOSPC on /dev/full, EPIPE from a closed pipe) or on a results
 *   file (ENOSPC) is E_WRITE, exit 1, one line, no stack trace; the results are still in --out when
 *   only stdout failed;
 * - `vmmsim report` refuses a non-regular or oversized input and keeps its memory within a bound of
 *   its input's size;
 * - a YAML alias bomb, an oversized string and a trace with nothing to replay are bad input: exit 2,
 *   one line, no process started.
 * The device tests run as root in CI: they check the device is still the same character device
 * afterwards, and never aim at /dev/null.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BIN, ROOT } from '../helpers/cli.js';
import { killMarked, waitForNoProcesses } from '../helpers/processes.js';
import { fixtureDoc, fixtureRun, mapUnmap } from '../helpers/results-fixture.js';
import { Runs, STACK_LINE, entries, lines, readResults, runWatched } from './support.js';

const runs = new Runs();
/** Markers of the runs started here with stdio of their own (not through Runs). */
const ownMarkers: string[] = [];
afterEach(() => {
  runs.cleanup();
  for (const m of ownMarkers.splice(0)) killMarked(m);
});
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

const SAMPLE_TRACE = join(ROOT, 'scenarios', 'traces', 'sample.trace');

/** The one stderr line of a refusal or failure: `vmmsim: CODE: ... (fix: ...)`, no stack trace. */
function oneLine(stderr: string, code: string): string {
  const err = lines(stderr);
  expect(err, stderr).toHaveLength(1);
  const line = err[0] ?? '';
  expect(line.startsWith(`vmmsim: ${code}: `), line).toBe(true);
  expect(line).toMatch(/\(fix: .+\)$/);
  expect(stderr).not.toMatch(STACK_LINE);
  return line;
}

/** A character device's identity: still the same device node after the test. */
function deviceId(path: string): { char: boolean; rdev: number } {
  const st = lstatSync(path);
  return { char: st.isCharacterDevice(), rdev: st.rdev };
}

/** Temporary files of an atomic write left in a folder (`.NAME.PID.*.tmp`). */
function temporaries(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.startsWith('.') && f.endsWith('.tmp'));
}

/** A small valid results document in a fresh folder. */
function resultsFile(): string {
  const dir = runs.folder();
  const file = join(dir, 'results.json');
  writeFileSync(file, JSON.stringify(fixtureDoc([fixtureRun({ model: 'none', ops: mapUnmap(10, {}, 0.001) })]), null, 2));
  return file;
}

interface OwnResult {
  code: number | null;
  stdout: string;
  stderr: string;
  marker: string;
}

/** Starts a command (the CLI or a shell line) with a process marker and stdout of its own choosing. */
function startOwn(command: string, args: string[], stdout: 'pipe' | number, onStart?: (child: ChildProcess) => void): Promise<OwnResult> {
  const marker = randomUUID();
  ownMarkers.push(marker);
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, VMMSIM_TEST_MARKER: marker, VMMSIM_LOG_LEVEL: 'warn' },
    stdio: ['ignore', stdout, 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  onStart?.(child);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout: out, stderr: err, marker })));
}

function cli(args: string[], stdout: 'pipe' | number, onStart?: (child: ChildProcess) => void): Promise<OwnResult> {
  return startOwn(process.execPath, [BIN, ...args], stdout, onStart);
}

/** A quick run's arguments: one model, few operations, results in `out`. */
const quickRun = (out: string, ...more: string[]): string[] => ['run', '--model', 'none', '--ops', '20', '--out', out, ...more];

describe('writes land on regular files only (E_OUTPUT_PATH, exit 2, nothing replaced)', () => {
  it('`report R --html /dev/full` refuses the device and leaves it a character device', async () => {
    const before = deviceId('/dev/full');
    expect(before.char).toBe(true);
    const r = await runWatched(runs, ['report', resultsFile(), '--html', '/dev/full']);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_OUTPUT_PATH')).toContain('/dev/full: it is a character device');
    expect(r.stdout).toBe('');
    expect(deviceId('/dev/full')).toEqual(before);
    // Nothing was created beside it either (a temporary file renamed over it was the hole).
    expect(readdirSync('/dev').filter((f) => f.startsWith('.full.'))).toEqual([]);
    expect(r.spawned).toEqual([]);
  });

  it('`report R --html FIFO` refuses the FIFO and leaves it a FIFO', async () => {
    const dir = runs.folder();
    const fifo = join(dir, 'page.html');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const r = await runWatched(runs, ['report', resultsFile(), '--html', fifo]);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_OUTPUT_PATH')).toContain(`${fifo}: it is a FIFO`);
    expect(lstatSync(fifo).isFIFO()).toBe(true);
    expect(temporaries(dir)).toEqual([]);
  });

  it('`report R --html LINK` refuses a symbolic link to a file outside the folder, and neither changes', async () => {
    const outside = join(runs.folder(), 'precious.txt');
    writeFileSync(outside, 'keep me\n');
    const dir = runs.folder();
    const link = join(dir, 'page.html');
    symlinkSync(outside, link);
    const r = await runWatched(runs, ['report', resultsFile(), '--html', link]);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_OUTPUT_PATH')).toContain(`${link}: it is a symbolic link`);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe(outside);
    expect(readFileSync(outside, 'utf8')).toBe('keep me\n');
  });

  it('`run --out /dev/full` is refused before any process starts, and the device stays', async () => {
    const before = deviceId('/dev/full');
    const r = await runWatched(runs, ['run', '--out', '/dev/full']);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_OUTPUT_PATH')).toContain('--out /dev/full is not a folder: it is a character device');
    expect(r.spawned, 'processes started').toEqual([]);
    expect(entries(r.tmp), 'socket folder created').toEqual([]);
    expect(deviceId('/dev/full')).toEqual(before);
  });

  it('`run --out FILE` (an existing regular file) is refused before any process starts, the file unchanged', async () => {
    const file = join(runs.folder(), 'notes.txt');
    writeFileSync(file, 'mine\n');
    const r = await runWatched(runs, ['run', '--out', file]);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_OUTPUT_PATH')).toContain(`--out ${file} is not a folder: it is a regular file`);
    expect(r.spawned).toEqual([]);
    expect(readFileSync(file, 'utf8')).toBe('mine\n');
  });

  it('`run --out DIR/sub` under a regular file names the file, before any process starts', async () => {
    const file = join(runs.folder(), 'notes.txt');
    writeFileSync(file, 'mine\n');
    const r = await runWatched(runs, ['run', '--out', join(file, 'sub')]);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_OUTPUT_PATH')).toContain(`${file} is a regular file`);
    expect(r.spawned).toEqual([]);
  });

  const inOut: { what: string; name: string; make: (path: string) => void; args: string[]; kind: string }[] = [
    { what: 'results.json is a FIFO', name: 'results.json', make: (p) => expect(spawnSync('mkfifo', [p]).status).toBe(0), args: [], kind: 'a FIFO' },
    { what: 'report.html is a symbolic link', name: 'report.html', make: (p) => symlinkSync('/etc/hostname', p), args: [], kind: 'a symbolic link' },
    { what: 'report.html is a folder', name: 'report.html', make: (p) => mkdirSync(p), args: [], kind: 'a folder' },
    { what: 'the measured-host profile is a FIFO (--profile measured-host)', name: 'measured-host.yaml', make: (p) => expect(spawnSync('mkfifo', [p]).status).toBe(0), args: ['--profile', 'measured-host'], kind: 'a FIFO' },
  ];
  for (const c of inOut) {
    it(`\`run --out DIR\` where ${c.what} is refused before any process starts`, async () => {
      const dir = runs.folder();
      const target = join(dir, c.name);
      c.make(target);
      const r = await runWatched(runs, ['run', '--out', dir, ...c.args]);
      expect(r.code, r.stderr).toBe(2);
      expect(oneLine(r.stderr, 'E_OUTPUT_PATH')).toContain(`holds ${c.name}, which is ${c.kind}`);
      expect(r.spawned).toEqual([]);
      expect(lstatSync(target).isFile()).toBe(false);
    });
  }

  it('`sweep --out DIR` where results.csv is a FIFO is refused before any process starts', async () => {
    const dir = runs.folder();
    expect(spawnSync('mkfifo', [join(dir, 'results.csv')]).status).toBe(0);
    const r = await runWatched(runs, ['sweep', '--set', 'workload.threads=1,2', '--out', dir]);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_OUTPUT_PATH')).toContain('holds results.csv, which is a FIFO');
    expect(r.spawned).toEqual([]);
  });
});

describe('failed writes (E_WRITE, exit 1, one line, no stack trace)', () => {
  it('`run --json > /dev/full` exits 1 with one line, the results still in --out and the device intact', async () => {
    const before = deviceId('/dev/full');
    const out = runs.folder();
    const fd = openSync('/dev/full', 'w');
    let r: OwnResult;
    try {
      r = await cli(quickRun(out, '--json'), fd);
    } finally {
      closeSync(fd);
    }
    expect(r.code, r.stderr).toBe(1);
    expect(oneLine(r.stderr, 'E_WRITE')).toContain('cannot write stdout: ENOSPC');
    expect(readResults(out).status).toBe('ok');
    expect(existsSync(join(out, 'report.html'))).toBe(true);
    expect(deviceId('/dev/full')).toEqual(before);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  });

  it('`run` (a table on stdout) > /dev/full exits 1 with the E_WRITE line', async () => {
    const out = runs.folder();
    const fd = openSync('/dev/full', 'w');
    let r: OwnResult;
    try {
      r = await cli(quickRun(out), fd);
    } finally {
      closeSync(fd);
    }
    expect(r.code, r.stderr).toBe(1);
    // The progress line comes first; the failure is the last line, once.
    const err = lines(r.stderr);
    expect(err.filter((l) => l.includes('E_WRITE'))).toHaveLength(1);
    expect(err[err.length - 1]).toMatch(/^vmmsim: E_WRITE: cannot write stdout: ENOSPC/);
    expect(r.stderr).not.toMatch(STACK_LINE);
    expect(readResults(out).status).toBe('ok');
  });

  it('`run --json` whose reader closed the pipe exits 1 with one line (EPIPE), the results still in --out', async () => {
    const out = runs.folder();
    // The read end closes at once: every write the run makes meets a pipe with no reader.
    const r = await cli(quickRun(out, '--json'), 'pipe', (child) => child.stdout?.destroy());
    expect(r.code, r.stderr).toBe(1);
    expect(oneLine(r.stderr, 'E_WRITE')).toContain('cannot write stdout: EPIPE');
    expect(readResults(out).status).toBe('ok');
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  });

  it('`compare --json | head -c 10` exits 1 with one line: its document is more than the pipe holds', async () => {
    const out = runs.folder();
    // A document that fits in the pipe's buffer (64 KiB) is written whole before head exits, and
    // that write succeeded; every model's results (about 80 KiB) are more than it holds.
    const script = `"${process.execPath}" "${BIN}" compare --ops 5 --json --out "${out}" | head -c 10 >/dev/null; exit \${PIPESTATUS[0]}`;
    const r = await startOwn('bash', ['-c', script], 'pipe');
    expect(r.code, r.stderr).toBe(1);
    expect(oneLine(r.stderr, 'E_WRITE')).toContain('cannot write stdout: EPIPE');
    expect(readResults(out).runs.length).toBeGreaterThan(1);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  });

  const mounted = ((): string | undefined => {
    if (process.getuid?.() !== 0) return undefined;
    const dir = runs.folder('vmmsim-e2e-full-');
    // One page: results.json (about 11 KiB) does not fit.
    return spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', dir]).status === 0 ? dir : undefined;
  })();
  afterAll(() => {
    if (mounted) spawnSync('umount', [mounted]);
  });

  it.skipIf(mounted === undefined)('a results.json that meets a full file system (ENOSPC) exits 1 with one line, stdout still gets the document', async () => {
    const out = join(mounted as string, 'out');
    const r = await cli(quickRun(out, '--json'), 'pipe');
    expect(r.code, r.stderr).toBe(1);
    expect(oneLine(r.stderr, 'E_WRITE')).toMatch(/cannot write .*results\.json: ENOSPC/);
    expect(JSON.parse(r.stdout)).toMatchObject({ status: 'ok' });
    // No partial file and no temporary file left behind.
    expect(readdirSync(out)).toEqual([]);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  });
});

describe('`vmmsim report` input', () => {
  it('refuses /dev/zero (a device, read forever) at once with E_RESULTS_FILE', async () => {
    const html = join(runs.folder(), 'page.html');
    const r = await runWatched(runs, ['report', '/dev/zero', '--html', html]);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_RESULTS_FILE')).toContain('/dev/zero: it is a character device, not a regular file');
    expect(existsSync(html)).toBe(false);
  });

  it('refuses a FIFO with no writer without waiting for one', async () => {
    const dir = runs.folder();
    const fifo = join(dir, 'results.json');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const r = await runWatched(runs, ['report', fifo]);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_RESULTS_FILE')).toContain('it is a FIFO, not a regular file');
    expect(existsSync(join(dir, 'report.html'))).toBe(false);
  });

  it('refuses a file over 64 MiB before reading it', async () => {
    const dir = runs.folder();
    const big = join(dir, 'results.json');
    // A sparse file: its size is what is checked, no byte of it is read.
    writeFileSync(big, '');
    truncateSync(big, 64 * 1024 * 1024 + 1);
    const r = await runWatched(runs, ['report', big]);
    expect(r.code, r.stderr).toBe(2);
    expect(oneLine(r.stderr, 'E_RESULTS_FILE')).toContain('is more than the 64 MiB a results file may have');
    expect(existsSync(join(dir, 'report.html'))).toBe(false);
  });

  it('writes the report of a large sweep document within a bound of its size in memory', async () => {
    // About 28 MB: thousands of runs, each with its point (a sweep's), operations and hops.
    const dir = runs.folder();
    const file = join(dir, 'results.json');
    const all = Array.from({ length: 6000 }, (_, i) =>
      fixtureRun({ model: 'nested-smmuv3', point: { 'topology.psmmus': 1 + (i % 64), 'workload.threads': 1 + Math.floor(i / 64) }, ops: mapUnmap(10 + i, { exit: 1, user: 1, ioctl: 1, hw: 1 }), hops: [{ from: 'guest-0', to: 'kvm', p50Us: 300 }, { from: 'kvm', to: 'qemu-0', p50Us: 30 }] }),
    );
    writeFileSync(file, JSON.stringify(fixtureDoc(all, { sweep: { keys: ['topology.psmmus', 'workload.threads'], points: all.length } }), null, 2));
    const size = statSync(file).size;
    expect(size).toBeGreaterThan(20e6);
    const run = runs.start(['report', file]);
    // The peak resident size (VmHWM) of the report process, read until it exits.
    let peakKb = 0;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${run.child.pid}/status`, 'utf8'));
        if (m) peakKb = Math.max(peakKb, Number(m[1]));
      } catch {
        // It exited between two reads.
      }
    }, 20);
    const r = await run.done;
    clearInterval(poll);
    expect(r.code, r.stderr).toBe(0);
    expect(statSync(join(dir, 'report.html')).size).toBeGreaterThan(size);
    // Before: the page built as one string took about 45 times the document (1.28 GB for 28 MB).
    // Now: the page is written piece by piece, in a worker whose heap is 64 MiB and 6 times the
    // file's size (285 MB for 28 MB); the bound leaves room for the runtime around it.
    expect(peakKb * 1024).toBeLessThan(150e6 + 8 * size);
  });
});

describe('bad input starts nothing (exit 2, one line)', () => {
  function scenario(text: string): string {
    const file = join(runs.folder(), 'scenario.yaml');
    writeFileSync(file, text);
    return file;
  }

  async function refused(args: string[], code: string): Promise<string> {
    const out = join(runs.folder(), 'out');
    const r = await runWatched(runs, [...args, '--out', out]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toBe('');
    const line = oneLine(r.stderr, code);
    expect(r.spawned, 'processes started').toEqual([]);
    expect(entries(r.tmp), 'socket folder created').toEqual([]);
    expect(entries(out), 'results written').toEqual([]);
    return line;
  }

  it('a YAML alias bomb is E_SCENARIO_YAML, not E_RUN', async () => {
    const levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 8; i++) {
      const prev = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      levels.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    const line = await refused(['run', scenario(`${levels.join('\n')}\nname: *h\n`)], 'E_SCENARIO_YAML');
    expect(line).toContain('alias');
  });

  it('a name over its 128-character maximum is E_SCENARIO_FIELD, naming the key and the limit', async () => {
    const line = await refused(['run', scenario(`name: ${'x'.repeat(129)}\n`)], 'E_SCENARIO_FIELD');
    expect(line).toContain('scenario key name: at most 128 characters, got 129');
  });

  it('a 20 MiB name (the issue\'s file) is refused without reading it into every process', async () => {
    const file = join(runs.folder(), 'scenario.yaml');
    writeFileSync(file, `name: ${'x'.repeat(20 * 1024 * 1024)}\n`);
    const line = await refused(['run', file], 'E_SCENARIO_FILE');
    expect(line).toContain('1024 KiB a scenario file may have');
  });

  it('a path over 4096 characters in --set is E_SCENARIO_FIELD', async () => {
    const line = await refused(['run', '--set', `profile=/${'p'.repeat(4100)}`], 'E_SCENARIO_FIELD');
    expect(line).toContain('scenario key profile: at most 4096 characters');
  });

  it('an enum value of megabytes is refused without echoing it', async () => {
    const line = await refused(['run', scenario(`model: ${'m'.repeat(500_000)}\n`)], 'E_SCENARIO_FIELD');
    expect(line).toContain('(500000 characters)');
    expect(line.length).toBeLessThan(1000);
  });

  it('`vmmsim scenario-keys` shows each free string\'s maximum length', async () => {
    const r = await runWatched(runs, ['scenario-keys']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^name\s+scenario\s+string of at most 128 characters$/m);
    expect(r.stdout).toMatch(/^profile\s+\S+\s+string of at most 4096 characters$/m);
    expect(r.stdout).toMatch(/^workload\.trace\s+string of at most 4096 characters$/m);
  });

  const replay = (trace: string): string[] => ['run', '--model', 'nested-smmuv3', '--set', 'workload.kind=trace-replay', '--set', `workload.trace=${trace}`, '--set', 'workload.timeScale=0'];

  it('a trace with no parsable event is E_TRACE_FILE naming what it skipped', async () => {
    const trace = join(runs.folder(), 'none.trace');
    writeFileSync(trace, '# tracer: nop\n#\n\nthis is not a trace\n  kworker-12 [001] ..... 10.000001: io_page_fault: IOMMU:0000:00:01.0 iova=0x1000 flags=0x0\n  x-1 [000] ..... 11.0: map: IOMMU: iova=0xZZ paddr=0x1 size=4096\n');
    const line = await refused(replay(trace), 'E_TRACE_FILE');
    expect(line).toContain(`trace ${trace} has no map event to replay`);
    for (const part of ['2 header lines', '1 blank lines', '1 other iommu events', '2 unparsable', 'line 4: "this is not a trace"']) expect(line).toContain(part);
  });

  it('a trace of unmaps only (nothing it can replay) is E_TRACE_FILE', async () => {
    const trace = join(runs.folder(), 'unmaps.trace');
    const unmaps = readFileSync(SAMPLE_TRACE, 'utf8').split('\n').filter((l) => / unmap: /.test(l));
    expect(unmaps.length).toBeGreaterThan(0);
    writeFileSync(trace, `${unmaps.join('\n')}\n`);
    const line = await refused(replay(trace), 'E_TRACE_FILE');
    expect(line).toContain(`${unmaps.length} unmap events (an unmap replays only after its map)`);
  });

  it('a trace over the 256 MiB the guest reads is refused before anything starts', async () => {
    const trace = join(runs.folder(), 'big.trace');
    // Sparse: only its size is checked.
    writeFileSync(trace, '');
    truncateSync(trace, 256 * 1024 * 1024 + 1);
    const line = await refused(replay(trace), 'E_TRACE_FILE');
    expect(line).toContain('is more than the 256 MiB a trace may have');
  });

  it('a trace that is a device (/dev/zero) is refused, not read forever', async () => {
    const line = await refused(replay('/dev/zero'), 'E_TRACE_FILE');
    expect(line).toContain('cannot read trace /dev/zero: it is a character device');
  });

  it('a scenario file that is a device (/dev/zero) is refused, not read forever', async () => {
    const line = await refused(['run', '/dev/zero'], 'E_SCENARIO_FILE');
    expect(line).toContain('/dev/zero: not a regular file');
  });
});
