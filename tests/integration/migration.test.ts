import { describe, expect, it } from 'vitest';
import type { RunResult } from '../../services/controller/results.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * Live migration in the middle of a run: VM 0 (one vSMMU with 2 VCMDQs, 2 vCPUs, 40 map+unmap
 * iterations) migrates after 40 of its 80 operations to a destination with fewer free VCMDQs. Its
 * VMM destroys the HW queues (last first) and allocates what the destination has (first first);
 * the vCPU whose VCMDQ is gone falls back to the trapped vSMMU queue.
 */
const base = { topology: { psmmus: 1, vcmdqsPerVsmmu: 2 }, workload: { ops: 40, threads: 2 } };
const fx = useProcessTree(resolveScenario(base));

function migrating(destVcmdqs: number, atOp = 40, fallback: 'vmm' | 'kvm' = 'vmm'): ReturnType<typeof resolveScenario> {
  return resolveScenario({ ...base, workload: { ...base.workload, migration: { atOp, destVcmdqs, fallback } } });
}

const step = (k: string): number => testProfile.steps[k]?.ns ?? Number.NaN;

function op(run: RunResult, name: string): RunResult['ops'][number] {
  const o = run.ops.find((x) => x.op === name);
  if (!o) throw new Error(`no ${name} in ${run.ops.map((x) => x.op).join(', ')}`);
  return o;
}

const DIRECT = { exit: 0, user: 0, ioctl: 0, hw: 0, direct: 2 };
/**
 * Two vCPUs on the trapped queue: each unmap pays an ioctl, a pSMMU sync and a CONS read, and a
 * PROD write unless another vCPU's PROD write published its list (arm_smmu_cmdq_issue_cmdlist
 * gathers), so between 1.5 and 2 exits per unmap, as many user as exits.
 */
function expectTrapped(t: RunResult['ops'][number]['transitions']): void {
  expect({ ioctl: t.ioctl, hw: t.hw, direct: t.direct }).toEqual({ ioctl: 1, hw: 1, direct: 0 });
  expect(t.user).toBe(t.exit);
  expect(t.exit).toBeGreaterThanOrEqual(1.5);
  expect(t.exit).toBeLessThanOrEqual(2);
}
const NONE = { exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 };

describe('live migration to a host with fewer free VCMDQs', () => {
  it('one VCMDQ left: before, both vCPUs unmap direct; after, one stays direct and the other traps', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(migrating(1), 'nested-smmuv3-vcmdq', testProfile);
      expect(run.ops.map((o) => o.op)).toEqual(['map@before', 'unmap@before', 'map@after', 'unmap@after']);
      for (const name of ['map@before', 'unmap@before', 'map@after', 'unmap@after']) expect(op(run, name).count, name).toBe(20);
      expect(op(run, 'map@before').transitions).toEqual(NONE);
      expect(op(run, 'map@after').transitions).toEqual(NONE);
      expect(op(run, 'unmap@before').transitions).toEqual(DIRECT);
      // Per unmap after the step: half of them (vCPU 0's) direct, half (vCPU 1's) the whole trapped path.
      expect(op(run, 'unmap@after').transitions).toEqual({ exit: 1, user: 1, ioctl: 0.5, hw: 0.5, direct: 1 });
      expect(op(run, 'unmap@after').modeledNs.mean).toBeGreaterThan(op(run, 'unmap@before').modeledNs.mean);
      expect(run.workloadCounters).toMatchObject({ migrations: 1, hwQueuesBefore: 2, hwQueuesAfter: 1 });
      // The cost of re-creating the one queue at the destination, apart from the whole step's
      // (which also destroyed two at the source): one IOMMU_HW_QUEUE_ALLOC, which pins the queue's
      // one page (iommufd_hw_queue_alloc_phys); each IOMMU_DESTROY unpins one.
      expect(run.workloadCounters['hwQueueRecreateNs']).toBeCloseTo(step('ioctl.syscall') + step('kernel.vfio_pin_page'), 6);
      expect(run.workloadCounters['migrationNs']).toBeCloseTo(3 * step('ioctl.syscall') + step('kernel.vfio_pin_page') + 2 * step('kernel.vfio_unpin_page'), 6);
      // vCPU 1's 10 unmaps after the step went through QEMU and the pSMMU's main queue.
      // (a PROD write and a CONS read each, and the driver's probe of the vSMMU's IDR0 and IDR3)
      expect(run.counters['qemu-0']).toMatchObject({ exits: 22, migrations: 1, hwQueuesDestroyed: 2, hwQueuesAllocated: 1 });
      expect(run.counters['vfio']).toMatchObject({ hwQueueDestroy: 2, hwQueueAlloc: 1 });
      expect(run.counters['psmmu-0']).toMatchObject({ vcmdqCommands: 30, commands: 10, vcmdqsUnmapped: 2, vcmdqsMapped: 1, vevents: 0 });
      expect(run.counters['kvm']).toMatchObject({ migrations: 1 });
    });
  });

  it('fallback kvm, one VCMDQ left: the vCPU without one takes KVM\'s in-kernel short path (exit, hw; no VMM, no ioctl)', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(migrating(1, 40, 'kvm'), 'nested-smmuv3-vcmdq', testProfile);
      expect(op(run, 'unmap@before').transitions).toEqual(DIRECT);
      // Half of them (vCPU 0's) direct; half (vCPU 1's) a PROD write and a CONS read KVM takes, and one sync on the pSMMU.
      expect(op(run, 'unmap@after').transitions).toEqual({ exit: 1, user: 0, ioctl: 0, hw: 0.5, direct: 1 });
      expect(op(run, 'unmap@after').failed).toBe(0);
      expect(run.workloadCounters).toMatchObject({ migrations: 1, hwQueuesBefore: 2, hwQueuesAfter: 1 });
      expect(run.workloadCounters['hwQueueRecreateNs']).toBeCloseTo(step('ioctl.syscall') + step('kernel.vfio_pin_page'), 6);
      // vCPU 1's 10 unmaps: 10 PROD writes and 10 CONS reads in KVM, 10 in-kernel calls into iommufd.
      expect(run.counters['kvm']).toMatchObject({ migrations: 1, 'kvmCmdq.prodWrites': 10, 'kvmCmdq.consReads': 10, 'kvmCmdq.handedToVmm': 0, 'kvmCmdq.errors': 0 });
      expect(run.counters['vfio']).toMatchObject({ kernelInvalidate: 10, hwptInvalidate: 0 });
      expect(run.counters['psmmu-0']).toMatchObject({ vcmdqCommands: 30, commands: 10 });
      // The VMM saw only the driver's probe of IDR0 and IDR3.
      expect(run.counters['qemu-0']).toMatchObject({ exits: 2, migrations: 1, hwQueuesAllocated: 1 });
      // Cheaper than falling back to the VMM.
      const vmm = await session.run(migrating(1, 40, 'vmm'), 'nested-smmuv3-vcmdq', testProfile);
      expect(op(run, 'unmap@after').modeledNs.mean).toBeLessThan(op(vmm, 'unmap@after').modeledNs.mean);
    });
  });

  it('no VCMDQ left: every unmap after the step takes the trapped path', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(migrating(0), 'nested-smmuv3-vcmdq', testProfile);
      expect(op(run, 'unmap@before').transitions).toEqual(DIRECT);
      expectTrapped(op(run, 'unmap@after').transitions);
      expect(run.workloadCounters).toMatchObject({ migrations: 1, hwQueuesAfter: 0 });
      expect(run.counters['psmmu-0']).toMatchObject({ vcmdqCommands: 20, commands: 20, vcmdqsUnmapped: 2, vcmdqsMapped: 0 });
    });
  });

  it('as many VCMDQs free: the re-created queues carry on, direct', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(migrating(2), 'nested-smmuv3-vcmdq', testProfile);
      expect(op(run, 'unmap@after').transitions).toEqual(DIRECT);
      expect(run.workloadCounters).toMatchObject({ migrations: 1, hwQueuesAfter: 2 });
      expect(run.counters['psmmu-0']).toMatchObject({ vcmdqCommands: 40, commands: 0, vcmdqsUnmapped: 2, vcmdqsMapped: 2 });
    });
  });

  it('without VCMDQs the VM moves with nothing to re-create, and without a step the names stay plain', async () => {
    await withSession(fx, async (session) => {
      const run = await session.run(migrating(0), 'nested-smmuv3', testProfile);
      expectTrapped(op(run, 'unmap@before').transitions);
      expectTrapped(op(run, 'unmap@after').transitions);
      expect(run.workloadCounters).toMatchObject({ migrations: 1, hwQueuesBefore: 0, hwQueuesAfter: 0 });
      const plain = await session.run(resolveScenario(base), 'nested-smmuv3-vcmdq', testProfile);
      expect(plain.ops.map((o) => o.op)).toEqual(['map', 'unmap']);
      expect(plain.workloadCounters['migrations']).toBeUndefined();
    });
  });
});
