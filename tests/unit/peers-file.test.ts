import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VmmsimError } from '../../services/runtime/errors.js';
import { isAddress, loadPeersFile, parseEndpointName } from '../../services/runtime/peers.js';
import { thrown } from '../helpers/thrown.js';

const dir = mkdtempSync(join(tmpdir(), 'vmmsim-peers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(text: string): string {
  const path = join(dir, `peers-${n++}.yaml`);
  writeFileSync(path, text);
  return path;
}

function refusal(text: string): VmmsimError {
  return thrown(() => loadPeersFile(file(text)));
}

describe('process names', () => {
  it('reads singletons and indexed roles, and nothing else', () => {
    expect(parseEndpointName('kvm')).toEqual({ role: 'kvm', index: 0 });
    expect(parseEndpointName('vfio')).toEqual({ role: 'vfio', index: 0 });
    expect(parseEndpointName('psmmu-12')).toEqual({ role: 'psmmu', index: 12 });
    expect(parseEndpointName('guest-0')).toEqual({ role: 'guest', index: 0 });
    for (const bad of ['kvm-0', 'vfio-1', 'psmmu', 'psmmu-01', 'psmmu--1', 'nic-0', 'qemu-x', 'Guest-0']) expect(parseEndpointName(bad), bad).toBeUndefined();
  });
});

describe('addresses', () => {
  it('takes HOST:PORT, [v6]:PORT and absolute unix: paths', () => {
    for (const ok of ['10.0.0.2:7700', 'psmmu-0.vmmsim.svc:7700', 'localhost:1', '[::1]:7700', 'unix:/run/vmmsim/psmmu-0.sock', 'unix:///run/x.sock']) expect(isAddress(ok), ok).toBe(true);
    for (const bad of ['10.0.0.2', ':7700', 'unix:relative.sock', 'http://x:1', 'a b:1', '::1:7700', '10.0.0.2:65536', '10.0.0.2:99999', '[::1]:70000', 'h:0']) expect(isAddress(bad), bad).toBe(false);
    expect(isAddress('10.0.0.2:65535')).toBe(true);
  });
});

describe('peers files', () => {
  it('reads YAML and JSON, with or without a memory folder', () => {
    const yaml = loadPeersFile(file('endpoints:\n  - {name: psmmu-0, address: "10.0.0.2:7700"}\n  - name: vfio\n    address: 10.0.0.3:7700\nramDir: /dev/shm/vmmsim\n'));
    expect(yaml.endpoints).toEqual([
      { name: 'psmmu-0', role: 'psmmu', index: 0, address: '10.0.0.2:7700' },
      { name: 'vfio', role: 'vfio', index: 0, address: '10.0.0.3:7700' },
    ]);
    expect(yaml.ramDir).toBe('/dev/shm/vmmsim');
    const json = loadPeersFile(file(JSON.stringify({ endpoints: [{ name: 'kvm', address: 'unix:/tmp/kvm.sock' }] })));
    expect(json.endpoints).toEqual([{ name: 'kvm', role: 'kvm', index: 0, address: 'unix:/tmp/kvm.sock' }]);
    expect(json.ramDir).toBeUndefined();
  });

  it('refuses what it cannot use, naming the file and the entry', () => {
    const cases: [string, RegExp][] = [
      ['endpoints: [', /not YAML or JSON/],
      ['- a\n- b\n', /expected a mapping with `endpoints:`/],
      ['endpoints: []\n', /must be a non-empty list/],
      ['endpoints: [{name: psmmu-0, address: "1.2.3.4:1"}]\nhosts: 2\n', /unknown key hosts/],
      ['endpoints: [{name: nic-0, address: "1.2.3.4:1"}]\n', /endpoints\[0\]\.name "nic-0" is not a process name/],
      ['endpoints: [{address: "1.2.3.4:1"}]\n', /endpoints\[0\]\.name must be a process name/],
      ['endpoints: [{name: vfio, address: "1.2.3.4:1"}, {name: vfio, address: "1.2.3.5:1"}]\n', /vfio is listed twice/],
      ['endpoints: [{name: vfio, address: "1.2.3.4"}]\n', /vfio: address must be "HOST:PORT" \(a port 1\.\.65535\) or "unix:\/abs\/path\.sock", got "1\.2\.3\.4"/],
      ['endpoints: [{name: psmmu-0, address: "1.2.3.4:1"}, {name: kvm, address: "1.2.3.4:65536"}]\n', /kvm: address must be "HOST:PORT" \(a port 1\.\.65535\) .*, got "1\.2\.3\.4:65536"/],
      ['endpoints: [{name: vfio, address: "1.2.3.4:1"}]\nramDir: shm\n', /ramDir must be an absolute path/],
    ];
    for (const [text, why] of cases) {
      const e = refusal(text);
      expect(e.code, text).toBe('E_PEERS_FILE');
      expect(e.exitCode).toBe(2);
      expect(e.message, text).toMatch(/^peers file \S+peers-\d+\.yaml: /);
      expect(e.message, text).toMatch(why);
    }
  });

  it('names a file it cannot read', () => {
    expect(() => loadPeersFile(join(dir, 'missing.yaml'))).toThrow(/peers file \S+missing\.yaml: cannot read it: ENOENT/);
  });
});
