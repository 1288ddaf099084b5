/**
 * The tracing options a process checks at start (--otlp-endpoint, --trace-sample, or
 * OTEL_EXPORTER_OTLP_ENDPOINT): apart from tracing.ts so that checking them does not load
 * OpenTelemetry, which only a process that exports traces needs.
 */
import { VmmsimError } from './errors.js';

/** Share of operations traced when an endpoint is given and no --trace-sample. */
export const DEFAULT_TRACE_SAMPLE = 0.01;

export interface TracingOptions {
  /** OTLP/gRPC collector, http://HOST:PORT (plain) or https://HOST:PORT (TLS). */
  endpoint: string;
  /** Share of operations traced, 0..1. */
  sample: number;
}

/**
 * The tracing a command line asks for: the flags, else the OTel environment variable; undefined
 * when tracing is off. Bad values are E_USAGE errors naming the option.
 */
export function tracingOptions(endpointFlag: string | undefined, sampleFlag: string | undefined, env: NodeJS.ProcessEnv = process.env): TracingOptions | undefined {
  const fromEnv = env['OTEL_EXPORTER_OTLP_ENDPOINT'];
  const endpoint = endpointFlag ?? (fromEnv === '' ? undefined : fromEnv);
  if (endpoint === undefined) {
    if (sampleFlag !== undefined) throw new VmmsimError('E_USAGE', '--trace-sample needs --otlp-endpoint URL (or OTEL_EXPORTER_OTLP_ENDPOINT): tracing is off without a collector');
    return undefined;
  }
  const option = endpointFlag !== undefined ? '--otlp-endpoint' : 'OTEL_EXPORTER_OTLP_ENDPOINT';
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new VmmsimError('E_USAGE', `${option} must be a URL such as http://127.0.0.1:4317, got "${endpoint}"`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    throw new VmmsimError('E_USAGE', `${option} must be http://HOST:PORT or https://HOST:PORT (OTLP over gRPC), got "${endpoint}"`);
  }
  let sample = DEFAULT_TRACE_SAMPLE;
  if (sampleFlag !== undefined) {
    sample = Number(sampleFlag);
    if (sampleFlag.trim() === '' || !Number.isFinite(sample) || sample < 0 || sample > 1) throw new VmmsimError('E_USAGE', `--trace-sample must be a ratio 0..1, got "${sampleFlag}"`);
  }
  return { endpoint, sample };
}

