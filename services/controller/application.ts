/**
 * Application throughput (results.json runs[].application): what an application workload
 * (packet-stream, block) delivers in modeled time, packets or requests per second, read off the
 * queueing replay, not computed beside it. Every I/O is a chain of operations on one lane of its
 * vCPU (workloads/common.ts): its CPU work and its map and unmap hold the vCPU, its 'io' holds the
 * device and the link; the replay serves each resource first come, first served (a device with
 * internal parallelism as that many servers), so the run's modeled length already holds every wait
 * for a vCPU, a lock, a queue, the device or the link. Throughput is the completed I/Os over it.
 *
 * The bottleneck is the resource the run saturates: the highest utilization, where a resource's
 * utilization is the time it was held and working (held, minus what its holders spent waiting for
 * another resource meanwhile: a vCPU spinning on the VMM's lock is not working) over the run's
 * modeled length and its servers. At SATURATED or above it bounds the throughput; below, nothing is
 * saturated and the I/Os in flight bound it by their latency (Little's law): the bottleneck is then
 * the resource the I/Os spent the most time on (held or waited for), with `saturated` false.
 */
import { APPLICATION_UNITS, APPLICATION_WORKLOADS, type Scenario } from '../scenario/schema.js';
import { PAGE_SIZE } from '../machine/memory.js';
import type { QueueingResult } from './queueing.js';

/** Utilization from which a resource is taken to bound the run. */
export const SATURATED = 0.9;

export type ResourceKind = 'vcpu' | 'device' | 'link' | 'queue' | 'lock';

export interface ApplicationResult {
  /** What an I/O is: packets (packet-stream) or requests (block). */
  unit: string;
  /** I/Os completed (each one's device-and-link operation, 'io'). */
  count: number;
  perSecModeled: number;
  /** perSecModeled x the bytes of one I/O (workload.packetBytes; granulePages x 4 KiB). */
  bytesPerSecModeled: number;
  /** The resource that bounds the throughput (see the file's comment). */
  bottleneck: string;
  bottleneckKind: ResourceKind;
  /** Whether the bottleneck is saturated (utilization >= SATURATED); false: latency-bound. */
  saturated: boolean;
  /** Each resource's working utilization over the modeled run, 0..1. */
  utilization: Record<string, number>;
}

/** What a resource of the replay is, by its name (workloads/common.ts, psmmu, the designs' locks). */
export function resourceKind(name: string): ResourceKind {
  if (/\.vcpu\d+$/.test(name)) return 'vcpu';
  if (/^(nic|nvme)-/.test(name)) return 'device';
  if (/^link-/.test(name)) return 'link';
  if (/cmdq|queue|tce_kill|\.vq$/.test(name)) return 'queue';
  return 'lock';
}

/**
 * A resource's working utilization over a modeled run of elapsedNs: held and working (held minus
 * what its holders spent waiting for another resource meanwhile) over the run and its servers.
 */
export function workingUtilization(r: { busyNs: number; blockedNs?: number; servers?: number }, elapsedNs: number): number {
  return elapsedNs > 0 ? Math.max(0, r.busyNs - (r.blockedNs ?? 0)) / (elapsedNs * (r.servers ?? 1)) : 0;
}

/** What bounds a run: the resource of highest working utilization (ties: the first by name). */
export interface BoundBy {
  resource: string;
  kind: ResourceKind;
  utilization: number;
}

export function boundByOf(resources: readonly { resource: string; busyNs: number; blockedNs?: number; servers?: number }[], elapsedNs: number): BoundBy | undefined {
  let top: { name: string; u: number } | undefined;
  for (const r of resources) {
    const u = workingUtilization(r, elapsedNs);
    if (!top || u > top.u + 1e-12) top = { name: r.resource, u };
  }
  return top ? { resource: top.name, kind: resourceKind(top.name), utilization: round(top.u) } : undefined;
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** The base name of an operation: io for io@emulated, io@before. */
function baseOp(op: string): string {
  const at = op.indexOf('@');
  return at < 0 ? op : op.slice(0, at);
}

/**
 * The application section of a run, or undefined when its workload has no application
 * (dma-map-benchmark, sva-unmap-storm, trace-replay). `ops` are the run's operations by name and
 * count; `q` the replay and `elapsedNs` the modeled run it yields.
 */
export function applicationResult(
  workload: Scenario['workload'],
  ops: readonly { op: string; count: number }[],
  q: Pick<QueueingResult, 'resources'>,
  elapsedNs: number,
): ApplicationResult | undefined {
  if (!APPLICATION_WORKLOADS.includes(workload.kind)) return undefined;
  const count = ops.filter((o) => baseOp(o.op) === 'io').reduce((n, o) => n + o.count, 0);
  const perSec = elapsedNs > 0 ? count / (elapsedNs / 1e9) : 0;
  const bytes = workload.kind === 'packet-stream' ? workload.packetBytes : Math.max(1, workload.granulePages) * PAGE_SIZE;
  const utilization: Record<string, number> = {};
  let top: { name: string; u: number } | undefined;
  let longest: { name: string; ns: number } | undefined;
  for (const r of q.resources) {
    const u = workingUtilization(r, elapsedNs);
    utilization[r.resource] = round(u);
    // Ties go to the first by name: deterministic.
    if (!top || u > top.u + 1e-12) top = { name: r.resource, u };
    const spent = r.busyNs + r.waitNs;
    if (!longest || spent > longest.ns) longest = { name: r.resource, ns: spent };
  }
  const saturated = top !== undefined && top.u >= SATURATED;
  const bottleneck = (saturated ? top?.name : longest?.name) ?? '-';
  return {
    unit: APPLICATION_UNITS[workload.kind] ?? 'ios',
    count,
    perSecModeled: round(perSec, 0),
    bytesPerSecModeled: round(perSec * bytes, 0),
    bottleneck,
    bottleneckKind: resourceKind(bottleneck),
    saturated,
    utilization,
  };
}
