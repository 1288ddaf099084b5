import { nowNs } from '../common/clock.js';
import type { Workload__Output } from '../common/generated/vmmsim/v1/Workload.js';
import { PAGE_SIZE } from '../common/memory.js';
import type { RoleEnv } from '../common/role-api.js';
import type { GuestDriver } from './driver.js';
import { IovaAllocator } from './iova.js';
import type { OpStats } from './op-stats.js';

/** Guest-physical buffers of the benchmark threads start here (above the guest's queues and tables). */
const BUFFER_GPA_BASE = 0x1_0000_0000;
/** The DMA window IOVAs come from (Linux allocates top-down below the device's DMA mask). */
const IOVA_BASE = 0x1000_0000;
const IOVA_LIMIT = 0xffff_f000;

export interface WorkloadResult {
  elapsedNs: number;
  /** Per thread (vCPU) the sum of its operations' modeled time; the run's modeled length is the max. */
  modeledPerThreadNs: number[];
  operations: number;
}

/**
 * Linux's dma_map_benchmark shape: `threads` kernel threads, each mapping a buffer of
 * `granulePages` pages and unmapping it again, until `ops` iterations ran in all or
 * `durationSec` passed. Each map and each unmap is one operation in the results.
 */
export async function dmaMapBenchmark(env: RoleEnv, driver: GuestDriver, stats: OpStats, w: Workload__Output): Promise<WorkloadResult> {
  const threads = Math.max(1, w.threads);
  const pages = Math.max(1, w.granulePages);
  const iterations = w.ops > 0 ? w.ops : Number.POSITIVE_INFINITY;
  const deadline = w.durationSec > 0 ? nowNs() + w.durationSec * 1e9 : Number.POSITIVE_INFINITY;
  const iova = new IovaAllocator(IOVA_BASE, IOVA_LIMIT);
  stats.declare('map');
  stats.declare('unmap');
  let started = 0;
  let opId = 1;
  const modeledPerThreadNs = new Array<number>(threads).fill(0);
  const t0 = nowNs();

  const thread = async (t: number): Promise<void> => {
    const pa = BUFFER_GPA_BASE + t * pages * PAGE_SIZE;
    while (started < iterations && nowNs() < deadline) {
      started += 1;
      const mapCtx = env.newContext(opId++, 0);
      const m0 = nowNs();
      let addr = pa;
      if (driver.translates) {
        addr = iova.alloc(pages);
        mapCtx.charge('guest.iova_alloc');
      }
      const mapStatus = await driver.map(mapCtx, addr, pa, pages);
      const m1 = nowNs();
      modeledPerThreadNs[t] = (modeledPerThreadNs[t] ?? 0) + mapCtx.modeledNs;
      if (mapStatus !== 0) {
        stats.fail('map');
        continue;
      }
      stats.record('map', m1 - m0, mapCtx.modeledNs, mapCtx.trace);

      const unmapCtx = env.newContext(opId++, 0);
      const u0 = nowNs();
      const unmapStatus = await driver.unmap(unmapCtx, addr, pages);
      if (driver.translates) {
        iova.release(addr, pages);
        unmapCtx.charge('guest.iova_free');
      }
      const u1 = nowNs();
      modeledPerThreadNs[t] = (modeledPerThreadNs[t] ?? 0) + unmapCtx.modeledNs;
      if (unmapStatus !== 0) {
        stats.fail('unmap');
        env.log.warn({ status: unmapStatus, iova: addr }, 'unmap failed');
        continue;
      }
      stats.record('unmap', u1 - u0, unmapCtx.modeledNs, unmapCtx.trace);
    }
  };

  await Promise.all(Array.from({ length: threads }, (_, t) => thread(t)));
  return { elapsedNs: nowNs() - t0, modeledPerThreadNs, operations: opId - 1 };
}
