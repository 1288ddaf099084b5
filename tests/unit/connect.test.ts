import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectTarget, requireEndpoints } from '../../services/controller/connect.js';
import { thrown } from '../helpers/thrown.js';

const dir = mkdtempSync(join(tmpdir(), 'vmmsim-connect-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const peers = join(dir, 'peers.yaml');
writeFileSync(peers, 'endpoints:\n  - {name: psmmu-0, address: "10.0.0.2:7700"}\n  - {name: vfio, address: "10.0.0.3:7700"}\n  - {name: kvm, address: "10.0.0.4:7700"}\nramDir: /mnt/ram\n');

describe('--connect and --ram-dir', () => {
  it('reads the file, and --ram-dir when given', () => {
    expect(connectTarget({})).toBeUndefined();
    const t = connectTarget({ connect: peers, 'ram-dir': '/dev/shm/x' });
    expect(t?.peers.endpoints.map((e) => e.name)).toEqual(['psmmu-0', 'vfio', 'kvm']);
    expect(t?.peers.ramDir).toBe('/mnt/ram');
    expect(t?.ramDir).toBe('/dev/shm/x');
  });

  it('refuses options that do not go with it, as bad input', () => {
    for (const [values, why] of [
      [{ 'ram-dir': '/dev/shm/x' }, /--ram-dir goes with --connect/],
      [{ connect: peers, transport: 'tcp' }, /--transport is for processes the controller launches/],
      [{ connect: peers, 'ram-dir': 'rel' }, /--ram-dir must be an absolute path/],
    ] as const) {
      const e = thrown(() => connectTarget(values));
      expect(e.code).toBe('E_USAGE');
      expect(e.message).toMatch(why);
    }
  });
});

describe('the processes a scenario needs', () => {
  const target = connectTarget({ connect: peers });
  if (!target) throw new Error('no target');

  it('are taken from the file, in the order asked', () => {
    expect(requireEndpoints(target, [{ role: 'kvm', index: 0 }, { role: 'psmmu', index: 0 }]).map((e) => e.address)).toEqual(['10.0.0.4:7700', '10.0.0.2:7700']);
  });

  it('are all named when missing, with how to start them', () => {
    const e = thrown(() => requireEndpoints(target, [{ role: 'psmmu', index: 0 }, { role: 'psmmu', index: 1 }, { role: 'vfio', index: 0 }, { role: 'guest', index: 0 }]));
    expect(e.code).toBe('E_PEERS_FILE');
    expect(e.exitCode).toBe(2);
    expect(e.message).toBe(`peers file ${peers} does not name psmmu-1, guest-0, which the scenario needs (it needs psmmu-0, psmmu-1, vfio, guest-0)`);
    expect(e.fix).toContain('vmmsim serve psmmu --index 1; vmmsim serve guest --index 0');
  });
});
