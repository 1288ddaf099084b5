import { describe, expect, it } from 'vitest';
import { MODEL } from '../../services/designs/names.js';
import type { RunResult } from '../../services/controller/results.js';
import { DDW_WINDOW } from '../../services/formats/spapr-tce.js';
import { DDW_BOOT_OP } from '../../services/machine/setup-ops.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * guest.ddw through real processes: the pseries guest gives its 64-bit device a dynamic DMA window
 * over all its RAM at boot (enable_ddw's direct mapping, H_PUT_TCE_INDIRECT of 512 TCEs at a time,
 * each TCE written and killed on the host), reported apart as ddw-boot; afterwards every map and
 * unmap is direct, with no hypercall, and the device's DMA goes through the window's TCEs.
 */
const OPS = 40;
const scenario = resolveScenario({ name: 'ddw', model: MODEL.spaprTce, guest: { ddw: true }, device: { dmaRate: 20_000 }, workload: { ops: OPS, dwellUs: 200 } });
const fx = useProcessTree(scenario);
const op = (run: RunResult, name: string) => run.ops.find((o) => o.op === name);
const TCES = DDW_WINDOW.entries;

describe('sPAPR dynamic DMA window (guest.ddw)', () => {
  for (const model of [MODEL.spaprTce, MODEL.spaprTceKvm]) {
    it(`${model}: one boot mapping of all RAM, then no hypercall per I/O, and the device's DMA translates through the window`, async () => {
      await withSession(fx, async (session) => {
        const run = await session.run(scenario, model, testProfile);
        const boot = op(run, DDW_BOOT_OP);
        expect(boot?.count).toBe(1);
        // 16 GiB in 16 MiB TCEs: 1024 TCEs, 512 per H_PUT_TCE_INDIRECT; one kill per TCE on the one PE
        // (KVM: kvmppc_tce_iommu_map per TCE; QEMU: one 16 MiB MAP_DMA per TCE, each tce_iommu_build_v2).
        const hcalls = TCES / 512;
        expect(boot?.transitions).toEqual(model === MODEL.spaprTce
          ? { exit: hcalls, user: hcalls, ioctl: TCES, hw: TCES, direct: 0 }
          : { exit: hcalls, user: 0, ioctl: 0, hw: TCES, direct: 0 });
        for (const name of ['map', 'unmap']) {
          expect(op(run, name)?.count, name).toBe(OPS);
          expect(op(run, name)?.failed, name).toBe(0);
          expect(op(run, name)?.transitions, name).toEqual({ exit: 0, user: 0, ioctl: 0, hw: 0, direct: 0 });
          expect(op(run, name)?.modeledNs.mean, name).toBe(testProfile.steps['guest.dma_direct']?.ns);
        }
        // Throughput counts the workload's operations over the workload's time, not the boot.
        const direct = testProfile.steps['guest.dma_direct']?.ns ?? Number.NaN;
        expect(run.throughput.opsPerSecModeled).toBeCloseTo((2 * OPS) / ((OPS * (200_000 + 2 * direct)) / 1e9), 0);
        expect(run.dma.translations).toBeGreaterThan(0);
        expect(run.dma.faults).toBe(0);
      });
    });
  }
});
