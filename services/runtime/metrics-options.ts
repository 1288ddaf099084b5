/**
 * The metrics options a process checks before it starts anything (--metrics-port, --metrics-host):
 * apart from metrics.ts so that checking them does not load prom-client, which only a process that
 * serves metrics needs.
 */
import { VmmsimError } from './errors.js';

/** Metrics stay on this host unless the user names another address (--metrics-host). */
export const DEFAULT_METRICS_HOST = '127.0.0.1';

export function metricsUrl(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}/metrics`;
}

/** Checks a --metrics-port value: a TCP port, 0 for any free one. */
export function parseMetricsPort(option: string, value: string, maxOffset = 0): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || !Number.isInteger(port) || port < 0 || port + maxOffset > 65535) {
    throw new VmmsimError('E_USAGE', `${option} must be a TCP port 0..${65535 - maxOffset}, got "${value}"`);
  }
  return port;
}

