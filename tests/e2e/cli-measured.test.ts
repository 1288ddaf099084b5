/**
 * The measured clock end to end: --trials, --warmup and --pin on the CLI, the terminal's two
 * sections in their order, results.json's measured section with the host's floor, and the path
 * bench's figures. Nothing here compares a measured figure with a wall-clock value.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { RunResult } from '../../services/controller/results.js';
import { ROOT } from '../helpers/cli.js';
import { Runs, parseResults, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

describe('vmmsim run with --trials, --warmup and --pin', () => {
  it('writes a measured section: each figure over the trials with its interval, the host floor, the placement, the notes', async () => {
    const out = join(runs.folder(), 'out');
    const r = await runWatched(runs, ['run', '--ops', '60', '--set', 'device.dmaRate=0', '--trials', '2', '--warmup', '4', '--pin', '0', '--json', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const run = parseResults(r.stdout).runs[0] as RunResult;
    const m = run.measured;
    expect(m?.about).toMatch(/this host's real IPC between the simulator's processes/);
    expect(m?.trials).toBe(2);
    expect(m?.warmupOps).toBe(4);
    expect(m?.warmupOpsExcluded).toBe(8);
    for (const o of m?.ops ?? []) {
      expect(o.p50Us.trials).toHaveLength(2);
      expect(o.p50Us.ci95).not.toBeNull();
    }
    expect(m?.floor?.rawUdsOneWayUs.count).toBeGreaterThan(0);
    expect(m?.floor?.grpcOneWayUs.count).toBeGreaterThan(0);
    expect(m?.floor?.cpus).toEqual([0]);
    expect(Object.values(m?.placement?.cpus ?? {})).toEqual(expect.arrayContaining([0]));
    expect(new Set(Object.values(m?.placement?.cpus ?? {}))).toEqual(new Set([0]));
    // Where a nested-smmuv3 strict unmap's time went: the PROD write (guest, kvm, qemu, vfio, psmmu
    // and back) and the CONS read (guest, kvm, qemu and back), each process entered that many times.
    expect(run.model).toBe('nested-smmuv3');
    const unmap = (m?.residence ?? []).filter((x) => x.op === 'unmap');
    expect(Object.fromEntries(unmap.map((x) => [x.process, x.visitsPerOp]))).toEqual({ 'guest-0': 3, crossings: 0, kvm: 4, 'qemu-0': 3, vfio: 2, 'psmmu-0': 1 });
    for (const x of unmap) {
      expect(x.count).toBe(2 * (60 - 2)); // each trial: 60 unmaps, 2 of them in the 4 operations of warm-up
      expect(x.p50Us.trials).toHaveLength(2);
      expect(x.p50Us.value).toBeGreaterThan(0);
    }
    expect(Array.isArray(run.notes)).toBe(true);
    // The older fields stay, from the first trial with every operation.
    expect(run.ops.find((o) => o.op === 'unmap')?.measuredUs.count).toBe(60);
  }, 120_000);

  it('prints the modeled tables first, then the measured section with the host floor', async () => {
    const r = await runWatched(runs, ['run', '--ops', '40', '--set', 'device.dmaRate=0', '--out', join(runs.folder(), 'out')]);
    expect(r.code, r.stderr).toBe(0);
    const modeled = r.stdout.indexOf('Modeled:');
    const measured = r.stdout.indexOf('Measured:');
    expect(modeled).toBeGreaterThanOrEqual(0);
    expect(measured).toBeGreaterThan(modeled);
    expect(r.stdout.slice(measured)).toMatch(/host floor at the start, one way p50 \(p99\): bare Unix socket .* us, bare grpc-js .* us/);
    expect(r.stdout).toMatch(/per transition kind/);
  }, 120_000);

  it('refuses --trials 0, a CPU this machine has not, and --trials on a saturation search or a sensitivity run (exit 2)', async () => {
    for (const args of [['run', '--trials', '0'], ['run', '--pin', '4096'], ['saturate', '--trials', '2'], ['sensitivity', '--trials', '3', '--pin', '0']]) {
      const r = await runWatched(runs, args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/E_USAGE/);
    }
  }, 60_000);
});

describe('npm run bench -- path --json', () => {
  it('prints the path p50, the floor between two of its processes, the hops and their ratio, with the relays beside', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'bench', 'main.js'), 'path', '--rounds', '1', '--ops', '40', '--warmup', '0', '--json'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown> & { detail: Record<string, unknown> };
    // The invalidation's 8 hops and the trapped CMDQ_CONS read's 4 (guest -> kvm -> qemu and back).
    expect(out['hops']).toBe(12);
    for (const k of ['pathMeasuredP50Us', 'floorOneWayP50Us', 'pathOverheadRatio']) expect(out[k], k).toBeGreaterThan(0);
    expect(out['pathOverheadRatio']).toBeCloseTo((out['pathMeasuredP50Us'] as number) / (12 * (out['floorOneWayP50Us'] as number)), 1);
    expect(out.detail['relay']).toMatchObject({ relayP50Us: expect.any(Number), ratio: expect.any(Number) });
    expect(out.detail['bareRelay']).toMatchObject({ relayP50Us: expect.any(Number), ratio: expect.any(Number) });
  }, 150_000);
});
