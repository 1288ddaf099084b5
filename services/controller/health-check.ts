import * as grpc from '@grpc/grpc-js';
import { service as healthService, type ServingStatus } from 'grpc-health-check';
import { INSECURE, type Security } from '../runtime/transport/credentials.js';
import { CHANNEL_OPTIONS } from '../runtime/transport/options.js';
import { errorDetails } from './control-client.js';

/** What grpc.health.v1.Health/Check answers (SERVICE_UNKNOWN comes only from Watch). */
export type HealthStatus = ServingStatus | 'SERVICE_UNKNOWN';

/** A typed client of the standard grpc.health.v1.Health service (its Check call). */
export interface HealthClient extends grpc.Client {
  Check(req: { service: string }, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { status: HealthStatus }) => void): grpc.ClientUnaryCall;
}

const HealthClientCtor = grpc.makeClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'grpc.health.v1.Health') as unknown as new (
  address: string,
  creds: grpc.ChannelCredentials,
  options: grpc.ChannelOptions,
) => HealthClient;

/** A health client of the process at `address`, on a channel of its own (close it when done). */
export function healthClient(address: string, security: Security = INSECURE): HealthClient {
  return new HealthClientCtor(address, security.channel(), { ...CHANNEL_OPTIONS, ...security.options });
}

/** One health check of the server as a whole (service ""), through the standard health service. */
export function checkHealth(address: string, security: Security = INSECURE, deadlineMs = 2000): Promise<HealthStatus> {
  const client = healthClient(address, security);
  return new Promise<HealthStatus>((resolve, reject) => {
    client.Check({ service: '' }, { deadline: Date.now() + deadlineMs }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res?.status ?? 'UNKNOWN');
    });
  });
}

/**
 * Checks a process's health until it reports SERVING or `timeoutMs` passes (a process started a
 * moment ago may not listen yet). Resolves with undefined once SERVING, else with why not: the
 * last status or error, for a message that names the cause (refused, TLS handshake, NOT_SERVING).
 */
export async function waitServing(address: string, security: Security, timeoutMs: number): Promise<string | undefined> {
  const until = Date.now() + timeoutMs;
  let last = 'no answer';
  for (;;) {
    const left = until - Date.now();
    if (left <= 0) return last;
    try {
      const status = await checkHealth(address, security, Math.min(left, 2000));
      if (status === 'SERVING') return undefined;
      last = `health ${status}`;
    } catch (err) {
      const e = err as grpc.ServiceError;
      // A deadline cut short by the timeout says less than the failure before it (refused, TLS).
      if (e.code !== grpc.status.DEADLINE_EXCEEDED || last === 'no answer') {
        last = errorDetails(e);
      }
    }
    await new Promise((r) => setTimeout(r, Math.min(200, Math.max(0, until - Date.now()))));
  }
}
