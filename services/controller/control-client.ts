import * as grpc from '@grpc/grpc-js';
import { VmmsimError } from '../common/errors.js';
import type { ControlClient } from '../common/generated/vmmsim/v1/Control.js';
import type { StartReply__Output } from '../common/generated/vmmsim/v1/StartReply.js';
import type { StatsReply__Output } from '../common/generated/vmmsim/v1/StatsReply.js';
import type { Topology } from '../common/generated/vmmsim/v1/Topology.js';
import { protos } from '../common/proto.js';
import { CONTROL_CHANNEL_OPTIONS } from '../common/transport/options.js';

/** The controller's unary control calls to one process, each with a deadline. */
export class Control {
  private readonly client: ControlClient;

  constructor(
    readonly name: string,
    address: string,
  ) {
    const C = protos().control.vmmsim.v1.Control;
    this.client = new C(address, grpc.credentials.createInsecure(), CONTROL_CHANNEL_OPTIONS);
  }

  private unary<Req, Res>(method: string, call: (req: Req, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown, req: Req, deadlineMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      call.call(this.client, req, { deadline: Date.now() + deadlineMs }, (err, res) => {
        if (err) {
          const code = err.code === grpc.status.DEADLINE_EXCEEDED ? 'E_DEADLINE' : err.code === grpc.status.UNAVAILABLE ? 'E_PEER_LOST' : 'E_RUN';
          reject(new VmmsimError(code, `${method} on ${this.name} failed: ${err.details || err.message}`));
        } else resolve(res as Res);
      });
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

  close(): void {
    this.client.close();
  }
}
