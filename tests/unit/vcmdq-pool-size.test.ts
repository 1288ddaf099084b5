import { describe, expect, it } from 'vitest';
import { proportionateWorkers } from '../../worker-pool/pool.js';

describe('worker threads of a CMDQV', () => {
  it('split the cores among the CMDQVs of the host, at least one each and never more than the queues', () => {
    // One pSMMU on two cores: a thread per queue, two at most.
    expect(proportionateWorkers(1, 1, 2)).toBe(1);
    expect(proportionateWorkers(2, 1, 2)).toBe(2);
    expect(proportionateWorkers(8, 1, 2)).toBe(2);
    // Sixteen pSMMUs on two cores: one thread each (16 in all, not 32).
    expect(proportionateWorkers(2, 16, 2)).toBe(1);
    expect(proportionateWorkers(2, 2, 2)).toBe(1);
    // More cores than CMDQVs: still bounded by the queues and by two.
    expect(proportionateWorkers(4, 2, 16)).toBe(2);
    expect(proportionateWorkers(1, 2, 16)).toBe(1);
  });
});
