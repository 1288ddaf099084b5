import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';

/**
 * `npm run bench -- qemu` drives real QEMU vIOMMU models through qtest with vmmsim's own command,
 * descriptor and virtio-iommu request encoders (services/formats): QEMU consuming every command
 * without an error, and answering every request OK, is a check of those formats against QEMU's
 * decoders, and the bench is where four profile steps come from. QEMU comes from Debian (.ci/run
 * installs qemu-system-arm and qemu-system-x86); a qemu-system-x86_64 without virtio-iommu-pci
 * skips that case, and so does this test.
 */

const BENCH = join(ROOT, 'dist', 'bench', 'main.js');
const missing = ['qemu-system-aarch64', 'qemu-system-x86_64'].filter((b) => spawnSync(b, ['--version']).status !== 0);
const skip = missing.length > 0 ? `${missing.join(', ')} not installed (apt-get install qemu-system-arm qemu-system-x86)` : undefined;

const hasVirtioIommu = skip === undefined && /name "virtio-iommu-pci"/.test(spawnSync('qemu-system-x86_64', ['-device', 'help'], { encoding: 'utf8' }).stdout);

/** The virtio-iommu part of the bench's --json output: the direct (2-descriptor chain) figures under their first names, the indirect ones prefixed. */
interface ViommuJson {
  skipped?: string;
  mapNs?: number;
  mapIqrNs?: [number, number];
  unmapNs?: number;
  unmapIqrNs?: [number, number];
  requestsPerNotify?: number;
  mappingsAtUnmap?: number;
  requests?: number;
  linuxRingLayout?: string;
  indirectSkipped?: string;
  indirectMapNs?: number;
  indirectMapIqrNs?: [number, number];
  indirectMapMinMaxNs?: [number, number];
  indirectUnmapNs?: number;
  indirectUnmapIqrNs?: [number, number];
  indirectUnmapMinMaxNs?: [number, number];
  indirectMapExtraNs?: number;
  indirectUnmapExtraNs?: number;
  indirectRequests?: number;
}

function qtestQemus(): string[] {
  const r = spawnSync('pgrep', ['-af', 'vmmsim-qtest-'], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.includes('qemu-system'));
}

describe.skipIf(skip !== undefined)(skip ? `bench qemu (skipped: ${skip})` : 'bench qemu', () => {
  it("QEMU's vSMMU, VT-d and virtio-iommu consume vmmsim's commands, descriptors and requests without an error, and the bench leaves no QEMU behind", () => {
    // The most a 256-entry queue holds: the widest t(N) - t(1), so 5 repetitions keep their median above 0 on a loaded host.
    const requests = 127;
    const r = spawnSync(process.execPath, [BENCH, 'qemu', '--json', '--commands', '256', '--requests', String(requests), '--reps', '5'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      qemu: { arm: string; x86: string };
      smmuv3: { vsmmuCmdNs: number; tlbiNhVaNs: number; iotlbInvalidateNs: number; commands: number };
      vtd: { descNs: number; descriptors: number };
      virtioIommu: ViommuJson;
    };
    expect(out.qemu.arm).toMatch(/^\d+\.\d+/);
    // Every command written was consumed (the bench checks CONS = PROD and GERROR = 0, IQH = IQT and FSTS = 0).
    expect(out.smmuv3.commands).toBeGreaterThanOrEqual(2 * 10 * 257);
    expect(out.vtd.descriptors).toBeGreaterThanOrEqual(10 * 258);
    for (const v of [out.smmuv3.vsmmuCmdNs, out.smmuv3.tlbiNhVaNs, out.smmuv3.iotlbInvalidateNs, out.vtd.descNs]) expect(Number.isFinite(v)).toBe(true);
    if (hasVirtioIommu) {
      // Every request completed with status OK (the bench checks used.idx, each used element and
      // each tail): the ATTACH, then per repetition (5 warm-up + 5) N MAPs, N UNMAPs, one of each.
      expect(out.virtioIommu.skipped).toBeUndefined();
      expect(out.virtioIommu.requestsPerNotify).toBe(requests);
      expect(out.virtioIommu.mappingsAtUnmap).toBe(requests);
      expect(out.virtioIommu.requests).toBe(1 + 10 * (2 * requests + 2));
      for (const v of [out.virtioIommu.mapNs, out.virtioIommu.unmapNs]) expect(v).toBeGreaterThan(0);
      // The same batches again with each request one indirect descriptor (what Linux sends).
      expect(out.virtioIommu.indirectRequests).toBe(10 * (2 * requests + 2));
    } else {
      expect(out.virtioIommu.skipped).toMatch(/virtio-iommu-pci/);
    }
    expect(qtestQemus()).toEqual([]);
  }, 150_000);

  it.skipIf(!hasVirtioIommu)("QEMU's virtio-iommu answers every request OK when each is one indirect descriptor (a 2-entry table, as Linux queues it), and the bench leaves no QEMU behind", () => {
    // Small numbers: the smallest batch --requests takes, the fewest repetitions. Nothing here
    // is timed against a bound: the figures only have to be numbers.
    const requests = 8;
    const r = spawnSync(process.execPath, [BENCH, 'qemu', '--json', '--commands', '16', '--requests', String(requests), '--reps', '5'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const v = (JSON.parse(r.stdout) as { virtioIommu: ViommuJson }).virtioIommu;
    // QEMU offers VIRTIO_RING_F_INDIRECT_DESC by default (indirect_desc=on), and the bench takes it.
    expect(v.indirectSkipped).toBeUndefined();
    expect(v.linuxRingLayout).toBe('indirect');
    // Both layouts ran every batch to the end, each request OK (the bench checks used.idx, each
    // used element's head and length, and each tail): per repetition (5 warm-up + 5) N MAPs, N
    // UNMAPs, one of each, in each layout; the ATTACH is counted with the direct ones.
    expect(v.requestsPerNotify).toBe(requests);
    expect(v.indirectRequests).toBe(10 * (2 * requests + 2));
    expect(v.requests).toBe(1 + 10 * (2 * requests + 2));
    for (const x of [v.indirectMapNs, v.indirectUnmapNs, v.indirectMapExtraNs, v.indirectUnmapExtraNs, v.mapNs, v.unmapNs]) expect(Number.isFinite(x)).toBe(true);
    for (const iqr of [v.indirectMapIqrNs, v.indirectUnmapIqrNs, v.indirectMapMinMaxNs, v.indirectUnmapMinMaxNs]) {
      expect(iqr).toHaveLength(2);
      expect(iqr![0]).toBeLessThanOrEqual(iqr![1]);
    }
    expect(qtestQemus()).toEqual([]);
    // The text report shows both layouts, Linux's first.
    const t = spawnSync(process.execPath, [BENCH, 'qemu', '--commands', '16', '--requests', String(requests), '--reps', '5'], { encoding: 'utf8', timeout: 60_000 });
    expect(t.status, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/as one indirect descriptor \(a 2-entry table\), as a Linux guest sends it:[\s\S]*one MAP[\s\S]*one UNMAP[\s\S]*as a 2-descriptor chain in the ring[\s\S]*one MAP[\s\S]*one UNMAP/);
    expect(t.stdout).toMatch(new RegExp(`${10 * (2 * requests + 2) * 2 + 1} requests, all OK`));
    expect(qtestQemus()).toEqual([]);
  }, 150_000);

  it('refuses options out of range with E_USAGE', () => {
    const r = spawnSync(process.execPath, [BENCH, 'qemu', '--commands', '8'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--commands must be an integer in 16\.\.4096/);
    const q = spawnSync(process.execPath, [BENCH, 'qemu', '--requests', '128'], { encoding: 'utf8', timeout: 30_000 });
    expect(q.status).toBe(2);
    expect(q.stderr).toMatch(/--requests must be an integer in 8\.\.127/);
  });
});
