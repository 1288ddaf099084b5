import { describe, expect, it } from 'vitest';
import { ModeledOrder } from '../../services/guest/modeled-order.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('the vCPUs\' turns in modeled time', () => {
  it('lets the earliest claim go first whatever order the claims arrive in, and waits for a vCPU whose clock is behind', async () => {
    const o = new ModeledOrder(3);
    const went: number[] = [];
    o.at(2, 50);
    const late = o.turn(0, 300).then(() => went.push(0));
    const early = o.turn(1, 100).then(() => went.push(1));
    await tick();
    // vCPU 2 is at 50 and may still do something earlier than both.
    expect(went).toEqual([]);
    o.at(2, 200);
    await tick();
    expect(went).toEqual([1]);
    // vCPU 1 is now running its operation (floor 100): vCPU 0 waits for it to move on.
    o.at(1, 400);
    await tick();
    expect(went).toEqual([1]);
    o.finish(2);
    await Promise.all([late, early]);
    expect(went).toEqual([1, 0]);
  });

  it('does not wait for a vCPU parked at a step, and breaks ties by vCPU', async () => {
    const o = new ModeledOrder(2);
    o.park(1);
    await o.turn(0, 10);
    o.unpark(1);
    o.at(0, 10);
    const went: number[] = [];
    const b = o.turn(1, 10).then(() => went.push(1));
    await tick();
    expect(went).toEqual([]); // vCPU 0 at 10 goes first on a tie
    o.at(0, 11);
    await b;
    expect(went).toEqual([1]);
  });
});
