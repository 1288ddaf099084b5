import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../services/runtime/paths.js';
import { Iotlb, type IotlbEntry } from '../../worker-pool/iotlb.js';
import { workerFile } from '../../worker-pool/worker-file.js';

const PAGE = 4096;

// ---- a reference model of each invalidation scope, on plain entries ----

type Scope =
  | { kind: 'va'; vmid: number; asid: number; va: number; span: number }
  | { kind: 'vaa'; vmid: number; va: number; span: number }
  | { kind: 'asid'; vmid: number; asid: number }
  | { kind: 'stage1'; vmid: number }
  | { kind: 'vmid'; vmid: number }
  | { kind: 'ipa'; vmid: number; ipa: number; span: number }
  | { kind: 'all' };

function inRange(addr: number, start: number, span: number): boolean {
  const p = Math.floor(addr / PAGE);
  return p >= Math.floor(start / PAGE) && p <= Math.floor((start + Math.max(span, 1) - 1) / PAGE);
}

function covers(s: Scope, e: IotlbEntry): boolean {
  switch (s.kind) {
    case 'all':
      return true;
    case 'vmid':
      return e.vmid === s.vmid;
    case 'stage1':
      return e.vmid === s.vmid && !e.stage2Only;
    case 'asid':
      return e.vmid === s.vmid && !e.stage2Only && e.asid === s.asid;
    case 'va':
      return e.vmid === s.vmid && !e.stage2Only && e.asid === s.asid && inRange(e.page, s.va, s.span);
    case 'vaa':
      return e.vmid === s.vmid && !e.stage2Only && inRange(e.page, s.va, s.span);
    case 'ipa':
      // Stage-2-only entries only: combined stage-1+2 entries are not in S2_IPA's scope.
      return e.vmid === s.vmid && e.stage2Only && inRange(e.page, s.ipa, s.span);
  }
}

function apply(t: Iotlb, s: Scope): number {
  switch (s.kind) {
    case 'all':
      return t.invalidateAll();
    case 'vmid':
      return t.invalidateVmid(s.vmid);
    case 'stage1':
      return t.invalidateStage1(s.vmid);
    case 'asid':
      return t.invalidateAsid(s.vmid, s.asid);
    case 'va':
      return t.invalidateVa(s.vmid, s.asid, s.va, s.span);
    case 'vaa':
      return t.invalidateVaAllAsid(s.vmid, s.va, s.span);
    case 'ipa':
      return t.invalidateIpa(s.vmid, s.ipa, s.span);
  }
}

const key = (e: IotlbEntry): string => JSON.stringify(e);
const sorted = (es: IotlbEntry[]): string[] => es.map(key).sort();

// Page numbers clustered around interesting places (0, the 2^32-page word boundary, near 2^40 = a
// 52-bit address) so entries collide in sets and ranges cross the split between the two words.
const BASES = [0, 2 ** 32 - 8, 2 ** 40 - 64];
const pageNum = fc.tuple(fc.constantFrom(...BASES), fc.integer({ min: 0, max: 40 })).map(([b, o]) => b + o);
const vmidArb = fc.integer({ min: 1, max: 3 });
const asidArb = fc.integer({ min: 0, max: 2 });

const entryArb: fc.Arbitrary<IotlbEntry> = fc
  .record({
    vmid: vmidArb,
    asid: fc.integer({ min: -1, max: 2 }),
    page: pageNum,
    pa: fc.integer({ min: 0, max: 2 ** 40 - 1 }),
    writable: fc.boolean(),
    ipa: pageNum,
    leaf: fc.integer({ min: 0, max: 2 ** 48 }),
  })
  .map((r) => ({
    vmid: r.vmid,
    asid: r.asid,
    stage2Only: r.asid < 0,
    page: r.page * PAGE,
    pa: r.pa * PAGE,
    writable: r.writable,
    ipa: r.ipa * PAGE,
    leafDescAddr: r.leaf * 8,
  }));

// Spans: sub-page, one page, a few pages, past the per-page loop limit (a scan), and huge.
const spanArb = fc.constantFrom(0, 1, PAGE, 5 * PAGE, 17 * PAGE, 300 * PAGE, 2 ** 45);
const addrArb = fc.tuple(pageNum, fc.integer({ min: 0, max: PAGE - 1 })).map(([p, off]) => p * PAGE + off);

const scopeArbs: Record<Scope['kind'], fc.Arbitrary<Scope>> = {
  va: fc.record({ kind: fc.constant('va' as const), vmid: vmidArb, asid: asidArb, va: addrArb, span: spanArb }),
  vaa: fc.record({ kind: fc.constant('vaa' as const), vmid: vmidArb, va: addrArb, span: spanArb }),
  asid: fc.record({ kind: fc.constant('asid' as const), vmid: vmidArb, asid: asidArb }),
  stage1: fc.record({ kind: fc.constant('stage1' as const), vmid: vmidArb }),
  vmid: fc.record({ kind: fc.constant('vmid' as const), vmid: vmidArb }),
  ipa: fc.record({ kind: fc.constant('ipa' as const), vmid: vmidArb, ipa: addrArb, span: spanArb }),
  all: fc.constant({ kind: 'all' as const }),
};

describe('IOTLB invalidation scopes (property: exactly the covered entries go)', () => {
  for (const [kind, scopeArb] of Object.entries(scopeArbs)) {
    it(`${kind}: no lookup returns a covered entry, every other entry survives unchanged`, () => {
      fc.assert(
        fc.property(fc.array(entryArb, { minLength: 1, maxLength: 120 }), scopeArb, (entries, scope) => {
          const t = Iotlb.create(256, 8);
          for (const e of entries) t.insert(e);
          // The model starts from what the table holds (set conflicts may have evicted some).
          const before = t.entries();
          const gone = before.filter((e) => covers(scope, e));
          const kept = before.filter((e) => !covers(scope, e));
          expect(apply(t, scope)).toBe(gone.length);
          expect(sorted(t.entries())).toEqual(sorted(kept));
          expect(t.size).toBe(kept.length);
          for (const e of gone) expect(t.lookup(e.vmid, e.stage2Only ? -1 : e.asid, e.page + 123)).toBeUndefined();
          for (const e of kept) expect(t.lookup(e.vmid, e.stage2Only ? -1 : e.asid, e.page)).toEqual(e);
        }),
        { numRuns: 150 },
      );
    });
  }
});

function entry(over: Partial<IotlbEntry> & { page: number }): IotlbEntry {
  return { vmid: 1, asid: 1, stage2Only: false, pa: 0x8000_0000 + over.page, writable: true, ipa: 0x4000_0000 + over.page, leafDescAddr: 0x1000, ...over };
}

describe('IOTLB replacement and capacity', () => {
  it('evicts the least recently used way of a full set, counting hits and lookups as uses', () => {
    const t = Iotlb.create(32, 4); // 8 sets: pages p, p+8, p+16... share a set
    const pages = [0, 8, 16, 24].map((p) => p * PAGE);
    for (const page of pages) t.insert(entry({ page }));
    expect(t.lookup(1, 1, pages[0] ?? 0)).toBeDefined(); // page 0 becomes the most recent
    t.insert(entry({ page: 32 * PAGE })); // evicts page 8, the least recent
    expect(t.lookup(1, 1, 8 * PAGE)).toBeUndefined();
    for (const p of [0, 16, 24, 32]) expect(t.lookup(1, 1, p * PAGE), `page ${p}`).toBeDefined();
    // Order now (old -> new): 0, 16, 24, 32 after the lookups above; the next fill evicts page 0.
    t.insert(entry({ page: 40 * PAGE }));
    expect(t.lookup(1, 1, 0)).toBeUndefined();
    expect(t.stats().evictions).toBe(2);
    expect(t.size).toBe(4);
  });

  it('re-inserting the same tag and page replaces the entry in place', () => {
    const t = Iotlb.create(64);
    t.insert(entry({ page: 5 * PAGE, pa: 0x1000 }));
    t.insert(entry({ page: 5 * PAGE, pa: 0x2000, writable: false }));
    expect(t.size).toBe(1);
    expect(t.lookup(1, 1, 5 * PAGE)).toMatchObject({ pa: 0x2000, writable: false });
    expect(t.stats()).toMatchObject({ inserts: 2, evictions: 0 });
  });

  it('holds exactly `capacity` entries when they spread over the sets, and never more', () => {
    const t = Iotlb.create(1024, 8);
    for (let p = 0; p < 1024; p++) t.insert(entry({ page: p * PAGE }));
    expect(t.size).toBe(1024);
    expect(t.stats().evictions).toBe(0);
    for (let p = 1024; p < 6000; p++) t.insert(entry({ page: p * 7919 * PAGE, asid: p % 5 }));
    expect(t.size).toBe(1024);
    expect(t.entries()).toHaveLength(1024);
    expect(t.stats().evictions).toBe(6000 - 1024);
  });

  it('keeps stage-2-only and stage-1 entries of one page apart', () => {
    const t = Iotlb.create(64);
    t.insert(entry({ page: 0x5000, asid: -1, stage2Only: true, pa: 0xa000 }));
    t.insert(entry({ page: 0x5000, asid: 0, pa: 0xb000, ipa: 0x9000 }));
    expect(t.lookup(1, -1, 0x5000)).toMatchObject({ stage2Only: true, asid: -1, pa: 0xa000 });
    expect(t.lookup(1, 0, 0x5000)).toMatchObject({ stage2Only: false, asid: 0, pa: 0xb000 });
    expect(t.invalidateStage1(1)).toBe(1); // NH_ALL leaves stage 2
    expect(t.lookup(1, -1, 0x5000)).toBeDefined();
    t.insert(entry({ page: 0x5000, asid: 0, pa: 0xb000, ipa: 0x9000 }));
    // S2_IPA drops stage-2-only entries by IPA; the nested entry (IPA 0x9000) is not in its scope.
    expect(t.invalidateIpa(1, 0x9000, PAGE)).toBe(0);
    expect(t.lookup(1, -1, 0x5000)).toBeDefined();
    expect(t.invalidateIpa(1, 0x5000, PAGE)).toBe(1);
    expect(t.lookup(1, 0, 0x5000)).toBeDefined();
    expect(t.invalidateVmid(1)).toBe(1); // S12_VMALL takes the nested one
    expect(t.size).toBe(0);
  });

  it('tells 52-bit pages apart that share their low 32 page bits', () => {
    const t = Iotlb.create(64);
    const hi = 2 ** 51;
    t.insert(entry({ page: hi, pa: 1 * PAGE }));
    t.insert(entry({ page: hi + 2 ** 32 * PAGE, pa: 2 * PAGE }));
    t.insert(entry({ page: 2 ** 52 - PAGE, pa: 3 * PAGE, ipa: 2 ** 52 - PAGE, leafDescAddr: 2 ** 52 - 8 }));
    expect(t.lookup(1, 1, hi + 0xfff)?.pa).toBe(PAGE);
    expect(t.lookup(1, 1, hi + 2 ** 32 * PAGE)?.pa).toBe(2 * PAGE);
    expect(t.lookup(1, 1, 2 ** 52 - 1)).toMatchObject({ page: 2 ** 52 - PAGE, ipa: 2 ** 52 - PAGE, leafDescAddr: 2 ** 52 - 8 });
    expect(t.invalidateVa(1, 1, hi, PAGE)).toBe(1);
    expect(t.lookup(1, 1, hi + 2 ** 32 * PAGE)).toBeDefined();
  });

  it('counts hits, misses, inserts and invalidations', () => {
    const t = Iotlb.create(64);
    t.insert(entry({ page: 0 }));
    t.insert(entry({ page: PAGE }));
    t.lookup(1, 1, 0);
    t.lookup(1, 1, 2 * PAGE);
    t.lookup(1, 2, 0);
    t.invalidateAsid(1, 1);
    expect(t.stats()).toEqual({ hits: 1, misses: 2, evictions: 0, invalidated: 2, inserts: 2 });
    // The old property names still read the shared counters (services/psmmu/index.ts uses them).
    expect(t.invalidated).toBe(2);
  });

  it('a range of more pages than the per-page limit drops the same entries as page by page', () => {
    const a = Iotlb.create(4096);
    const b = Iotlb.create(4096);
    for (let p = 0; p < 3000; p++) for (const t of [a, b]) t.insert(entry({ page: p * PAGE, asid: p % 3 }));
    let n = 0;
    for (let p = 100; p < 2100; p++) n += b.invalidateVa(1, 1, p * PAGE, PAGE);
    expect(a.invalidateVa(1, 1, 100 * PAGE, 2000 * PAGE)).toBe(n);
    expect(sorted(a.entries())).toEqual(sorted(b.entries()));
  });

  it('refuses shapes it cannot build and buffers that are not an IOTLB', () => {
    expect(() => Iotlb.create(100, 8)).toThrow(RangeError);
    expect(() => Iotlb.create(0)).toThrow(RangeError);
    expect(() => Iotlb.attach(new SharedArrayBuffer(4096))).toThrow(TypeError);
    // The old constructor still builds a table (services/psmmu uses `new Iotlb(capacity)`).
    expect(new Iotlb(2048).capacity).toBe(2048);
  });

  it('attach gives a second view of the same entries and counters', () => {
    const t = Iotlb.create(64);
    t.insert(entry({ page: PAGE }));
    const u = Iotlb.attach(t.buffer);
    expect(u.lookup(1, 1, PAGE)).toBeDefined();
    expect(u.invalidateVmid(1)).toBe(1);
    expect(t.lookup(1, 1, PAGE)).toBeUndefined();
    expect(t.size).toBe(0);
    expect(t.stats()).toEqual(u.stats());
  });
});

// ---- two threads on one table ----

/** Every field derives from (vmid, asid, page): a torn entry breaks one of these relations. */
function consistent(vmid: number, asid: number, pageNo: number): IotlbEntry {
  const stage2Only = asid < 0;
  const pa = (pageNo * 7 + vmid * 0x10_0000 + (asid + 1) * 0x1_0000) * PAGE;
  return { vmid, asid, stage2Only, page: pageNo * PAGE, pa, writable: pageNo % 2 === 1, ipa: pa + vmid * PAGE, leafDescAddr: pa + 8 * (asid + 2) };
}

function isConsistent(e: IotlbEntry): boolean {
  return key(e) === key(consistent(e.vmid, e.asid, e.page / PAGE));
}

const WORKER_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const PAGE = 4096;
${consistent.toString()}
import(workerData.url).then(({ Iotlb }) => {
  const t = Iotlb.attach(workerData.buffer);
  const stop = new Int32Array(workerData.stop);
  let ops = 0, dropped = 0, bad = 0, hits = 0;
  parentPort.postMessage({ ready: true });
  while (Atomics.load(stop, 0) === 0) {
    const j = Math.floor(ops / 6), vmid = 1 + (j % 3), asid = (j >> 2) % 3 - 1, page = (j * 13) % 600;
    switch (ops % 6) {
      case 0: dropped += t.invalidateVa(vmid, Math.max(asid, 0), page * PAGE, 8 * PAGE); break;
      case 1: if (ops % 61 === 1) dropped += t.invalidateAsid(vmid, Math.max(asid, 0)); break;
      case 2: if (ops % 397 === 2) dropped += t.invalidateVmid(vmid); break;
      case 3: if (ops % 199 === 3) dropped += t.invalidateIpa(vmid, page * PAGE, 300 * PAGE); break;
      case 4: t.insert(consistent(vmid, asid, page)); break;
      default: {
        const e = t.lookup(vmid, asid, page * PAGE);
        if (e) { hits++; if (JSON.stringify(e) !== JSON.stringify(consistent(e.vmid, e.asid, e.page / PAGE))) bad++; }
      }
    }
    ops++;
  }
  parentPort.postMessage({ ops, dropped, bad, hits });
});
`;

describe('IOTLB shared between threads', () => {
  let iotlbUrl: string;

  beforeAll(() => {
    workerFile(); // throws E_VCMDQ_BUILD when dist/ is missing or older than the sources
    iotlbUrl = pathToFileURL(join(packageRoot(), 'dist', 'worker-pool', 'iotlb.js')).href;
  });

  it('a worker invalidating while the main thread inserts and looks up leaves no torn entry', async () => {
    const t = Iotlb.create(2048, 8);
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { url: iotlbUrl, buffer: t.buffer, stop: stop.buffer } });
    const messages: { ready?: boolean; ops?: number; dropped?: number; bad?: number; hits?: number }[] = [];
    const done = new Promise<void>((resolve, reject) => {
      worker.on('message', (m: (typeof messages)[number]) => {
        messages.push(m);
        if (m.ops !== undefined) resolve();
      });
      worker.on('error', reject);
    });
    await new Promise<void>((resolve) => worker.once('message', () => resolve()));
    let ops = 0;
    let bad = 0;
    let hits = 0;
    const until = Date.now() + 400;
    while (Date.now() < until) {
      for (let i = 0; i < 1000; i++, ops++) {
        // Odd steps look up what the even step before inserted (unless the worker dropped it since).
        const j = ops >> 1;
        const vmid = 1 + (j % 3);
        const asid = ((j >> 2) % 3) - 1;
        const page = (j * 7) % 600;
        if (ops % 2 === 0) t.insert(consistent(vmid, asid, page));
        else {
          const e = t.lookup(vmid, asid, page * PAGE);
          if (e) {
            hits++;
            if (!isConsistent(e)) bad++;
          }
        }
      }
    }
    Atomics.store(stop, 0, 1);
    await done;
    await worker.terminate();
    const theirs = messages.find((m) => m.ops !== undefined);
    expect(bad).toBe(0);
    expect(theirs?.bad).toBe(0);
    // Both sides really worked on the same table at the same time.
    expect(hits).toBeGreaterThan(0);
    expect(theirs?.hits).toBeGreaterThan(0);
    expect(theirs?.dropped).toBeGreaterThan(0);
    const all = t.entries();
    expect(all.every(isConsistent)).toBe(true);
    expect(t.size).toBe(all.length);
    expect(new Set(all.map((e) => `${e.vmid}/${e.asid}/${e.page}`)).size).toBe(all.length);
  });
});
