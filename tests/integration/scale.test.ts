import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import type { RunResult } from '../../services/controller/results.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * Scale on a 2-core machine: 16 pSMMU processes and 4 VMs (4 guests, 4 qemus), one device behind
 * each pSMMU, dealt to the VMs in turn, so VM v owns the devices behind psmmu-v, -(v+4), -(v+8)
 * and -(v+12). Every VM runs 40 map+unmap iterations on 4 threads (one per device) while its
 * devices DMA into their buffers and linger on unmapped ones. The fixture starts the 26 processes
 * once, and after the file checks with the OS that none is left.
 */
const PSMMUS = 16;
const VMS = 4;
const OPS = 40;
const base = {
  topology: { psmmus: PSMMUS, vms: VMS, devicesPerPsmmu: 1 },
  device: { lingerMs: 20, lingerShare: 0.5 },
  workload: { ops: OPS, threads: 4 },
};
const scenario = (vsmmu: 'single' | 'per-psmmu'): ReturnType<typeof resolveScenario> =>
  resolveScenario({ ...base, topology: { ...base.topology, vsmmu } });
// 26 processes share 2 cores: each takes ~0.7 s of CPU to start, more when the machine is busy.
const fx = useProcessTree(scenario('single'), { startTimeoutMs: 90_000 });

const psmmuNames = Array.from({ length: PSMMUS }, (_, k) => `psmmu-${k}`);
const vmOf = (psmmu: number): number => psmmu % VMS;

/** What every run must show: each guest ran its share, and no VM's DMA saw a stale or foreign entry. */
function checkIsolation(run: RunResult): void {
  for (let vm = 0; vm < VMS; vm++) expect(run.counters[`guest-${vm}`]?.['operations'], `guest-${vm} operations`).toBe(2 * OPS);
  expect(run.ops.find((o) => o.op === 'map')?.count).toBe(VMS * OPS);
  expect(run.ops.find((o) => o.op === 'unmap')?.count).toBe(VMS * OPS);
  for (const p of psmmuNames) {
    const c = run.counters[p] ?? {};
    // Its one device translated, hostile accesses after unmap were made, and strict mode served none of them from a stale entry.
    expect(c['translations'], `${p} translations`).toBeGreaterThan(0);
    expect(c['staleTranslations'], `${p} staleTranslations`).toBe(0);
    // Each invalidation that reached this pSMMU dropped at most its own page: nothing it did not name.
    const relevant = (c['commands'] ?? 0) - (c['wasted'] ?? 0) + (c['vcmdqCommands'] ?? 0);
    expect(c['iotlbInvalidated'] ?? 0, `${p} iotlbInvalidated`).toBeLessThanOrEqual(relevant);
  }
  expect(run.dma.useAfterUnmap).toBeGreaterThan(0);
  expect(run.dma.staleTranslations).toBe(0);
}

describe('16 pSMMUs and 4 VMs on one host', () => {
  it('one vSMMU per VM broadcasts each invalidation to the VM\'s 4 pSMMUs, 3 of which hold nothing it names', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario('single'), 'nested-smmuv3', testProfile);
      checkIsolation(run);
      // An ioctl per pSMMU of the VM; a CONS read per unmap and a PROD write unless another of the
      // VM's 4 vCPUs published its list (arm_smmu_cmdq_issue_cmdlist gathers): 1.25 to 2 exits.
      const t = run.ops.find((o) => o.op === 'unmap')?.transitions;
      expect({ ioctl: t?.ioctl, hw: t?.hw, direct: t?.direct }).toEqual({ ioctl: 4, hw: 4, direct: 0 });
      expect(t?.user).toBe(t?.exit);
      expect(t?.exit).toBeGreaterThanOrEqual(1.25);
      expect(t?.exit).toBeLessThanOrEqual(2);
      expect(run.invalidations.guestCommands).toBe(VMS * OPS);
      expect(run.invalidations.fanout).toBe(4);
      // Every pSMMU gets all of its own VM's invalidations and nothing from the other VMs.
      for (const [k, p] of psmmuNames.entries()) {
        expect(run.invalidations.deliveredPerPsmmu[p], p).toBe(OPS);
        expect(run.counters[p]?.['wasted'], p).toBe(OPS - OPS / 4);
        expect(run.counters[`guest-${vmOf(k)}`]?.['guestCommands']).toBe(OPS);
      }
      expect(run.invalidations.wasted).toBe((3 / 4) * 4 * VMS * OPS);
    });
  });

  it('one vSMMU per pSMMU: each invalidation reaches only the pSMMU of its device', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario('per-psmmu'), 'nested-smmuv3', testProfile);
      checkIsolation(run);
      expect(run.ops.find((o) => o.op === 'unmap')?.transitions).toEqual({ exit: 2, user: 2, ioctl: 1, hw: 1, direct: 0 });
      expect(run.invalidations.fanout).toBe(1);
      expect(run.invalidations.wasted).toBe(0);
      // Thread t of each VM drives device t: a quarter of the VM's unmaps each.
      for (const p of psmmuNames) expect(run.invalidations.deliveredPerPsmmu[p], p).toBe(OPS / 4);
    });
  });

  it('VCMDQs per pSMMU: 16 CMDQVs, each with its VM\'s queues, and every invalidation goes direct', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(scenario('per-psmmu'), 'nested-smmuv3-vcmdq', testProfile);
      checkIsolation(run);
      expect(run.ops.find((o) => o.op === 'unmap')?.transitions).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 2 });
      expect(run.invalidations.fanout).toBe(1);
      expect(run.invalidations.wasted).toBe(0);
      for (const p of psmmuNames) {
        expect(run.counters[p]?.['vcmdqCommands'], p).toBe(OPS / 4);
        expect(run.counters[p]?.['commands'], p).toBe(0);
        expect(run.counters[p]?.['vcmdqsMissing'], p).toBe(0);
        // The 16 CMDQVs split the cores: one worker thread each on 2 cores, not one per queue.
        expect(run.counters[p]?.['vcmdqWorkers'], p).toBe(Math.max(1, Math.min(2, Math.floor(availableParallelism() / PSMMUS))));
      }
    });
  });
});
