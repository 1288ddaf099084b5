import { describe, expect, it } from 'vitest';
import { CmdqGather } from '../../services/designs/nested-smmuv3/cmdq-gather.js';
import { VcpuClocks } from '../../services/guest/vcpu-clocks.js';
import { OpContext } from '../../services/runtime/op-context.js';
import { CostTable, COST_STEPS } from '../../services/cost/steps.js';

const costs = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));

/** Two vCPUs running one operation each from modeled time `starts[t]`. */
function rig(starts: number[]): { clocks: VcpuClocks; ctx: OpContext[]; gather: CmdqGather; reserved: number[] } {
  const vcpuNs = [...starts];
  const clocks = new VcpuClocks(vcpuNs);
  clocks.reset(starts.length);
  const ctx = starts.map((_, t) => new OpContext(t + 1, 0, costs, new Map()));
  ctx.forEach((c, t) => clocks.begin(t, c));
  let prod = 0;
  const reserved: number[] = [];
  const gather = new CmdqGather(clocks, (slots) => {
    reserved.push(prod);
    prod += slots;
    return prod - slots;
  });
  return { clocks, ctx, gather, reserved };
}

describe('gathering command lists in modeled time (arm_smmu_cmdq_issue_cmdlist)', () => {
  it('a CPU that reserves while the owner gathers joins it, whatever order the processes run in', async () => {
    for (const order of [[0, 1], [1, 0]]) {
      const r = rig([1000, 1000]);
      // Both reach the queue 100 ns into their operation (the same modeled time); in real time in `order`.
      const decisions = new Map<number, Promise<{ owner: boolean }>>();
      for (const t of order) {
        (r.ctx[t] as OpContext).modeledNs = 100;
        decisions.set(t, r.gather.arrive(t, 1100, 2, 40));
      }
      const d0 = await decisions.get(0);
      const d1 = await decisions.get(1);
      // Ties go to the lower CPU: CPU 0 owns, CPU 1 is gathered, slots in that order.
      expect([d0?.owner, d1?.owner], `order ${order.join(',')}`).toEqual([true, false]);
      expect(r.reserved).toEqual([0, 2]);
    }
  });

  it('an arrival past the owner\'s window starts a gather of its own, which waits for the previous PROD write', async () => {
    const r = rig([0, 0]);
    (r.ctx[0] as OpContext).modeledNs = 100;
    (r.ctx[1] as OpContext).modeledNs = 500;
    const first = await r.gather.arrive(0, 100, 2, 40);
    const second = r.gather.arrive(1, 500, 2, 40);
    await first.gather.closed.promise;
    expect(first.owner).toBe(true);
    expect(first.gather.members.map((m) => m.cpu)).toEqual([0]);
    // CPU 0's PROD write returns at 2000 (CPU 1's reservation waits for it: until then CPU 0 might
    // come back before 500); CPU 1, which reserved at 500, gathers until then.
    r.gather.published(first.gather, { status: 0, doneAt: 2000 });
    (r.ctx[0] as OpContext).modeledNs = 2000;
    r.clocks.changed();
    const d = await second;
    expect(d.owner).toBe(true);
    await d.gather.closed.promise;
    expect(d.gather.closesAt).toBe(2000);
  });

  it('waits while another vCPU could still reserve earlier, and goes on once its clock is past', async () => {
    const r = rig([0, 0]);
    (r.ctx[1] as OpContext).modeledNs = 300;
    let decided = false;
    const d = r.gather.arrive(1, 300, 2, 40).then((x) => {
      decided = true;
      return x;
    });
    await new Promise((resolve) => setImmediate(resolve));
    // CPU 0 is at 0: it could still reserve before 300.
    expect(decided).toBe(false);
    (r.ctx[0] as OpContext).modeledNs = 1000;
    r.clocks.end(0);
    r.clocks.begin(0, r.ctx[0] as OpContext);
    expect((await d).owner).toBe(true);
  });
});
