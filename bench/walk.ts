/**
 * `npm run bench -- walk [--json] [--translations N]`: nested translations per second through the
 * physical SMMU's real translation path (stream config, IOTLB, stage-1 walk whose every table
 * address goes through stage 2), with a cold IOTLB (every lookup misses and walks) and a warm one
 * (the working set fits, every lookup hits). Tables live in the same memory files a run uses.
 * warmVerifiedPerSec adds the simulator's ground-truth check of each hit (one read of the leaf
 * descriptor), which device DMA in a run pays to count stale translations.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { GUEST_TABLE_BASE, cdIpa, guestRamFile } from '../services/machine/board.js';
import { loadProfile, profileCosts } from '../services/cost/profile.js';
import { CostTable } from '../services/cost/steps.js';
import type { Topology__Output } from '../services/runtime/generated/vmmsim/v1/Topology.js';
import { FileMemory, FrameAllocator } from '../services/machine/memory.js';
import { PageTable } from '../services/machine/pagetable.js';
import { encodeCd } from '../services/formats/smmu/structures.js';
import { AddressSpace, HostPhysical } from '../services/psmmu/address-space.js';
import { EventQueue } from '../services/psmmu/events.js';
import { Iotlb } from '../worker-pool/iotlb.js';
import { Translator } from '../services/psmmu/translate.js';
import { HostTables } from '../services/vfio/host-tables.js';
import { MODEL } from '../services/designs/names.js';

const SID = 0x108;
const PAGES = 4096;

export async function walkBench(argv: string[]): Promise<void> {
  const a = benchArgs('walk', 'usage: npm run bench -- walk [--json] [--translations N]\n', argv, {
    json: { type: 'boolean', default: false },
    translations: { type: 'string', default: '20000' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (!a) return;
  const { values } = a;
  const n = a.number('translations', values.translations, 1);
  const ramDir = mkdtempSync(join(process.platform === 'linux' ? '/dev/shm' : tmpdir(), 'vmmsim-walk-'));
  try {
    const costs = profileCosts(loadProfile('arm64-kunpeng920'));
    const topology = {
      model: MODEL.nestedSmmuv3, ramDir, devices: [{ vm: 0, psmmu: 0, vsid: 8, psid: SID }], vmids: [1],
    } as unknown as Topology__Output;
    const host = new HostTables(topology);
    const guest = new FileMemory(guestRamFile(ramDir, 0), 'create');
    const stage1 = new PageTable(guest, new FrameAllocator(GUEST_TABLE_BASE));
    guest.write(cdIpa(0), encodeCd({ valid: true, asid: 1, ttb0: stage1.root }));
    for (let i = 0; i < PAGES; i++) stage1.map(0x1000_0000 + i * 4096, 0x1_0000_0000 + i * 4096, 1);
    const space = new AddressSpace(ramDir);
    const iotlb = Iotlb.create(PAGES * 2);
    const translator = new Translator(0, new HostPhysical(space), iotlb, new EventQueue(), new CostTable(costs));
    const va = (i: number): number => 0x1000_0000 + (i % PAGES) * 4096 + 0x80;

    translator.translate(SID, va(0), false); // stream config cached, as in steady state
    const t0 = process.hrtime.bigint();
    let reads = 0;
    for (let i = 0; i < n; i++) {
      iotlb.invalidateVa(1, 1, va(i) - 0x80, 4096);
      const r = translator.translate(SID, va(i), false);
      if (r.pa < 0) throw new Error('walk faulted');
      reads += r.reads;
    }
    const coldNs = Number(process.hrtime.bigint() - t0);
    for (let i = 0; i < PAGES; i++) translator.translate(SID, va(i), false);
    const t1 = process.hrtime.bigint();
    const warmN = n * 20;
    for (let i = 0; i < warmN; i++) translator.translate(SID, va(i), false);
    const warmNs = Number(process.hrtime.bigint() - t1);
    const t2 = process.hrtime.bigint();
    for (let i = 0; i < warmN; i++) translator.translate(SID, va(i), false, false);
    const warmHwNs = Number(process.hrtime.bigint() - t2);
    const modeledMiss = costs['smmu.iotlb_lookup']! + (reads / n) * costs['smmu.walk_access']!;
    const result = {
      coldTranslationsPerSec: Math.round(n / (coldNs / 1e9)),
      warmTranslationsPerSec: Math.round(warmN / (warmHwNs / 1e9)),
      warmVerifiedPerSec: Math.round(warmN / (warmNs / 1e9)),
      accessesPerColdWalk: reads / n,
      modeledColdNs: modeledMiss,
      modeledWarmNs: costs['smmu.iotlb_lookup']!,
      iotlbEntries: iotlb.capacity,
      memory: 'shared files (pread per descriptor)',
    };
    space.close();
    guest.close();
    host.close();
    if (values.json) process.stdout.write(JSON.stringify(result) + '\n');
    else {
      process.stdout.write(`walk bench: ${n} cold and ${warmN} warm nested translations, 4 KiB stage 1 over 1 GiB stage-2 blocks\n\n`);
      for (const [k, v] of Object.entries(result)) process.stdout.write(`  ${k.padEnd(24)} ${v}\n`);
    }
  } finally {
    rmSync(ramDir, { recursive: true, force: true });
  }
}
