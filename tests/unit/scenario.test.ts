import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadScenario } from '../../services/controller/scenario-load.js';
import { leafFields } from '../../services/scenario/schema.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import { thrown } from '../helpers/thrown.js';

function file(text: string): string {
  const p = join(mkdtempSync(join(tmpdir(), 'vmmsim-scn-')), 's.yaml');
  writeFileSync(p, text);
  return p;
}

describe('scenario schema', () => {
  it('fills every default from the one schema', () => {
    const s = resolveScenario({});
    for (const [path, f] of leafFields()) {
      const v = path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], s);
      expect(v, path).toBe(f.default);
    }
  });

  it('suggests the closest key for a misspelt one', () => {
    const e = thrown(() => resolveScenario({ topology: { psmmu: 2 } }));
    expect(e.code).toBe('E_SCENARIO_FIELD');
    expect(e.message).toContain('topology.psmmu');
    expect(e.message).toContain('did you mean topology.psmmus');
  });

  it('names the range of an out-of-range value', () => {
    const e = thrown(() => resolveScenario({ topology: { psmmus: 0 } }));
    expect(e.message).toMatch(/topology\.psmmus.*from 1 to 64, got 0/);
  });

  it('refuses wrong types', () => {
    expect(thrown(() => resolveScenario({ workload: { threads: 'four' } })).message).toContain('workload.threads');
    expect(thrown(() => resolveScenario({ workload: { threads: 1.5 } })).message).toContain('an integer');
    expect(thrown(() => resolveScenario({ topology: 3 })).message).toContain('must be a mapping');
  });

  it('lists valid values for an unknown enum value and says "not supported yet" for planned ones', () => {
    const unknown = thrown(() => resolveScenario({ model: 'nested-smmu' }));
    expect(unknown.message).toContain('did you mean "nested-smmuv3"');
    expect(thrown(() => resolveScenario({ topology: { hosts: 2 } })).code).toBe('E_NOT_SUPPORTED');
  });

  it('refuses more VMs than assigned devices, naming the keys to raise', () => {
    const e = thrown(() => resolveScenario({ topology: { vms: 3, psmmus: 2 } }));
    expect(e.code).toBe('E_SCENARIO_FIELD');
    expect(e.message).toMatch(/topology\.vms.*3 VMs need at least 3 assigned devices.*psmmus x devicesPerPsmmu is 2/);
    expect(resolveScenario({ topology: { vms: 4, psmmus: 2, devicesPerPsmmu: 2 } }).topology.vms).toBe(4);
  });

  it('reads --set values as the key type and refuses unknown keys', () => {
    const s = loadScenario(undefined, ['topology.psmmus=4', 'workload.durationSec=1.5', 'topology.vsmmu=per-psmmu']);
    expect(s.topology.psmmus).toBe(4);
    expect(s.workload.durationSec).toBe(1.5);
    expect(s.topology.vsmmu).toBe('per-psmmu');
    expect(thrown(() => loadScenario(undefined, ['topology.psmmus=two'])).message).toContain('topology.psmmus');
    expect(thrown(() => loadScenario(undefined, ['nokey=1'])).message).toContain('unknown scenario key nokey');
  });

  it('takes a migration step as workload.migration.* (none by default), refused with trace-replay', () => {
    expect(resolveScenario({}).workload.migration).toEqual({ atOp: 0, destVcmdqs: 128, fallback: 'vmm' });
    const s = loadScenario(undefined, ['workload.migration.atOp=100', 'workload.migration.destVcmdqs=1']);
    expect(s.workload.migration).toEqual({ atOp: 100, destVcmdqs: 1, fallback: 'vmm' });
    expect(loadScenario(undefined, ['workload.migration.fallback=kvm']).workload.migration.fallback).toBe('kvm');
    expect(thrown(() => resolveScenario({ workload: { migration: { fallback: 'qemu' } } })).message).toContain('workload.migration.fallback');
    expect(thrown(() => resolveScenario({ workload: { migration: { destVcmdqs: 129 } } })).message).toContain('workload.migration.destVcmdqs');
    const replay = thrown(() => resolveScenario({ workload: { kind: 'trace-replay', migration: { atOp: 10 } } }));
    expect(replay.code).toBe('E_NOT_SUPPORTED');
    expect(replay.message).toContain('workload.migration.atOp');
  });

  it('reports invalid YAML with its position, and empty or missing files', () => {
    expect(thrown(() => loadScenario(file('name: [unclosed\n'))).code).toBe('E_SCENARIO_YAML');
    expect(thrown(() => loadScenario(file('  \n'))).code).toBe('E_SCENARIO_FILE');
    expect(thrown(() => loadScenario('/nonexistent/s.yaml')).code).toBe('E_SCENARIO_FILE');
    expect(thrown(() => loadScenario(file('- a\n- b\n'))).message).toContain('must be a mapping');
  });

  it('loads the shipped default scenario', () => {
    const s = loadScenario(join(import.meta.dirname, '..', '..', 'scenarios', 'default.yaml'));
    expect(s.name).toBe('default');
    expect(s.workload.kind).toBe('dma-map-benchmark');
  });
});
