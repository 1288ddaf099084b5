import { describe, expect, it } from 'vitest';
import { MEASURED_HOST, MEASURED_HOST_STEPS, measureCopy, measureSyscall, measureWakeup, measuredHostProfile, type HostCalibration } from '../../services/controller/measured-host.js';
import { loadProfile } from '../../services/cost/profile.js';

const base = loadProfile('arm64-kunpeng920');
const c = (p50Ns: number, how: string) => ({ p50Ns, p5Ns: p50Ns * 0.8, p95Ns: p50Ns * 1.5, samples: 200, how });
const cal: HostCalibration = { syscall: c(412.3, 'fstat loop'), wakeup: c(9000, 'pipe ping-pong'), copy4k: c(150.4, 'Buffer.copy') };

describe('the measured-host profile', () => {
  it('replaces only what this host measured about itself, and keeps every exit and SMMU step of its base', () => {
    const p = measuredHostProfile(base, cal, 'now');
    expect(p.name).toBe(MEASURED_HOST);
    expect(p.steps['ioctl.syscall']?.ns).toBe(412);
    expect(p.steps['host.thread_wakeup']?.ns).toBe(9000);
    expect(p.steps['guest.bounce_copy']?.ns).toBe(150);
    for (const s of MEASURED_HOST_STEPS) {
      const step = p.steps[s];
      expect(step?.source).toMatch(/^measured on this host now: .* p50 of 200 samples of /);
      expect(step?.confidence).toBe('S');
      // Reloadable: ns lies inside the range, as the profile loader demands.
      const [lo, hi] = step?.range ?? [NaN, NaN];
      expect(step?.ns).toBeGreaterThanOrEqual(lo);
      expect(step?.ns).toBeLessThanOrEqual(hi);
    }
    // No gRPC hop stands for a VM exit any more: the exits are the base profile's sourced values.
    for (const s of ['exit.mmio_trap', 'exit.hcall', 'exit.to_user', 'smmu.sync', 'smmu.cmd_exec']) expect(p.steps[s]).toEqual(base.steps[s]);
    expect(Object.keys(p.steps).filter((k) => p.steps[k] !== base.steps[k]).sort()).toEqual([...MEASURED_HOST_STEPS].sort());
    expect(p.arch).toBe(base.arch);
  });

  it('measures a syscall, a 4 KiB copy and a wake-up through a pipe on this host', async () => {
    const s = measureSyscall(20, 50);
    const m = measureCopy(20);
    const w = await measureWakeup(200, 50);
    for (const x of [s, m, w]) {
      expect(x.p50Ns).toBeGreaterThan(0);
      expect(x.p5Ns).toBeLessThanOrEqual(x.p50Ns);
      expect(x.p95Ns).toBeGreaterThanOrEqual(x.p50Ns);
    }
    expect(w.samples).toBe(200);
  });
});
