import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseRoleArgs } from '../../services/runtime/role-runtime.js';
import { telemetryArgs, telemetryArgv } from '../../services/runtime/role-telemetry.js';
import { treeTelemetry, treeUp } from '../../services/controller/telemetry.js';

// Tracing follows OTEL_EXPORTER_OTLP_ENDPOINT when no option names an endpoint: these tests start
// from none (an empty one counts as none), whatever the shell that runs them exports.
beforeEach(() => {
  vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', '');
});
afterEach(() => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
});

describe('role telemetry options', () => {
  it('parse on a role\'s command line and come back as the same options for a child', () => {
    const args = parseRoleArgs(['--role', 'guest', '--index', '1', '--listen', '127.0.0.1:0', '--metrics-port', '9410', '--metrics-host', '127.0.0.2', '--otlp-endpoint', 'http://127.0.0.1:4317', '--trace-sample', '0.25']);
    expect(args.telemetry).toEqual({ metricsPort: 9410, metricsHost: '127.0.0.2', tracing: { endpoint: 'http://127.0.0.1:4317', sample: 0.25 } });
    expect(telemetryArgv(args.telemetry)).toEqual(['--metrics-port', '9410', '--metrics-host', '127.0.0.2', '--otlp-endpoint', 'http://127.0.0.1:4317', '--trace-sample', '0.25']);
    expect(parseRoleArgs(['--role', 'kvm', '--listen', '127.0.0.1:0']).telemetry).toEqual({ metricsPort: undefined, metricsHost: undefined, tracing: undefined });
  });

  it('refuses a host without a port and a port out of range', () => {
    expect(() => telemetryArgs({ 'metrics-host': '0.0.0.0' })).toThrow(/--metrics-host needs --metrics-port/);
    expect(() => telemetryArgs({ 'metrics-port': '65536' })).toThrow(/--metrics-port must be a TCP port/);
  });
});

describe('controller telemetry options', () => {
  it('keep the base port for the controller and leave room above it for a tree', () => {
    expect(treeTelemetry({ 'metrics-port': '9400' })).toEqual({ metricsBase: 9400, metricsHost: undefined, tracing: undefined, quiet: false });
    expect(treeTelemetry({ 'metrics-port': '0', 'metrics-host': '::1' })).toEqual({ metricsBase: 0, metricsHost: '::1', tracing: undefined, quiet: false });
    expect(treeTelemetry({})).toEqual({ metricsBase: undefined, metricsHost: undefined, tracing: undefined, quiet: false });
    expect(() => treeTelemetry({ 'metrics-port': '65400' })).toThrow(/leaves no room/);
  });

  it('print the metrics URLs of a tree on stderr, and nothing with --json', () => {
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    const processes = [{ name: 'kvm', pid: 42, metricsPort: 9402 }, { name: 'psmmu-0', pid: 41, metricsPort: 9401 }];
    treeUp(treeTelemetry({ 'metrics-port': '9400' }), processes);
    expect(written.join('')).toBe('vmmsim: metrics: psmmu-0 http://127.0.0.1:9401/metrics (pid 41)\nvmmsim: metrics: kvm http://127.0.0.1:9402/metrics (pid 42)\n');
    written.length = 0;
    const quiet = treeTelemetry({ 'metrics-port': '9400', json: true });
    expect(quiet.quiet).toBe(true);
    treeUp(quiet, processes);
    expect(written).toEqual([]);
  });
});
