import { Errno } from '../common/errors.js';
import type { StartReply } from '../common/generated/vmmsim/v1/StartReply.js';
import { EMPTY, type RoleEnv, type RoleInstance } from '../common/role-api.js';
import { guestDriver, type GuestDriver } from './driver.js';
import './driver-none.js';
import './driver-nested-smmuv3.js';
import { OpStats } from './op-stats.js';
import { dmaMapBenchmark } from './workload.js';

/** guest-N: a VM's guest OS running the workload through its DMA API and IOMMU driver. */
class GuestRole implements RoleInstance {
  private readonly driver: GuestDriver;
  private operations = 0;

  constructor(private readonly env: RoleEnv) {
    const factory = guestDriver(env.topology.model);
    if (!factory) throw new Error(`guest has no driver for model ${env.topology.model}`);
    this.driver = factory(env);
  }

  async handle(): Promise<{ status: number; payload: Buffer }> {
    // Nothing upstream of a guest sends it requests.
    return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
  }

  async start(): Promise<StartReply> {
    const stats = new OpStats(this.env.endpoints);
    const w = this.env.topology.workload;
    if (!w) throw new Error('topology has no workload');
    const r = await dmaMapBenchmark(this.env, this.driver, stats, w);
    this.operations += r.operations;
    return {
      ops: stats.opReports(),
      hops: stats.hopReports(),
      elapsedSec: r.elapsedNs / 1e9,
      modeledElapsedNs: Math.max(0, ...r.modeledPerThreadNs),
      guestCommands: this.driver.guestCommands,
    };
  }

  stats(): Record<string, number> {
    return { operations: this.operations, guestCommands: this.driver.guestCommands };
  }
}

export function createRole(env: RoleEnv): RoleInstance {
  return new GuestRole(env);
}
