import type { CostTable } from '../cost/steps.js';
import type { Kind__Output } from './generated/vmmsim/v1/Kind.js';
import type { MemoryRange__Output } from './generated/vmmsim/v1/MemoryRange.js';
import type { StartReply } from './generated/vmmsim/v1/StartReply.js';
import type { Topology__Output } from './generated/vmmsim/v1/Topology.js';
import type { Logger } from './logger.js';
import type { Registry } from './metrics.js';
import type { OpContext } from './op-context.js';
import type { Endpoint, EndpointTable } from './topology.js';
import type { OpTracing } from './tracing.js';
import type { MemoryRange } from './transport/link.js';

/** What a request asks for: a kind of link message (proto/vmmsim/v1/link.proto). */
export type RequestKind = Kind__Output;
/** Bytes of guest RAM at a guest-physical address, travelling with a request or its reply. */
export type GuestMemory = MemoryRange__Output;
export type { MemoryRange };
/** A run's topology as Configure delivered it. */
export type RunTopology = Topology__Output;

/**
 * One request as a model serves it: its kind, the operation it belongs to, its payload (a real
 * interface format, services/formats) and the guest memory that travels with it. Models never see
 * the envelope, the hop records or the stream it came on.
 */
export interface Request {
  readonly kind: RequestKind;
  readonly opId: number;
  readonly payload: Buffer;
  readonly guestMemory: readonly GuestMemory[];
}

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
  /**
   * Topology.floor_peer on a guest: one round trip of a bare grpc-js stream to that peer, resolving
   * with its length in measured ns (transport/floor.ts). Absent otherwise.
   */
  floorRoundTrip?: () => Promise<number>;
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
  handle(req: Request, ctx: OpContext, from: Endpoint): Promise<HandlerResult>;
  /** Asynchronous setup after construction (worker threads, hardware queues); awaited by Configure. */
  init?(): Promise<void>;
  /** On a guest: runs the workload. */
  start?(): Promise<StartReply>;
  /** Counters for the run's results. */
  stats(): Record<string, number>;
  close?(): void | Promise<void>;
}

/** Builds a role's model for a configured run (a role loads its design's part first, hence the promise). */
export type RoleFactory = ((env: RoleEnv) => RoleInstance | Promise<RoleInstance>) & {
  /**
   * The downstream peers this role's model of the run calls, of those its role may link to
   * (topology.ts DOWNSTREAM); absent: all of them. Only these get a link: every link is a
   * connection, a stream and about 60 KB of heap at each end, held for the whole run.
   */
  linkPeers?: (topology: RunTopology, downstream: readonly Endpoint[]) => readonly Endpoint[];
};

export const EMPTY = Buffer.alloc(0);
