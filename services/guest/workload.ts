import { VmmsimError } from '../runtime/errors.js';
import { traceReplay } from './replay.js';
import { blockIo } from './workloads/block.js';
import type { WorkloadEnv, WorkloadRun } from './workloads/common.js';
import { dmaMapBenchmark } from './workloads/dma-map-benchmark.js';
import { packetStream } from './workloads/packet-stream.js';
import { svaUnmapStorm } from './workloads/sva-unmap-storm.js';

export type { WorkloadEnv, WorkloadResult, WorkloadRun, WorkloadSpec } from './workloads/common.js';
export { dmaMapBenchmark };

/** The guest's workload generators by workload.kind (a file each under workloads/, trace-replay in replay.ts). */
const WORKLOADS: Record<string, (env: WorkloadEnv) => Promise<WorkloadRun>> = {
  'dma-map-benchmark': dmaMapBenchmark,
  'packet-stream': packetStream,
  block: blockIo,
  'sva-unmap-storm': svaUnmapStorm,
  'trace-replay': (env) => traceReplay(env.kernel, env.dma, env.stats, env.w),
};

/** Runs the scenario's workload on the guest. */
export function runWorkload(env: WorkloadEnv): Promise<WorkloadRun> {
  const run = WORKLOADS[env.w.kind];
  if (!run) throw new VmmsimError('E_NOT_SUPPORTED', `workload.kind "${env.w.kind}" is not implemented by this guest; it runs ${Object.keys(WORKLOADS).join(', ')}`);
  return run(env);
}
