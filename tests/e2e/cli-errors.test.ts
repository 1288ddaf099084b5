/**
 * The CLI's contract on bad input and on help: exit code 2 and one line `vmmsim: E_CODE: message
 * (fix: ...)` on stderr for bad input, usage on stdout for help, and in both cases no process
 * started (checked through /proc by the run's marker) and no socket folder created.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { MODELS } from '../../services/scenario/schema.js';
import { Runs, STACK_LINE, entries, lines, runWatched } from './support.js';

const runs = new Runs();
afterEach(() => runs.cleanup());
afterAll(() => {
  runs.cleanup();
  runs.removeFolders();
});

/** A scenario file with this text in a fresh folder. */
function scenarioFile(text: string, name = 'scenario.yaml'): string {
  const path = join(runs.folder(), name);
  writeFileSync(path, text);
  return path;
}

interface BadInput {
  what: string;
  /** Arguments; a function so scenario files are written only when the test runs. */
  args: () => string[];
  code: string;
  /** Texts the message must contain (the field or option at fault, the allowed values...). */
  mentions: (args: string[]) => string[];
}

const CASES: BadInput[] = [
  { what: 'an unknown option of run', args: () => ['run', '--bogus'], code: 'E_USAGE', mentions: () => ['--bogus'] },
  { what: 'an unknown option given without a command', args: () => ['--bogus'], code: 'E_USAGE', mentions: () => ['--bogus'] },
  { what: 'an unknown command', args: () => ['frobnicate'], code: 'E_USAGE', mentions: () => ['frobnicate', 'run', 'compare', 'decode-cmd'] },
  {
    what: 'a scenario file that is not valid YAML',
    args: () => ['run', scenarioFile('name: broken\ntopology: [psmmus\n')],
    code: 'E_SCENARIO_YAML',
    mentions: (a) => [a[1] as string],
  },
  { what: 'an empty scenario file', args: () => ['run', scenarioFile('')], code: 'E_SCENARIO_FILE', mentions: (a) => [a[1] as string, 'empty'] },
  {
    what: 'a missing scenario file',
    args: () => ['run', join(runs.folder(), 'missing.yaml')],
    code: 'E_SCENARIO_FILE',
    mentions: (a) => [a[1] as string],
  },
  {
    what: 'an unknown scenario key',
    args: () => ['run', scenarioFile('topology:\n  psmmu: 2\n')],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['topology.psmmu', 'did you mean topology.psmmus'],
  },
  {
    what: 'a scenario key of the wrong type',
    args: () => ['run', scenarioFile('workload:\n  threads: "four"\n')],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['workload.threads', 'integer', '"four"'],
  },
  {
    what: 'a scenario key out of range',
    args: () => ['run', scenarioFile('topology:\n  psmmus: 0\n')],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['topology.psmmus', 'from 1 to 64'],
  },
  { what: 'an unknown model', args: () => ['run', '--model', 'bogus'], code: 'E_SCENARIO_FIELD', mentions: () => ['model', '"bogus"', ...MODELS] },
  {
    what: 'a value that is valid but not supported yet',
    args: () => ['run', '--set', 'topology.hosts=2'],
    code: 'E_NOT_SUPPORTED',
    mentions: () => ['topology.hosts', 'not supported', 'at most 1'],
  },
  { what: 'an unknown key in --set', args: () => ['run', '--set', 'nokey=1'], code: 'E_SCENARIO_FIELD', mentions: () => ['nokey', '--set'] },
  { what: '--models given to run', args: () => ['run', '--models', 'a,b'], code: 'E_USAGE', mentions: () => ['--models', '--model'] },
  { what: '--model given to compare', args: () => ['compare', '--model', 'none'], code: 'E_USAGE', mentions: () => ['--model', '--models'] },
  { what: 'an unknown profile', args: () => ['run', '--profile', 'nosuch'], code: 'E_PROFILE', mentions: () => ['nosuch', 'arm64-kunpeng920'] },
  {
    what: 'a run with no ops limit and no duration',
    args: () => ['run', '--ops', '0'],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['workload.ops', 'workload.durationSec'],
  },
  { what: 'a negative --ops', args: () => ['run', '--ops=-1'], code: 'E_USAGE', mentions: () => ['--ops', '-1'] },
  {
    what: 'a negative count in a scenario file',
    args: () => ['run', scenarioFile('workload:\n  threads: -2\n')],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['workload.threads', 'from 1 to 256', '-2'],
  },
  {
    what: 'more pSMMUs than the maximum (named)',
    args: () => ['run', scenarioFile('topology:\n  psmmus: 65\n')],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['topology.psmmus', 'from 1 to 64', '65'],
  },
  { what: 'a --set value above the maximum (named)', args: () => ['run', '--set', 'workload.threads=100000'], code: 'E_SCENARIO_FIELD', mentions: () => ['workload.threads', '256', '100000'] },
  {
    what: 'an unknown top-level scenario key (closest key suggested)',
    args: () => ['run', scenarioFile('modle: none\n')],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['modle', 'did you mean model'],
  },
  {
    what: 'a scenario that is a list, not a mapping',
    args: () => ['run', scenarioFile('- model\n- none\n')],
    code: 'E_SCENARIO_FIELD',
    mentions: (a) => [a[1] as string, 'mapping', 'list'],
  },
  { what: 'a section given a number', args: () => ['run', scenarioFile('topology: 5\n')], code: 'E_SCENARIO_FIELD', mentions: () => ['topology', 'mapping', '5'] },
  { what: 'a key given twice in the YAML', args: () => ['run', scenarioFile('seed: 1\nseed: 2\n')], code: 'E_SCENARIO_YAML', mentions: (a) => [a[1] as string, 'line 2', 'unique'] },
  { what: 'a scenario path that is a folder', args: () => ['run', runs.folder()], code: 'E_SCENARIO_FILE', mentions: (a) => [a[1] as string, 'EISDIR'] },
  { what: 'two scenario files', args: () => ['run', 'a.yaml', 'b.yaml'], code: 'E_USAGE', mentions: () => ['at most one scenario file', 'a.yaml b.yaml'] },
  {
    what: 'an unknown workload (the valid ones listed)',
    args: () => ['run', '--set', 'workload.kind=bogus'],
    code: 'E_SCENARIO_FIELD',
    // static is no longer a workload (dma=static is): the list is exactly these five.
    mentions: () => ['workload.kind', '"bogus"', 'allowed: dma-map-benchmark, packet-stream, block, sva-unmap-storm, trace-replay (fix:'],
  },
  {
    what: 'workload.kind=static (dma=static named in its place)',
    args: () => ['run', '--set', 'workload.kind=static'],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['workload.kind: "static" is no longer a value of this key', 'set dma to static with workload.kind packet-stream or block'],
  },
  { what: 'an unknown DMA mode (the valid ones listed)', args: () => ['run', '--set', 'dma=sloppy'], code: 'E_SCENARIO_FIELD', mentions: () => ['dma', '"sloppy"', 'strict', 'lazy', 'static', 'bounce'] },
  { what: 'an unknown model in --models (the valid ones listed)', args: () => ['compare', '--models', 'none,bogus'], code: 'E_USAGE', mentions: () => ['"bogus"', ...MODELS] },
  {
    what: 'a profile file with a step no model has (the valid ones listed)',
    args: () => ['run', '--profile', scenarioFile('name: mine\narch: arm64\nsteps:\n  bogus.step: 5\n', 'profile.yaml')],
    code: 'E_PROFILE',
    mentions: (a) => [a[2] as string, '"bogus.step"', 'guest.iova_alloc', 'smmu.walk_access'],
  },
  {
    what: 'a trace path that is a folder',
    args: () => ['run', '--set', 'workload.kind=trace-replay', '--set', `workload.trace=${runs.folder()}`],
    code: 'E_TRACE_FILE',
    mentions: () => ['cannot read trace', 'not a regular file'],
  },
  {
    what: 'more VMs than devices to give them',
    args: () => ['run', scenarioFile('topology:\n  vms: 3\n')],
    code: 'E_SCENARIO_FIELD',
    mentions: () => ['topology.vms', 'psmmus x devicesPerPsmmu is 1'],
  },
  {
    what: 'a workload the model cannot run (SVA under virtio-iommu)',
    args: () => ['run', '--model', 'virtio-iommu', '--set', 'workload.kind=sva-unmap-storm'],
    code: 'E_NOT_SUPPORTED',
    mentions: () => ['sva-unmap-storm', 'virtio-iommu', 'nested-smmuv3'],
  },
  {
    what: 'dma=swiotlb under a design without dma-iommu (none: dma-direct)',
    args: () => ['run', '--model', 'none', '--set', 'dma=swiotlb'],
    code: 'E_NOT_SUPPORTED',
    mentions: () => ['dma', 'swiotlb', 'none', 'dev_use_swiotlb', 'virtio-iommu'],
  },
  {
    what: 'guest.ddw under a design without sPAPR TCE tables',
    args: () => ['run', '--model', 'virtio-iommu', '--set', 'guest.ddw=true'],
    code: 'E_NOT_SUPPORTED',
    mentions: () => ['guest.ddw', 'virtio-iommu', 'spapr-tce'],
  },
  { what: '--ram-dir without --connect', args: () => ['run', '--ram-dir', '/dev/shm/x'], code: 'E_USAGE', mentions: () => ['--ram-dir', '--connect'] },
  { what: '--transport with --connect', args: () => ['run', '--connect', 'peers.yaml', '--transport', 'tcp'], code: 'E_USAGE', mentions: () => ['--transport', '--connect'] },
  { what: 'a --duration that is not a number', args: () => ['run', '--duration', 'abc'], code: 'E_USAGE', mentions: () => ['--duration', '"abc"'] },
  { what: 'a --seed that is not an integer', args: () => ['run', '--seed', '1.5'], code: 'E_USAGE', mentions: () => ['--seed', '"1.5"'] },
  { what: 'an unknown --transport', args: () => ['run', '--transport', 'pigeon'], code: 'E_USAGE', mentions: () => ['--transport', 'unix or tcp', '"pigeon"'] },
  { what: 'an unknown --log-level', args: () => ['run', '--log-level', 'loud'], code: 'E_USAGE', mentions: () => ['--log-level', 'warn', 'debug'] },
  { what: 'a --start-timeout under its minimum (named)', args: () => ['run', '--start-timeout', '0'], code: 'E_USAGE', mentions: () => ['--start-timeout', '>= 1000', '"0"'] },
];

describe('bad input: exit 2, one error line, nothing started', () => {
  for (const c of CASES) {
    it(`refuses ${c.what}`, async () => {
      const args = c.args();
      const out = join(runs.folder(), 'out');
      // Options after the command's own arguments: --out must not be written for refused input.
      const full = args[0] === 'run' || args[0] === 'compare' ? [...args, '--out', out] : args;
      const r = await runWatched(runs, full);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      const err = lines(r.stderr);
      expect(err, r.stderr).toHaveLength(1);
      const line = err[0] ?? '';
      expect(line.startsWith(`vmmsim: ${c.code}: `), line).toBe(true);
      expect(line).toMatch(/\(fix: .+\)$/);
      expect(r.stderr).not.toMatch(STACK_LINE);
      for (const m of c.mentions(args)) expect(line, `mentions ${m}`).toContain(m);
      expect(r.spawned, 'processes started').toEqual([]);
      expect(entries(r.tmp), 'socket folder created').toEqual([]);
      expect(entries(out), 'results written').toEqual([]);
    });
  }

  it('names the line and column of a YAML syntax error (its fix says "at the position shown")', async () => {
    // The flow sequence opened on line 2 is never closed: the parser stops at the end of input.
    const file = scenarioFile('name: broken\ntopology: [psmmus\n');
    const r = await runWatched(runs, ['run', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('E_SCENARIO_YAML');
    expect(r.stderr).toMatch(/at line \d+, column \d+/);
  });
});

describe('help', () => {
  const HELP: { args: string[]; shows: string[] }[] = [
    { args: ['--help'], shows: ['usage: vmmsim <command>', 'run', 'compare', 'decode-cmd', 'scenario-keys'] },
    { args: ['-h'], shows: ['usage: vmmsim <command>'] },
    { args: ['help'], shows: ['usage: vmmsim <command>', 'Exit codes'] },
    { args: [], shows: ['usage: vmmsim <command>'] },
    { args: ['help', 'run'], shows: ['usage: vmmsim run', '--model', '--ops'] },
    { args: ['run', '--help'], shows: ['usage: vmmsim run', '--model', '--ops', '--seed', '--set', '--out', '--json'] },
    { args: ['run', '-h'], shows: ['usage: vmmsim run'] },
    { args: ['compare', '--help'], shows: ['vmmsim compare', '--models'] },
    { args: ['decode-cmd', '--help'], shows: ['usage: vmmsim decode-cmd W0 W1', '--json', 'CERROR_ILL'] },
    { args: ['help', 'decode-cmd'], shows: ['usage: vmmsim decode-cmd'] },
  ];
  for (const h of HELP) {
    it(`\`${['vmmsim', ...h.args].join(' ')}\`${h.args.length === 0 ? ' (no arguments)' : ''} prints usage, exits 0 and starts nothing`, async () => {
      const r = await runWatched(runs, h.args);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      for (const s of h.shows) expect(r.stdout).toContain(s);
      expect(r.spawned).toEqual([]);
      expect(entries(r.tmp)).toEqual([]);
    });
  }

  it('`vmmsim scenario-keys` lists every key with its default', async () => {
    const r = await runWatched(runs, ['scenario-keys']);
    expect(r.code, r.stderr).toBe(0);
    for (const key of ['topology.psmmus', 'workload.threads', 'workload.ops', 'model', 'seed']) {
      expect(r.stdout).toMatch(new RegExp(`^${key.replace('.', '\\.')}\\s`, 'm'));
    }
    // An option that can do nothing states when it matters (the run notes no-effect.<key> otherwise).
    const doc = (key: string): string => {
      const ls = r.stdout.split('\n');
      const at = ls.findIndex((l) => l.startsWith(`${key} `));
      const next = ls.findIndex((l, i) => i > at && /^[a-zA-Z]/.test(l));
      return ls.slice(at, next < 0 ? undefined : next).join(' ').replace(/\s+/g, ' ');
    };
    for (const key of ['vmm.hwptInvalidate', 'topology.dispatch', 'topology.vcmdqsPerVsmmu', 'guest.flushQueue', 'guest.tceHcalls', 'smmu.ril']) {
      expect(doc(key), key).toMatch(/Matters only /);
    }
    expect(r.spawned).toEqual([]);
  });

  it('`vmmsim scenario-keys` says which values of which keys no upstream code runs', async () => {
    const r = await runWatched(runs, ['scenario-keys']);
    expect(r.code, r.stderr).toBe(0);
    // The "not upstream" line of a key follows its doc line, before the next key.
    const notUpstream = (key: string): string | undefined => {
      const at = r.stdout.split('\n').findIndex((l) => l.startsWith(`${key} `));
      return r.stdout.split('\n').slice(at + 1, at + 4).find((l) => l.trim().startsWith('not upstream:'));
    };
    expect(notUpstream('topology.vsmmu')).toMatch(/single in front of more than one pSMMU .* is exploration: .*iommufd_vdevice_alloc_ioctl/);
    expect(notUpstream('topology.dispatch')).toMatch(/exploration either way/);
    expect(notUpstream('topology.vmid')).toMatch(/per-s2-parent with a VM's devices behind several pSMMUs .* needs code that is not upstream/);
    expect(notUpstream('model')).toMatch(/vhost-iommu is an extrapolation/);
    expect(notUpstream('topology.psmmus')).toBeUndefined();
  });
});
