import * as grpc from '@grpc/grpc-js';
import { ERROR_CODE_METADATA, ERROR_FIX_METADATA, ErrorCodes, VmmsimError, isErrorCode, type ErrorCode } from '../runtime/errors.js';
import type { ControlClient } from '../runtime/generated/vmmsim/v1/Control.js';
import type { StartReply__Output } from '../runtime/generated/vmmsim/v1/StartReply.js';
import type { StatsReply__Output } from '../runtime/generated/vmmsim/v1/StatsReply.js';
import type { Topology } from '../runtime/generated/vmmsim/v1/Topology.js';
import { protos } from '../runtime/proto.js';
import { CONTROLLER, callerMetadata } from '../runtime/transport/auth.js';
import { INSECURE, type Security } from '../runtime/transport/credentials.js';
import { CONTROL_CHANNEL_OPTIONS } from '../runtime/transport/options.js';

/** A gRPC error's text without the empty resolution note grpc-js appends to connection failures. */
export function errorDetails(err: grpc.ServiceError): string {
  return (err.details || err.message).replace(/\.?\s*Resolution note:\s*$/, '');
}

/**
 * The code and fix a role sent with a failed call, when the error is bad input the user must fix
 * (exit 2: a memory folder a role cannot see, an unsupported workload). A run that failed keeps
 * the controller's own reading: it sees the whole tree, and names a process that died or stopped.
 */
function roleError(err: grpc.ServiceError): { code: ErrorCode; fix: string | undefined } | undefined {
  const code = err.metadata?.get(ERROR_CODE_METADATA)[0];
  if (typeof code !== 'string' || !isErrorCode(code) || ErrorCodes[code].exit !== 2) return undefined;
  const fix = err.metadata.get(ERROR_FIX_METADATA)[0];
  return { code, fix: Buffer.isBuffer(fix) ? fix.toString('utf8') : undefined };
}

/** The controller's unary control calls to one process, each with a deadline. */
export class Control {
  private readonly client: ControlClient;
  /** Who the controller is, proved with the run's token (a role takes control calls from no one else). */
  private readonly metadata: grpc.Metadata;
  /** Calls in flight, cancelled by close(). */
  private readonly calls = new Set<grpc.ClientUnaryCall>();

  constructor(
    readonly name: string,
    address: string,
    security: Security = INSECURE,
  ) {
    const C = protos().control.vmmsim.v1.Control;
    this.client = new C(address, security.channel(), { ...CONTROL_CHANNEL_OPTIONS, ...security.options });
    this.metadata = callerMetadata(CONTROLLER, security.token);
  }

  private unary<Req, Res>(method: string, call: (req: Req, metadata: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall, req: Req, deadlineMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      // grpc-js answers asynchronously; the set is only emptied once the call is known.
      let settled = false;
      const pending = call.call(this.client, req, this.metadata.clone(), { deadline: Date.now() + deadlineMs }, (err, res) => {
        settled = true;
        queueMicrotask(() => this.calls.delete(pending));
        if (err) {
          const carried = roleError(err);
          // A refused certificate is a configuration to fix, not a process that went away.
          const tls = err.code === grpc.status.UNAVAILABLE && /ERR_TLS_|ERR_SSL_|certificate|altnames/i.test(err.details);
          const refused = err.code === grpc.status.UNAUTHENTICATED || err.code === grpc.status.PERMISSION_DENIED;
          const code = carried ? carried.code : tls ? 'E_TLS' : refused ? 'E_UNAUTHENTICATED' : err.code === grpc.status.DEADLINE_EXCEEDED ? 'E_DEADLINE' : err.code === grpc.status.UNAVAILABLE ? 'E_PEER_LOST' : 'E_RUN';
          reject(new VmmsimError(code, `${method} on ${this.name} failed: ${errorDetails(err)}`, carried?.fix));
        } else resolve(res as Res);
      });
      if (!settled) this.calls.add(pending);
    });
  }

  configure(t: Topology, deadlineMs = 15_000): Promise<unknown> {
    return this.unary('Configure', this.client.Configure as never, t, deadlineMs);
  }

  start(deadlineMs: number): Promise<StartReply__Output> {
    return this.unary('Start', this.client.Start as never, {}, deadlineMs);
  }

  stats(deadlineMs = 10_000): Promise<StatsReply__Output> {
    return this.unary('Stats', this.client.Stats as never, {}, deadlineMs);
  }

  stop(deadlineMs = 5_000): Promise<unknown> {
    return this.unary('Stop', this.client.Stop as never, {}, deadlineMs);
  }

  /**
   * Closes the channel and cancels the calls still in flight (a run that was abandoned: a guest's
   * Start to a process elsewhere, a call to a stopped process), which would otherwise keep the
   * controller alive until their deadlines.
   */
  close(): void {
    for (const c of this.calls) c.cancel();
    this.calls.clear();
    this.client.close();
  }
}
