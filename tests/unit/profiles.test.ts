import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { ARCHES, loadProfile, profileNames, profilesDir } from '../../services/cost/profile.js';
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

    it(`${name}: names its architecture and gives every step a range around its cost, with a one-line reason`, () => {
      const p = loadProfile(name);
      expect(ARCHES).toContain(p.arch);
      for (const [step, s] of Object.entries(p.steps)) {
        const [lo, hi] = s.range;
        expect(lo, step).toBeLessThanOrEqual(s.ns);
        expect(hi, step).toBeGreaterThanOrEqual(s.ns);
        expect(s.rangeReason.length, step).toBeGreaterThan(20);
        expect(s.rangeReason, step).not.toMatch(/\n/);
      }
    });
  }

  it('include the platform profiles, each for its architecture', () => {
    expect(Object.fromEntries(['power9', 'arm64-grace', 'x86-skylake', 'arm64-kunpeng920'].map((n) => [n, loadProfile(n).arch]))).toEqual({
      'power9': 'ppc64',
      'arm64-grace': 'arm64',
      'x86-skylake': 'x86_64',
      'arm64-kunpeng920': 'arm64',
    });
  });

  it('source the steps that make each platform what it is (exits, syscall, IOMMU invalidation), stand-ins saying so', () => {
    const sourced: Record<string, string[]> = {
      'power9': ['exit.hcall', 'ioctl.syscall', 'kernel.tce_put', 'smmu.sync'],
      'arm64-grace': ['exit.mmio_trap', 'exit.to_user', 'exit.hcall', 'ioctl.syscall', 'smmu.cmd_exec', 'smmu.sync', 'guest.bounce_copy'],
      'x86-skylake': ['exit.mmio_trap', 'exit.to_user', 'exit.hcall', 'ioctl.syscall', 'smmu.sync'],
    };
    for (const [name, steps] of Object.entries(sourced)) {
      const p = loadProfile(name);
      for (const k of steps) expect(p.steps[k]?.confidence, `${name} ${k}`).not.toBe('U');
    }
    const grace = loadProfile('arm64-grace').steps;
    for (const k of ['exit.mmio_trap', 'exit.to_user', 'exit.hcall', 'ioctl.syscall', 'smmu.sync']) expect(grace[k]?.source, k).toMatch(/^STAND-IN for Neoverse V2/);
    // The P9 path has no real-mode TCE handlers: the hypercall is the full virtual-mode exit.
    expect(loadProfile('power9').steps['exit.hcall']?.ns).toBeGreaterThan(1000);
  });

  it('say, in the new platform profiles, which platform a carried assumption lacks a number for', () => {
    for (const [name, platform] of [['power9', 'POWER9'], ['arm64-grace', 'Neoverse V2']] as const) {
      for (const [k, s] of Object.entries(loadProfile(name).steps)) {
        if (s.confidence === 'U' && !/^ASSUMPTION \(no separate figure\)/.test(s.source) && !/^ASSUMPTION \(as arm64-kunpeng920\)/.test(s.source)) expect(s.source, `${name} ${k}`).toMatch(new RegExp(`^ASSUMPTION \\(no ${platform}`));
      }
    }
  });

  it('keep the exits where their sources put them: Phytium slower than Kunpeng, QEMU exits dearer than kernel ones', () => {
    const k = loadProfile('arm64-kunpeng920').steps;
    const ph = loadProfile('arm64-phytium-s2500').steps;
    const x = loadProfile('x86-skylake').steps;
    expect((k['exit.mmio_trap']?.ns ?? 0) + (k['exit.to_user']?.ns ?? 0)).toBe(2306);
    expect((ph['exit.mmio_trap']?.ns ?? 0) + (ph['exit.to_user']?.ns ?? 0)).toBe(7214);
    expect(x['exit.mmio_trap']?.ns).toBe(612); // 1530 cycles at 2.5 GHz
  });
});

describe('the profile loader', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmmsim-profile-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const shipped = parse(readFileSync(join(profilesDir(), 'arm64-kunpeng920.yaml'), 'utf8')) as Record<string, unknown> & { steps: Record<string, Record<string, unknown>> };
  /** The shipped profile with `edit` applied, written to a file; returns what loading it threw, or undefined. */
  const loadEdited = (edit: (doc: typeof shipped) => void): Error | undefined => {
    const doc = structuredClone(shipped);
    edit(doc);
    const file = join(dir, 'p.yaml');
    writeFileSync(file, stringify(doc));
    try {
      loadProfile(file);
      return undefined;
    } catch (err) {
      return err as Error;
    }
  };
  const step = (doc: typeof shipped): Record<string, unknown> => doc.steps['smmu.sync'] as Record<string, unknown>;

  it('accepts the shipped profile as written', () => {
    expect(loadEdited(() => undefined)).toBeUndefined();
  });

  it('refuses a step without a range, in one line naming the step', () => {
    const err = loadEdited((d) => delete step(d)['range']);
    expect(err).toMatchObject({ code: 'E_PROFILE' });
    expect(err?.message).toMatch(/steps\.smmu\.sync has no range/);
    expect(err?.message).not.toMatch(/\n/);
  });

  it('refuses a step without the reason for its range, in one line naming the step', () => {
    const err = loadEdited((d) => delete step(d)['rangeReason']);
    expect(err).toMatchObject({ code: 'E_PROFILE' });
    expect(err?.message).toMatch(/steps\.smmu\.sync has no rangeReason/);
    expect(err?.message).not.toMatch(/\n/);
  });

  it('refuses a reason of more than one line, a malformed range, and a cost outside its range', () => {
    expect(loadEdited((d) => (step(d)['rangeReason'] = 'first line\nsecond line'))?.message).toMatch(/steps\.smmu\.sync\.rangeReason must say in one line/);
    expect(loadEdited((d) => (step(d)['range'] = [500, 100]))?.message).toMatch(/steps\.smmu\.sync\.range must be \[lo, hi\]/);
    expect(loadEdited((d) => (step(d)['range'] = [1]))?.message).toMatch(/steps\.smmu\.sync\.range must be \[lo, hi\]/);
    expect(loadEdited((d) => (step(d)['ns'] = 5000))?.message).toMatch(/steps\.smmu\.sync\.ns 5000 lies outside its range/);
  });

  it('refuses a profile without an architecture, or with one it does not know', () => {
    expect(loadEdited((d) => delete d['arch'])?.message).toMatch(/arch must be one of arm64, ppc64, x86_64 .*it has none/);
    expect(loadEdited((d) => (d['arch'] = 'riscv64'))?.message).toMatch(/arch must be one of .*not "riscv64"/);
  });
});
