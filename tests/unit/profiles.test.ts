import { describe, expect, it } from 'vitest';
import { loadProfile, profileNames } from '../../services/cost/profile.js';
import { COST_STEPS } from '../../services/cost/steps.js';

describe('cost profiles shipped in profiles/', () => {
  it('include the three hardware profiles', () => {
    expect(profileNames()).toEqual(expect.arrayContaining(['arm64-kunpeng920', 'arm64-phytium-s2500', 'x86-skylake']));
  });

  for (const name of profileNames()) {
    it(`${name}: prices every step, and every number names its source (assumptions say so)`, () => {
      const p = loadProfile(name);
      expect(p.name).toBe(name);
      expect(Object.keys(p.steps).sort()).toEqual(Object.keys(COST_STEPS).sort());
      for (const [step, s] of Object.entries(p.steps)) {
        expect(s.source.length, step).toBeGreaterThan(20);
        if (s.confidence === 'U') expect(s.source, step).toMatch(/^ASSUMPTION/);
        else expect(s.source, step).not.toMatch(/^ASSUMPTION/);
      }
    });
  }

  it('keep the exits where their sources put them: Phytium slower than Kunpeng, QEMU exits dearer than kernel ones', () => {
    const k = loadProfile('arm64-kunpeng920').steps;
    const ph = loadProfile('arm64-phytium-s2500').steps;
    const x = loadProfile('x86-skylake').steps;
    expect((k['exit.mmio_trap']?.ns ?? 0) + (k['exit.to_user']?.ns ?? 0)).toBe(2306);
    expect((ph['exit.mmio_trap']?.ns ?? 0) + (ph['exit.to_user']?.ns ?? 0)).toBe(7214);
    expect(x['exit.mmio_trap']?.ns).toBe(612); // 1530 cycles at 2.5 GHz
  });
});
