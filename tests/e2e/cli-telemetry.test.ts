/**
 * The telemetry options on the command line: each command that runs scenarios documents them,
 * and a bad value exits 2 with one E_USAGE line naming the option, before any process starts.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { Runs, STACK_LINE, parseResults, runWatched } from './support.js';

const runs = new Runs();
/** Tracing follows OTEL_EXPORTER_OTLP_ENDPOINT without --otlp-endpoint: the CLI gets none (empty counts as none). */
const NO_OTLP_ENV = { OTEL_EXPORTER_OTLP_ENDPOINT: '' };
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

describe('vmmsim telemetry options', () => {
  it.each(['run', 'compare', 'sweep', 'saturate'])('%s --help documents metrics and tracing, and the controller\'s own port', async (command) => {
    const r = await runCli([command, '--help'], { env: NO_OTLP_ENV });
    expect(r.code).toBe(0);
    for (const option of ['--metrics-port PORT', '--metrics-host HOST', '--otlp-endpoint URL', '--trace-sample R']) expect(r.stdout).toContain(option);
    expect(r.stdout).toContain('the controller itself at http://HOST:PORT/metrics');
    expect(r.stdout).toContain('PORT+1, PORT+2');
  });

  const BAD: { args: string[]; says: RegExp }[] = [
    { args: ['run', '--metrics-port', '70000'], says: /--metrics-port must be a TCP port 0..65535, got "70000"/ },
    { args: ['run', '--metrics-port', '65500'], says: /--metrics-port 65500 leaves no room/ },
    { args: ['run', '--metrics-host', '0.0.0.0'], says: /--metrics-host needs --metrics-port PORT/ },
    { args: ['run', '--otlp-endpoint', 'localhost:4317'], says: /--otlp-endpoint must be .*, got "localhost:4317"/ },
    { args: ['run', '--otlp-endpoint', 'http://127.0.0.1:4317', '--trace-sample', '1.5'], says: /--trace-sample must be a ratio 0..1, got "1.5"/ },
    { args: ['sweep', '--set', 'seed=1,2', '--trace-sample', '0.5'], says: /--trace-sample needs --otlp-endpoint/ },
  ];
  it.each(BAD)('$args exits 2 with E_USAGE and starts nothing', async ({ args, says }) => {
    const r = await runWatched(runs, args, { env: NO_OTLP_ENV });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^vmmsim: E_USAGE: /);
    expect(r.stderr).toMatch(says);
    expect(r.stderr).not.toMatch(STACK_LINE);
    expect(r.spawned).toEqual([]);
  });

  it('with --json writes nothing on stderr for metrics: the ports are in the results document', async () => {
    const r = await runWatched(runs, ['run', '--ops', '10', '--metrics-port', '0', '--json', '--out', runs.folder()], { env: NO_OTLP_ENV });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('vmmsim: metrics:');
    const ports = parseResults(r.stdout).runs[0]?.processes.map((p) => p.metricsPort);
    expect(ports).toHaveLength(5);
    for (const port of ports ?? []) expect(port).toBeGreaterThan(0);
  });
});
