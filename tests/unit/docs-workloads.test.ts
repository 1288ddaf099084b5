import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadProfile } from '../../services/cost/profile.js';
import { leafFields } from '../../services/scenario/schema.js';
import { ROOT } from '../helpers/cli.js';

const doc = readFileSync(join(ROOT, 'docs/scenarios.md'), 'utf8');

/** The rows of the table under "## Workloads and their defaults": input, default, confidence. */
function workloadRows(): { input: string; value: string; conf: string }[] {
  const section = doc.split('## Workloads and their defaults')[1]?.split('\n## ')[0] ?? '';
  return section
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .map((l) => l.split('|').map((c) => c.trim()))
    .map((c) => ({ input: (c[1] ?? '').replace(/`/g, ''), value: c[2] ?? '', conf: c[3] ?? '' }));
}

describe('docs/scenarios.md lists every scenario key and every workload default with its source', () => {
  it('names every key of the schema', () => {
    const missing = leafFields().map(([key]) => key).filter((key) => !doc.includes(`\`${key}\``));
    expect(missing).toEqual([]);
  });

  it('gives each device and workload default as the schema has it', () => {
    const defaults = new Map(leafFields().map(([key, f]) => [key, f.default]));
    const rows = workloadRows().filter((r) => defaults.has(r.input));
    expect(rows.map((r) => r.input)).toEqual(expect.arrayContaining(['device.nic.mpps', 'device.nic.lineGbps', 'device.nvme.serviceUs', 'device.nvme.parallelism', 'device.nvme.linkGBps', 'workload.packetBytes']));
    for (const r of rows) expect(r.value, r.input).toBe(String(defaults.get(r.input)));
  });

  it('gives each per-I/O cost step as the default profile has it: ns and confidence', () => {
    const profile = loadProfile('arm64-kunpeng920');
    const rows = workloadRows().filter((r) => profile.steps[r.input] !== undefined);
    expect(rows.map((r) => r.input)).toEqual(expect.arrayContaining(['net.tx_packet', 'net.rx_packet', 'block.request', 'guest.pmd_io', 'guest.bounce_copy', 'guest.swiotlb_slot']));
    for (const r of rows) {
      const step = profile.steps[r.input];
      expect(`${r.value} ${r.conf}`, r.input).toBe(`${step?.ns} ns ${step?.confidence}`);
    }
  });
});
