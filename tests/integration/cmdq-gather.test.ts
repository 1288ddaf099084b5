import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { RunResult } from '../../services/controller/results.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * Linux's lock-free command queue across CPUs (arm_smmu_cmdq_issue_cmdlist) through real
 * processes: vCPUs whose lists reach a queue while its owner gathers are published by the owner's
 * one PROD write, and each polls CONS for its own sync. Decided in modeled time: the same counts
 * and figures run after run.
 */
const base = { device: { dmaRate: 0 }, workload: { ops: 120 } };
const fx = useProcessTree(resolveScenario(base));
const unmap = (run: RunResult): RunResult['ops'][number] | undefined => run.ops.find((o) => o.op === 'unmap');

describe('gathering command lists across vCPUs', () => {
  it('nested-smmuv3: one vCPU pays a PROD write and a CONS read per unmap; n vCPUs in step share one PROD write', async () => {
    await withSession(fx, async (session) => {
      const exits: number[] = [];
      for (const threads of [1, 2, 4]) {
        const s = resolveScenario({ ...base, workload: { ops: 120, threads } });
        const a = await session.run(s, 'nested-smmuv3', testProfile);
        const b = await session.run(s, 'nested-smmuv3', testProfile);
        // Decided in modeled time: identical, whatever the processes' interleaving.
        expect(unmap(b)?.modeledNs, `${threads} vCPUs`).toEqual(unmap(a)?.modeledNs);
        expect(unmap(b)?.transitions).toEqual(unmap(a)?.transitions);
        exits.push(unmap(a)?.transitions.exit ?? 0);
        // Every command still reaches the pSMMU once (QEMU forwards each), and none fails.
        expect(a.invalidations).toMatchObject({ guestCommands: 120, guestCommandsFailed: 0, deliveredPerPsmmu: { 'psmmu-0': 120 } });
        expect(unmap(a)?.transitions.ioctl).toBe(1);
      }
      // 1 + 1/n exits per unmap: a CONS read each, one PROD write per n lists.
      expect(exits).toEqual([2, 1.5, 1.25]);
    });
  });

  it('the host design\'s CPUs share the pSMMU\'s PROD writes; VCMDQs are shared only by the CPUs on the same queue', async () => {
    await withSession(fx, async (session) => {
      const four = resolveScenario({ ...base, workload: { ops: 120, threads: 4 } });
      expect(unmap(await session.run(four, 'host', testProfile))?.transitions.hw).toBe(0.25);
      // Two VCMDQs for four vCPUs: CPUs 0 and 2 share one, 1 and 3 the other.
      const vcmdq = await session.run(resolveScenario({ ...base, topology: { vsmmu: 'per-psmmu' }, workload: { ops: 120, threads: 4 } }), 'nested-smmuv3-vcmdq', testProfile);
      expect(unmap(vcmdq)?.transitions.direct).toBe(1.5);
    });
  });
});
