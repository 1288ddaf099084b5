import { describe, expect, it } from 'vitest';
import { MODEL } from '../../services/designs/names.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * A well-behaved device never faults in strict mode. Reported as: intel-cm, strict, packet-stream
 * with workload.dwellUs=2 produced F_TRANSLATION faults. The cause was the device model, in every
 * design: each tick it read its ring once and then issued its accesses from that snapshot, so the
 * driver (another process) could retire and unmap a buffer between the read and an access, and the
 * access walked a table that no longer mapped it. The device now claims the slots it accesses and
 * the driver waits for the claim to go before it unmaps (DeviceRing.retire / claim). A high DMA rate
 * and a 2 us dwell make the race frequent (before the fix: tens to hundreds of faults in 2000 packets).
 */
const scenario = resolveScenario({
  dma: 'strict',
  device: { dmaRate: 100_000 },
  workload: { kind: 'packet-stream', dwellUs: 2, ops: 800 },
});
const fx = useProcessTree(scenario);

describe('a well-behaved device in strict mode', () => {
  for (const model of [MODEL.intelCm, MODEL.nestedSmmuv3]) {
    it(`${model}: packet-stream with a 2 us dwell: DMA into every posted buffer, no fault, no use after unmap`, async () => {
      await withSession(fx, async (session) => {
        const run = await session.run(scenario, model, testProfile);
        expect(run.ops.find((o) => o.op === 'unmap')?.failed).toBe(0);
        expect(run.dma.translations).toBeGreaterThan(1000);
        expect(run.dma.faults).toBe(0);
        expect(run.dma.useAfterUnmap).toBe(0);
        expect(run.dma.staleTranslations).toBe(0);
      });
    }, 120_000);
  }
});
