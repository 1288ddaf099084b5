import { describe, expect, it } from 'vitest';
import { resolveScenario } from '../../services/scenario/validate.js';
import { devices } from '../../services/controller/session.js';

describe('the devices a scenario assigns', () => {
  it('gives every device behind a pSMMU its own host RID, past 32 devices too', () => {
    const s = resolveScenario({ topology: { psmmus: 2, vms: 2, devicesPerPsmmu: 256 } });
    const all = devices(s);
    expect(all).toHaveLength(512);
    for (let p = 0; p < 2; p++) {
      const psids = all.filter((d) => d.psmmu === p).map((d) => d.psid ?? -1);
      expect(new Set(psids).size).toBe(256);
      // All on the pSMMU's own bus: a RID is 16 bits, bus in the high byte.
      expect(psids.every((sid) => sid >> 8 === p + 1 && sid < 1 << 16)).toBe(true);
    }
    // The first 32 keep function 0 (the RIDs earlier runs used).
    expect(all.slice(0, 3).map((d) => d.psid)).toEqual([0x100, 0x108, 0x110]);
  });

  it('gives each of a VM\'s devices its own vSID', () => {
    const s = resolveScenario({ topology: { psmmus: 4, vms: 2, devicesPerPsmmu: 20 } });
    for (const vm of [0, 1]) {
      const vsids = devices(s).filter((d) => d.vm === vm).map((d) => d.vsid);
      expect(new Set(vsids).size).toBe(vsids.length);
    }
  });
});
