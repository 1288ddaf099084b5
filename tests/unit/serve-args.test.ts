import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { VmmsimError } from '../../services/runtime/errors.js';
import { HELP as SERVE_HELP, parseServeArgs } from '../../services/controller/commands/serve.js';

// The role's tracing follows OTEL_EXPORTER_OTLP_ENDPOINT when no option names an endpoint: these
// tests start from none (an empty one counts as none), whatever the shell that runs them exports.
beforeEach(() => {
  vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', '');
});
afterEach(() => {
  vi.unstubAllEnvs();
});

function refusal(argv: string[]): string {
  try {
    parseServeArgs(argv);
  } catch (err) {
    if (err instanceof VmmsimError && err.code === 'E_USAGE') return err.message;
    throw err;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
}

describe('vmmsim serve arguments', () => {
  it('listen on a free loopback port by default, as the role first given', () => {
    const a = parseServeArgs(['psmmu', '--index', '3']);
    expect(a).toMatchObject({ role: 'psmmu', index: 3, listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, peers: undefined, tls: undefined });
    expect(a?.telemetry).toEqual({ metricsPort: undefined, metricsHost: undefined, tracing: undefined });
    expect(parseServeArgs(['kvm'])).toMatchObject({ role: 'kvm', index: 0 });
  });

  it('take HOST:PORT, unix:/abs/path.sock, a peers file and TLS files', () => {
    expect(parseServeArgs(['vfio', '--listen', '10.0.0.3:7700'])?.listen).toEqual({ kind: 'tcp', host: '10.0.0.3', port: 7700 });
    expect(parseServeArgs(['vfio', '--listen', '[::1]:7700'])?.listen).toEqual({ kind: 'tcp', host: '[::1]', port: 7700 });
    expect(parseServeArgs(['vfio', '--listen=unix:/run/vmmsim/vfio.sock'])?.listen).toEqual({ kind: 'path', path: '/run/vmmsim/vfio.sock' });
    expect(parseServeArgs(['vfio', '--listen', 'unix:///run/vfio.sock'])?.listen).toEqual({ kind: 'path', path: '/run/vfio.sock' });
    const a = parseServeArgs(['guest', '--index', '1', '--peers', 'p.yaml', '--tls-ca', 'ca', '--tls-cert', 'c', '--tls-key', 'k', '--tls-server-name', 'n']);
    expect(a).toMatchObject({ peers: 'p.yaml', tls: { ca: 'ca', cert: 'c', key: 'k', serverName: 'n' } });
  });

  it('is undefined for --help', () => {
    expect(parseServeArgs(['--help'])).toBeUndefined();
    expect(parseServeArgs(['psmmu', '-h'])).toBeUndefined();
  });

  it('documents every telemetry option it takes, and the metrics port on the ready line', () => {
    const a = parseServeArgs(['guest', '--metrics-port', '0', '--metrics-host', '127.0.0.2', '--otlp-endpoint', 'http://127.0.0.1:4317', '--trace-sample', '0.5']);
    expect(a?.telemetry).toEqual({ metricsPort: 0, metricsHost: '127.0.0.2', tracing: { endpoint: 'http://127.0.0.1:4317', sample: 0.5 } });
    for (const option of ['--metrics-port PORT', '--metrics-host HOST', '--otlp-endpoint URL', '--trace-sample R']) expect(SERVE_HELP).toContain(option);
    expect(SERVE_HELP).toContain('"metricsPort":PORT');
  });

  it('refuses bad input as E_USAGE naming what was wrong', () => {
    expect(refusal([])).toMatch(/serve needs a role first/);
    expect(refusal(['--index', '1'])).toMatch(/serve needs a role first/);
    expect(refusal(['nic'])).toBe('unknown role "nic"; roles: guest, kvm, qemu, vfio, psmmu');
    expect(refusal(['vfio', '--index', '1'])).toBe('vfio is a singleton: --index must be 0, got 1');
    expect(refusal(['psmmu', '--index', '1.5'])).toMatch(/--index must be an integer >= 0/);
    expect(refusal(['psmmu', '--listen', '7700'])).toMatch(/--listen must be HOST:PORT or unix:\/abs\/path\.sock/);
    expect(refusal(['psmmu', '--listen', 'h:99999'])).toMatch(/--listen must be HOST:PORT/);
    expect(refusal(['psmmu', '--listen', 'unix:rel.sock'])).toMatch(/needs an absolute path/);
    expect(refusal(['psmmu', '--socket-dir', '/tmp'])).toMatch(/serve does not take --socket-dir/);
    expect(refusal(['psmmu', '--role', 'kvm'])).toMatch(/serve does not take --role/);
    expect(refusal(['psmmu', '--bogus'])).toMatch(/Unknown option '--bogus'/);
    expect(refusal(['psmmu', '--tls-ca', 'x'])).toMatch(/go together: missing --tls-cert and --tls-key/);
  });
});
