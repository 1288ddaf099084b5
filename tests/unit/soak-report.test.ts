import { describe, expect, it } from 'vitest';
import {
  MAX_MEMORY_GROWTH, addErrorCounts, errorCounts, formatSoakReport, isErrorCounter, memoryOf, memoryRows, soakReport, type ErrorCount, type SoakFigures,
} from '../../bench/soak-report.js';

/** A soak that met every target: three processes, a little memory movement, no error. */
function figures(over: Partial<SoakFigures> = {}): SoakFigures {
  return {
    minutes: 10,
    runs: 200,
    warmupRuns: 48,
    operations: 120_000,
    failedOps: 0,
    guestCommands: 90_000,
    guestCommandsFailed: 0,
    errorCounters: [],
    runFailures: [],
    staleTranslations: 0,
    translations: 2_000_000,
    faults: 3,
    staleDuringUnmap: 1,
    memory: [
      { name: 'controller', pid: 10, warmKib: 100_000, endKib: 104_000 },
      { name: 'psmmu-0', pid: 11, warmKib: 80_000, endKib: 79_000 },
      { name: 'guest-0', pid: 12, warmKib: 120_000, endKib: 126_000 },
    ],
    ...over,
  };
}

describe('soak report: memory growth', () => {
  it('is (end - warm) / warm per process, negative when memory was given back', () => {
    const rows = memoryRows(figures().memory);
    expect(rows.map((r) => [r.name, r.growth])).toEqual([
      ['controller', 0.04],
      ['psmmu-0', -0.0125],
      ['guest-0', 0.05],
    ]);
  });

  it('judges the largest growth of any process against the 10% target', () => {
    const ok = soakReport(figures());
    expect(ok.targets.find((t) => t.name.startsWith('memory'))).toMatchObject({ value: 0.05, limit: MAX_MEMORY_GROWTH, ok: true });
    expect(ok.ok).toBe(true);
    // One process at exactly 10% misses it (under 10% is the target), whatever the others do.
    const grown = figures({ memory: [...figures().memory, { name: 'vfio', pid: 13, warmKib: 50_000, endKib: 55_000 }] });
    const r = soakReport(grown);
    expect(r.targets.find((t) => t.name.startsWith('memory'))).toMatchObject({ value: 0.1, ok: false });
    expect(r.ok).toBe(false);
    expect(formatSoakReport(r)).toMatch(/memory growth \(largest\)\s+10\.0%\s+< 10\.0%\s+MISSED/);
  });

  it('compares the highest reading of each half, so where a collection falls does not decide it', () => {
    // A sawtooth heap that does not grow: a reading at each end would say +30%, or -23%.
    const sawtooth = [100, 130, 100, 130, 100, 130, 100, 130, 100];
    expect(memoryOf([{ name: 'qemu-0', pid: 1, kib: sawtooth }])).toEqual([{ name: 'qemu-0', pid: 1, warmKib: 130, endKib: 130 }]);
    // A ramp that levels off in the first half is no growth either.
    expect(memoryRows(memoryOf([{ name: 'psmmu-0', pid: 2, kib: [90, 100, 120, 118, 120, 119, 117, 120] }]))[0]?.growth).toBe(0);
    // A leak raises the second half's peak: 1000 KiB more every run.
    const leak = Array.from({ length: 12 }, (_, i) => 100_000 + i * 1000);
    expect(memoryOf([{ name: 'guest-0', pid: 3, kib: leak }])[0]).toMatchObject({ warmKib: 105_000, endKib: 111_000 });
    // One reading is both halves.
    expect(memoryOf([{ name: 'kvm', pid: 4, kib: [10] }])).toEqual([{ name: 'kvm', pid: 4, warmKib: 10, endKib: 10 }]);
  });

  it('passes no soak that sampled no process', () => {
    expect(soakReport(figures({ memory: [] })).ok).toBe(false);
  });
});

describe('soak report: errors and stale translations', () => {
  it('counts failed operations, failed invalidations, error counters and failed runs as errors', () => {
    const counters: ErrorCount[] = [{ process: 'vfio', counter: 'errors.EIO', count: 2 }];
    const r = soakReport(figures({ failedOps: 1, guestCommandsFailed: 3, errorCounters: counters, runFailures: ['E_DEADLINE: psmmu-0 stopped answering'] }));
    expect(r.errors).toBe(1 + 3 + 2 + 1);
    expect(r.targets.find((t) => t.name === 'errors')).toMatchObject({ value: 7, limit: 0, ok: false });
    expect(r.ok).toBe(false);
    const text = formatSoakReport(r);
    expect(text).toContain('vfio.errors.EIO=2');
    expect(text).toContain('run failed: E_DEADLINE: psmmu-0 stopped answering');
  });

  it('fails on a single stale translation; faults and stale hits during an unmap are shown, not judged', () => {
    expect(soakReport(figures({ staleTranslations: 1 })).targets.find((t) => t.name.startsWith('stale'))).toMatchObject({ value: 1, ok: false });
    const r = soakReport(figures({ faults: 50, staleDuringUnmap: 9 }));
    expect(r.ok).toBe(true);
    expect(formatSoakReport(r)).toContain('0 stale translations, 9 stale during unmap, 50 faults');
  });

  it('judges nothing when no run followed the warm-up', () => {
    const r = soakReport(figures({ runs: 48, warmupRuns: 48 }));
    expect(r.loadAfterWarmup).toBe(false);
    expect(r.ok).toBe(false);
    expect(formatSoakReport(r)).toContain('nothing ran after the warm-up');
  });
});

describe('error counters', () => {
  it('are the roles\' error, failure and refusal counters, and only those', () => {
    for (const name of ['errors', 'error', 'errors.EINVAL', 'ioasErrors', 'mapErrors', 'queueErrors', 'guestCommandsFailed', 'failed', 'rejected']) expect(isErrorCounter(name), name).toBe(true);
    for (const name of ['commands', 'faults', 'staleHits', 'translations', 'cmdqRecoveries', 'interrupts', 'failedOver']) expect(isErrorCounter(name), name).toBe(false);
  });

  it('are picked from every process above zero, and added up over runs', () => {
    const run = { 'qemu-0': { errors: 0, ringErrors: 2, exits: 40 }, vfio: { 'errors.EIO': 1, commands: 9 } };
    const picked = errorCounts(run);
    expect(picked).toEqual([
      { process: 'qemu-0', counter: 'ringErrors', count: 2 },
      { process: 'vfio', counter: 'errors.EIO', count: 1 },
    ]);
    const total: ErrorCount[] = [];
    addErrorCounts(total, picked);
    addErrorCounts(total, errorCounts({ vfio: { 'errors.EIO': 4 } }));
    expect(total).toEqual([
      { process: 'qemu-0', counter: 'ringErrors', count: 2 },
      { process: 'vfio', counter: 'errors.EIO', count: 5 },
    ]);
  });
});
