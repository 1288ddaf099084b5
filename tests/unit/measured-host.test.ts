import { describe, expect, it } from 'vitest';
import { MEASURED_HOST, measuredHostProfile } from '../../services/controller/measured-host.js';
import { loadProfile } from '../../services/cost/profile.js';

const base = loadProfile('arm64-kunpeng920');
const hop = (fromRole: string, toRole: string, p50Us: number) => ({ fromRole, toRole, p50Us, count: 500 });
const hops = [
  hop('guest', 'kvm', 10), hop('kvm', 'guest', 12),
  hop('kvm', 'qemu', 20), hop('qemu', 'kvm', 21),
  hop('qemu', 'vfio', 30), hop('vfio', 'qemu', 31),
  hop('vfio', 'psmmu', 40), hop('psmmu', 'vfio', 41),
];

describe('the measured-host profile', () => {
  it('replaces each transition with the measured round trip of its hop and keeps the rest', () => {
    const p = measuredHostProfile(base, hops, 'now');
    expect(p.name).toBe(MEASURED_HOST);
    expect(p.steps['exit.mmio_trap']?.ns).toBe(22_000);
    expect(p.steps['exit.hcall']?.ns).toBe(22_000);
    expect(p.steps['exit.to_user']?.ns).toBe(41_000);
    expect(p.steps['ioctl.syscall']?.ns).toBe(61_000);
    expect(p.steps['smmu.sync']?.ns).toBe(81_000);
    expect(p.steps['smmu.cmd_exec']).toEqual(base.steps['smmu.cmd_exec']);
    for (const s of ['exit.mmio_trap', 'exit.to_user', 'ioctl.syscall', 'smmu.sync']) {
      expect(p.steps[s]?.source).toMatch(/measured on this host now: p50 round trip/);
      // Without the spread of the hops, the range is the measured round trip alone.
      expect(p.steps[s]?.range).toEqual([p.steps[s]?.ns, p.steps[s]?.ns]);
      expect(p.steps[s]?.rangeReason).toMatch(/fastest to p99/);
    }
    expect(p.arch).toBe(base.arch);
  });

  it('ranges each measured step over the same round trips, fastest to p99', () => {
    const spread = hops.map((h) => ({ ...h, minUs: h.p50Us - 1, p99Us: h.p50Us + 5 }));
    const p = measuredHostProfile(base, spread, 'now');
    expect(p.steps['exit.mmio_trap']).toMatchObject({ ns: 22_000, range: [20_000, 32_000] });
    expect(p.steps['smmu.sync']).toMatchObject({ ns: 81_000, range: [79_000, 91_000] });
  });

  it('refuses a calibration run that lacks a hop', () => {
    expect(() => measuredHostProfile(base, hops.slice(2), 'now')).toThrow(/no guest -> kvm/);
  });
});
