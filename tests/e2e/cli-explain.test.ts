/**
 * `vmmsim explain` end to end: the call graph of one nested-smmuv3 unmap as text and as JSON, the
 * same operation's figures in both, an operation the workload never runs refused with E_EXPLAIN,
 * and its options in the help. No process is left behind and no file is written.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Explanation, ExplainNode } from '../../services/controller/explain.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { loadProfile } from '../../services/cost/profile.js';
import { Runs, entries, lines, runWatched } from './support.js';

const profile = loadProfile('arm64-kunpeng920');

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

function leaves(n: ExplainNode): ExplainNode[] {
  if (n.offPath) return [];
  return n.what === 'step' ? [n] : n.children.flatMap(leaves);
}

describe('vmmsim explain', () => {
  it('prints a nested-smmuv3 unmap as a call graph across the processes, and the same figures as JSON', async () => {
    const cwd = runs.folder();
    const json = await runWatched(runs, ['explain', '--model', 'nested-smmuv3', '--json'], { cwd });
    expect(json.code, json.stderr).toBe(0);
    expect(json.stderr).toBe('');
    const e = JSON.parse(json.stdout) as Explanation;
    expect(e.op).toBe('unmap');
    expect(e.tree.totalNs).toBe(e.modeledNs);
    expect(leaves(e.tree).reduce((n, l) => n + l.totalNs, 0)).toBe(e.modeledNs);
    expect(leaves(e.tree).filter((l) => l.confidence === 'U').reduce((n, l) => n + l.totalNs, 0)).toBe(e.assumedNs);
    expect(e.pinned).toEqual({ linux: 'v6.18', qemu: 'v10.2' });

    const text = await runWatched(runs, ['explain', '--model', 'nested-smmuv3', '--op', 'unmap'], { cwd });
    expect(text.code, text.stderr).toBe(0);
    const out = lines(text.stdout);
    expect(out[0]).toBe('vmmsim explain: nested-smmuv3, one unmap (strict, dma-map-benchmark) on guest-0 thread 0, profile arm64-kunpeng920');
    const graph = out.filter((l) => l.includes('| '));
    expect(graph[0]).toMatch(/^PROCESS\s+CROSSING\s+SELF us\s+TOTAL us\s+CONF\s+\| FUNCTION GRAPH$/);
    // Across every process of the path, each boundary with its transition.
    // The guest's traps say which register access they are, as the driver makes it.
    for (const [process, crossing, call] of [['guest-0', 'exit', 'MMIO_WRITE -> kvm {  /* writel_relaxed CMDQ_PROD (arm_smmu_cmdq_issue_cmdlist) */'], ['guest-0', 'exit', 'MMIO_READ -> kvm {  /* readl CMDQ_CONS (__arm_smmu_cmdq_poll_until_consumed) */'], ['kvm', 'user', 'MMIO_EXIT -> qemu-0 {'], ['qemu-0', 'ioctl', 'HWPT_INVALIDATE -> vfio {'], ['vfio', 'hw', 'CMDQ_SUBMIT -> psmmu-0 {']] as const) {
      expect(graph.some((l) => new RegExp(`^${process}\\s+${crossing}\\s.*\\| +${call.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`).test(l)), call).toBe(true);
    }
    // A leaf names its step's cost, confidence and functions, as the profile and steps.ts have them.
    const trap = profile.steps['exit.mmio_trap'];
    const us = (ns: number): string => (ns / 1000).toFixed(3).replace('.', '\\.');
    expect(graph.some((l) => new RegExp(`^kvm\\s+${us(trap?.ns ?? NaN)}\\s+${us(trap?.ns ?? NaN)}\\s+${trap?.confidence}\\s+\\|\\s+exit\\.mmio_trap\\(\\);\\s+/\\* linux arch/arm64/kvm/mmu\\.c: kvm_handle_guest_abort`).test(l))).toBe(true);
    expect(graph.some((l) => /\|\s+} \/\* unmap \*\/$/.test(l) && new RegExp(`\\s${us(e.modeledNs)}\\s`).test(l))).toBe(true);
    const pct = Math.round((e.assumedNs / e.modeledNs) * 100);
    expect(out).toContain(`total ${(e.modeledNs / 1000).toFixed(3)} us: the operation's modeled time uncontended; ${(e.assumedNs / 1000).toFixed(3)} us of it (${pct}%) rests on assumed costs (U).`);
    expect(text.stderr).toContain('vmmsim: running nested-smmuv3');
    // No file written, no process left.
    expect(entries(cwd)).toEqual([]);
    expect(text.spawned.length).toBeGreaterThan(0);
    expect(await waitForNoProcesses(text.marker)).toEqual([]);
    expect(await waitForNoProcesses(json.marker)).toEqual([]);
  }, 120_000);

  it('refuses an operation the workload does not run, naming the ones it ran', async () => {
    const r = await runWatched(runs, ['explain', '--model', 'none', '--op', 'flush']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^vmmsim: E_EXPLAIN: no flush completed on guest-0 after 16 operations under none; the run's operations: map \(32\), unmap \(32\) \(fix: /m);
    expect(await waitForNoProcesses(r.marker)).toEqual([]);
  }, 120_000);

  it('refuses options that are not its own before starting anything', async () => {
    for (const [args, why] of [
      [['explain', '--models', 'all'], /--models is not an option of `vmmsim explain`/],
      [['explain', '--warmup', 'many'], /--warmup must be an integer >= 0/],
      [['explain', '--profile', 'measured-host'], /measures this machine first/],
    ] as const) {
      const r = await runWatched(runs, [...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(why);
      expect(r.spawned).toEqual([]);
    }
  });

  it('has its help, and the top-level usage lists it', async () => {
    const help = await runWatched(runs, ['explain', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('usage: vmmsim explain --model NAME [--op map|unmap] [scenario.yaml] [options]');
    for (const o of ['--op NAME', '--warmup N', '--json', '--set key=value']) expect(help.stdout).toContain(o);
    const usage = await runWatched(runs, ['--help']);
    expect(usage.stdout).toMatch(/^ {2}explain --model NAME\s+print one operation as a call graph/m);
  });
});
