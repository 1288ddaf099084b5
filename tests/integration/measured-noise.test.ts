import { spawn, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { describe, expect, it } from 'vitest';
import { NOTE_CODES } from '../../services/controller/measured-notes.js';
import type { RunResult } from '../../services/controller/results.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { testProfile, useProcessTree, withSession } from '../helpers/tree.js';

/**
 * The measured part of a run on real processes: repeated trials give every measured figure an
 * interval, warm-up operations are left out and counted, a guest told so times the bare floor
 * between its operations, and a machine loaded by CPU hogs is named in the run's notes. No figure
 * is compared with a wall-clock value: only the shapes, and that the modeled part never moves.
 */
const scenario = resolveScenario({ device: { dmaRate: 0 }, workload: { ops: 150 } });
const fx = useProcessTree(scenario);

/** The deterministic sections, to compare runs. */
const modeled = (r: RunResult): unknown => ({ ops: r.ops.map((o) => ({ op: o.op, count: o.count, modeledNs: o.modeledNs })), modeledElapsedNs: r.modeledElapsedNs, resources: r.modeledResources });

/** One busy loop per core, in processes of their own (no marker: they are not the tree's). */
function hogs(): ChildProcess[] {
  const env = { ...process.env };
  delete env['VMMSIM_TEST_MARKER'];
  return cpus().map(() => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore', env }));
}

describe('measured trials and noise notes', () => {
  it('repeats the measured part: each figure a median with its interval, warm-up left out, modeled figures unchanged', async () => {
    await withSession(fx, async (session) => {
      const plain = await session.run(scenario, 'nested-smmuv3', testProfile);
      expect(plain.measured?.trials).toBe(1);
      expect(plain.measured?.ops.every((o) => o.p50Us.ci95 === null)).toBe(true);
      session.measure = { trials: 3, warmup: 10, placement: null, floor: undefined };
      const run = await session.run(scenario, 'nested-smmuv3', testProfile, { floorPeer: 'kvm' });
      const m = run.measured;
      expect(m?.trials).toBe(3);
      expect(m?.warmupOps).toBe(10);
      // Each trial leaves its thread's first 10 operations out.
      expect(m?.warmupOpsExcluded).toBe(30);
      expect(m?.ops.find((o) => o.op === 'unmap')?.count).toBe(3 * (150 - 5));
      for (const f of [...(m?.ops.flatMap((o) => [o.p50Us, o.p99Us]) ?? []), ...(m?.hops.map((h) => h.p50Us) ?? []), m?.opsPerSec]) {
        expect(f?.trials).toHaveLength(3);
        expect(f?.ci95).not.toBeNull();
        expect((f?.ci95 as [number, number])[0]).toBeLessThanOrEqual((f?.ci95 as [number, number])[1]);
      }
      expect(m?.inPathFloorUs?.trials).toHaveLength(3);
      expect(m?.transitions.map((t) => t.kind)).toEqual(['exit', 'user', 'ioctl', 'hw']);
      expect(modeled(run)).toEqual(modeled(plain));
    });
  }, 120_000);

  it('names a busy machine in the run\'s notes when CPU hogs share its cores', async () => {
    const running = hogs();
    try {
      // Let the hogs take the cores before the measured part starts.
      await new Promise((r) => setTimeout(r, 500));
      await withSession(fx, async (session) => {
        session.measure = { trials: 2, warmup: 0, placement: null, floor: undefined };
        const run = await session.run(scenario, 'nested-smmuv3', testProfile);
        expect(run.measured?.machine.othersCores).toBeGreaterThan(0);
        expect(run.notes?.map((n) => n.code)).toContain(NOTE_CODES.machineBusy);
      });
    } finally {
      for (const h of running) h.kill('SIGKILL');
    }
  }, 120_000);
});
