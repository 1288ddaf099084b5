import type { CostTable } from '../cost/steps.js';
import type { Envelope__Output } from './generated/vmmsim/v1/Envelope.js';
import type { StartReply } from './generated/vmmsim/v1/StartReply.js';
import type { Topology__Output } from './generated/vmmsim/v1/Topology.js';
import type { Logger } from './logger.js';
import type { Registry } from './metrics.js';
import type { OpContext } from './op-context.js';
import type { Endpoint, EndpointTable } from './topology.js';
import type { OpTracing } from './tracing.js';
import type { MemoryRange } from './transport/link.js';

/** What the shared runner gives a role's model when a topology is configured. */
export interface RoleEnv {
  self: Endpoint;
  topology: Topology__Output;
  endpoints: EndpointTable;
  costs: CostTable;
  log: Logger;
  /** Names of the downstream peers this process has links to. */
  peers: readonly string[];
  /** A fresh operation context for work that starts in this process (the guest's operations). */
  newContext(opId: number, modeledNs: number): OpContext;
  /** The process's metrics registry for the role's own instruments (--metrics-port); absent when off. */
  metrics?: Registry;
  /** Sampled operation traces (--otlp-endpoint), exported by the guest; absent when off. */
  tracing?: OpTracing;
}

/** A model's answer to one request; the runner adds modeled time and hop records. */
export interface HandlerResult {
  status: number;
  payload: Buffer;
  guestMemory?: MemoryRange[];
}

/**
 * The callbacks a role's model implements. The runner decodes link messages, keeps the clocks and
 * the hop records, and calls these; models never see a stream or a socket.
 */
export interface RoleInstance {
  /** Serves one request from an upstream peer. Bad input is answered with a status, never thrown. */
  handle(req: Envelope__Output, ctx: OpContext, from: Endpoint): Promise<HandlerResult>;
  /** Asynchronous setup after construction (worker threads, hardware queues); awaited by Configure. */
  init?(): Promise<void>;
  /** On a guest: runs the workload. */
  start?(): Promise<StartReply>;
  /** Counters for the run's results. */
  stats(): Record<string, number>;
  close?(): void | Promise<void>;
}

export type RoleFactory = (env: RoleEnv) => RoleInstance;

export const EMPTY = Buffer.alloc(0);
