import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';

/**
 * `npm run bench -- qemu` drives real QEMU vIOMMU models through qtest with vmmsim's own command and
 * descriptor encoders (services/formats): QEMU consuming every command without an error is a check
 * of those formats against QEMU's decoders, and the bench is where three profile steps come from.
 * QEMU comes from Debian (.ci/run installs qemu-system-arm and qemu-system-x86).
 */

const BENCH = join(ROOT, 'dist', 'bench', 'main.js');
const missing = ['qemu-system-aarch64', 'qemu-system-x86_64'].filter((b) => spawnSync(b, ['--version']).status !== 0);
const skip = missing.length > 0 ? `${missing.join(', ')} not installed (apt-get install qemu-system-arm qemu-system-x86)` : undefined;

function qtestQemus(): string[] {
  const r = spawnSync('pgrep', ['-af', 'vmmsim-qtest-'], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.includes('qemu-system'));
}

describe.skipIf(skip !== undefined)(skip ? `bench qemu (skipped: ${skip})` : 'bench qemu', () => {
  it("QEMU's vSMMU and VT-d consume vmmsim's commands and descriptors without an error, and the bench leaves no QEMU behind", () => {
    const r = spawnSync(process.execPath, [BENCH, 'qemu', '--json', '--commands', '256', '--reps', '5'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      qemu: { arm: string; x86: string };
      smmuv3: { vsmmuCmdNs: number; tlbiNhVaNs: number; iotlbInvalidateNs: number; commands: number };
      vtd: { descNs: number; descriptors: number };
    };
    expect(out.qemu.arm).toMatch(/^\d+\.\d+/);
    // Every command written was consumed (the bench checks CONS = PROD and GERROR = 0, IQH = IQT and FSTS = 0).
    expect(out.smmuv3.commands).toBeGreaterThanOrEqual(2 * 10 * 257);
    expect(out.vtd.descriptors).toBeGreaterThanOrEqual(10 * 258);
    for (const v of [out.smmuv3.vsmmuCmdNs, out.smmuv3.tlbiNhVaNs, out.smmuv3.iotlbInvalidateNs, out.vtd.descNs]) expect(Number.isFinite(v)).toBe(true);
    expect(qtestQemus()).toEqual([]);
  }, 150_000);

  it('refuses options out of range with E_USAGE', () => {
    const r = spawnSync(process.execPath, [BENCH, 'qemu', '--commands', '8'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--commands must be an integer in 16\.\.4096/);
  });
});
