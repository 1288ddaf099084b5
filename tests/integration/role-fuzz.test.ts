/**
 * A bounded fuzzer against standalone roles (`vmmsim serve vfio` and `psmmu-0`, loopback TCP, a
 * run token): sequences of Configure, Start, Stats and Stop calls and Link streams, each malformed,
 * oversized, out of order or spoofed in a way fast-check picks. After every step: the role still
 * answers SERVING, it is alive, its memory stays under a bound, and no file outside the run folder
 * changed. Seeded, so a failure replays; `VMMSIM_FUZZ_RUNS=N` runs longer.
 */
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { createHash, randomUUID } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Envelope } from '../../services/runtime/generated/vmmsim/v1/Envelope.js';
import type { Topology } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { RUN_FOLDER_MARKER, createRunFolder } from '../../services/machine/run-folder.js';
import { RunToken, callerMetadata, loadTokenFile } from '../../services/runtime/transport/auth.js';
import { INSECURE, withToken, type Security } from '../../services/runtime/transport/credentials.js';
import { MAX_ENVELOPES_PER_BATCH } from '../../services/runtime/transport/wire-limits.js';
import { Control } from '../../services/controller/control-client.js';
import { healthCheck } from '../helpers/health.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { emptyEnvelopes, linkStub, outcome, rawLinkStub, rssMb, standaloneTopology } from '../helpers/raw-link.js';
import { startServe, stopServed, testSecurity, testTokenFile, type Served } from '../helpers/serve.js';

const RUNS = Number(process.env['VMMSIM_FUZZ_RUNS'] ?? 60);
/** Resident memory a role may reach under the fuzzer (it starts near 90 MB). */
const RSS_BOUND_MB = 400;
const KINDS = ['MMIO_WRITE', 'MMIO_EXIT', 'HWPT_INVALIDATE', 'CMDQ_SUBMIT', 'ECHO', 'VINTF_MMIO', 'HOST_MMIO', 'HCALL', 'VFIO_DMA_MAP', 'VFIO_DMA_UNMAP', 'IOMMU_MAP', 'IOMMU_UNMAP', 'TCE_UPDATE', 'VM_MIGRATE', 'IOMMU_HW_QUEUE_ALLOC', 'IOMMU_DESTROY', 'IOAS_MAP', 'IOAS_UNMAP', 'TCE_KILL', 'MMIO_READ', 'VIOMMU_INVALIDATE'] as const;
const NAMES = ['controller', 'qemu-0', 'kvm', 'guest-0', 'vfio', 'psmmu-0', 'psmmu-7', 'stranger'] as const;

const marker = randomUUID();
let vfio: Served;
let psmmu: Served;
let ramDir = '';
let outside = '';
/** Every file outside the run folder the fuzzer aims at, with its content's hash. */
const watched = new Map<string, string>();

function hash(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** How a call proves (or fails to prove) who it is. */
type Auth = 'proved' | 'wrong-token' | 'unproved';
function security(auth: Auth): Security {
  if (auth === 'proved') return testSecurity();
  if (auth === 'wrong-token') return withToken(INSECURE, RunToken.generate());
  return INSECURE;
}
function metadata(name: string, auth: Auth): grpc.Metadata {
  return callerMetadata(name, auth === 'proved' ? loadTokenFile(testTokenFile()) : auth === 'wrong-token' ? RunToken.generate() : undefined);
}

/** Folders a Configure may name: the run folder, and traps around the files outside it. */
function folders(): string[] {
  const trap = join(outside, 'marked-trap');
  return [ramDir, trap, outside, join(outside, 'unmarked'), '', 'relative', `${ramDir}/../${ramDir.split('/').pop() ?? ''}`, '/etc', '/dev/shm', `${ramDir}/host.ram`];
}

/** Values a field should never take: past its bound, negative, fractional, huge, not a number. */
const bad = fc.oneof({ arbitrary: fc.constantFrom(2 ** 32 - 1, 4e9, 1e12, -1, Number.MAX_SAFE_INTEGER, 1e300, Number.NaN, 0.5, 65_536, 64, 129), weight: 3 }, fc.double());

/** One field bent away from a valid topology (none: the valid one). */
const mutationArb = fc.oneof(
  fc.constant({}),
  fc.record({ vm: bad }), fc.record({ psmmu: bad }), fc.record({ psid: bad }), fc.record({ vcmdqs: bad }), fc.record({ dmaRate: bad }),
  fc.record({ threads: bad }), fc.record({ ops: bad }), fc.record({ cost: fc.tuple(fc.constantFrom('smmu.sync', 'exit.mmio_trap', 'made.up'), bad) }),
  fc.record({ vmids: fc.array(bad, { minLength: 1, maxLength: 3 }) }), fc.record({ extraEndpoints: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ longName: fc.constant(true) }), fc.record({ model: fc.constantFrom('', 'bogus') }),
  fc.record({ trace: fc.constantFrom('/etc/passwd', 'workload.trace', '../x') }), fc.record({ ram: fc.integer({ min: 1, max: 9 }) }),
);
/** The bent fields of one topology, merged. */
interface Bent {
  vm?: number; psmmu?: number; psid?: number; vcmdqs?: number; dmaRate?: number; threads?: number; ops?: number; cost?: [string, number];
  vmids?: number[]; extraEndpoints?: number; longName?: boolean; model?: string; trace?: string; ram?: number;
}

/** A valid topology of one of the designs, with up to two fields bent. */
const topologyArb = fc.record({
  model: fc.constantFrom('nested-smmuv3', 'nested-smmuv3-vcmdq', 'virtio-iommu', 'intel-cm', 'none', 'spapr-tce-kvm'),
  mutations: fc.array(mutationArb, { maxLength: 2 }),
});
type TopologyCase = typeof topologyArb extends fc.Arbitrary<infer T> ? T : never;

function buildTopology(c: TopologyCase): Topology {
  const m = Object.assign({}, ...c.mutations) as Bent;
  const ram = m.ram !== undefined ? (folders()[m.ram] ?? ramDir) : ramDir;
  const t = standaloneTopology(ram, [psmmu, vfio], m.model ?? c.model);
  const d = (t.devices as { vm: number; psmmu: number; vsid: number; psid: number }[])[0] as { vm: number; psmmu: number; vsid: number; psid: number };
  if (m.vm !== undefined) d.vm = m.vm;
  if (m.psmmu !== undefined) d.psmmu = m.psmmu;
  if (m.psid !== undefined) d.psid = m.psid;
  if (m.vcmdqs !== undefined) t.vcmdqsPerVsmmu = m.vcmdqs;
  if (m.dmaRate !== undefined) t.device = { ...t.device, dmaRate: m.dmaRate };
  if (m.threads !== undefined) t.workload = { ...t.workload, threads: m.threads };
  if (m.ops !== undefined) t.workload = { ...t.workload, ops: m.ops };
  if (m.trace !== undefined) t.workload = { ...t.workload, kind: 'trace-replay', trace: m.trace === 'workload.trace' ? join(ram, 'workload.trace') : m.trace };
  if (m.cost !== undefined) t.costsNs = { ...t.costsNs, [m.cost[0]]: m.cost[1] };
  if (m.vmids !== undefined) t.vmids = m.vmids;
  if (m.extraEndpoints !== undefined) for (let i = 0; i < m.extraEndpoints; i++) (t.endpoints as unknown[]).push({ id: 1000 + i, role: ['guest', 'nic', 'psmmu'][i % 3], index: 63 + i, name: `x-${i}`, address: 'x', pid: 0, host: 'h' });
  if (m.longName !== undefined) t.runId = 'r'.repeat(100_000);
  return t;
}

const envelopeArb = fc.record({
  correlationId: fc.nat(), opId: fc.nat(), kind: fc.oneof(fc.constantFrom(...KINDS), fc.integer({ min: 21, max: 1000 }) as fc.Arbitrary<unknown>),
  reply: fc.boolean(), payload: fc.uint8Array({ maxLength: 256 }), modeledNs: fc.double(),
  hops: fc.array(fc.record({ from: fc.nat({ max: 20 }), to: fc.nat({ max: 20 }), sentNs: fc.double(), receivedNs: fc.double() }), { maxLength: 4 }),
  guestMemory: fc.array(fc.record({ gpa: fc.nat(), data: fc.uint8Array({ maxLength: 64 }) }), { maxLength: 2 }),
});

/** One thing a peer does to a role. */
const stepArb = fc.oneof(
  { arbitrary: fc.record({ step: fc.constant('configure' as const), auth: fc.constantFrom<Auth>('proved', 'proved', 'proved', 'wrong-token', 'unproved'), topology: topologyArb }), weight: 4 },
  fc.record({ step: fc.constantFrom('start' as const, 'stats' as const, 'stop' as const), auth: fc.constantFrom<Auth>('proved', 'wrong-token', 'unproved') }),
  fc.record({ step: fc.constant('batches' as const), as: fc.constantFrom(...NAMES), auth: fc.constantFrom<Auth>('proved', 'proved', 'wrong-token', 'unproved'), batches: fc.array(fc.array(envelopeArb, { maxLength: 12 }), { minLength: 1, maxLength: 3 }), halfClose: fc.boolean() }),
  fc.record({ step: fc.constant('raw' as const), as: fc.constantFrom(...NAMES), bytes: fc.oneof(fc.uint8Array({ maxLength: 512 }), fc.constant(emptyEnvelopes(MAX_ENVELOPES_PER_BATCH + 1)), fc.constant(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]))) }),
  fc.record({ step: fc.constant('streams' as const), count: fc.integer({ min: 1, max: 40 }), as: fc.constantFrom(...NAMES) }),
);
type Step = typeof stepArb extends fc.Arbitrary<infer T> ? T : never;

async function act(target: Served, s: Step): Promise<void> {
  if (s.step !== 'batches' && s.step !== 'raw' && s.step !== 'streams') {
    const c = new Control(target.name, target.address, security(s.auth));
    try {
      if (s.step === 'configure') await c.configure(buildTopology(s.topology), 8000);
      else if (s.step === 'start') await c.start(8000);
      else if (s.step === 'stats') await c.stats(8000);
      else await c.stop(8000);
    } catch {
      // Refusals are the point; the checks after the step say whether the role survived them.
    } finally {
      c.close();
    }
    return;
  }
  if (s.step === 'batches') {
    const stub = linkStub(target.address);
    try {
      const call = stub.Open(metadata(s.as, s.auth));
      const ended = outcome(call, 3000);
      for (const b of s.batches) call.write({ envelopes: b.map((e) => ({ ...e, payload: Buffer.from(e.payload), guestMemory: e.guestMemory.map((g) => ({ gpa: g.gpa, data: Buffer.from(g.data) })) })) as Envelope[] });
      if (s.halfClose) call.end();
      await ended;
      call.cancel();
    } finally {
      stub.close();
    }
    return;
  }
  if (s.step === 'raw') {
    const stub = rawLinkStub(target.address);
    try {
      const call = stub.Open(metadata(s.as, 'proved'));
      const ended = outcome(call, 3000);
      call.write(Buffer.from(s.bytes));
      await ended;
      call.cancel();
    } finally {
      stub.close();
    }
    return;
  }
  // Streams opened and left silent, all on one connection.
  const stub = linkStub(target.address);
  try {
    const calls = Array.from({ length: s.count }, () => stub.Open(metadata(s.as, 'proved')));
    for (const c of calls) c.on('error', () => undefined);
    await new Promise((r) => setTimeout(r, 100));
    for (const c of calls) c.cancel();
  } finally {
    stub.close();
  }
}

async function checkAfter(target: Served, what: string): Promise<void> {
  expect(target.child.exitCode, `${target.name} exited after ${what}: ${target.stderr()}`).toBeNull();
  expect(await healthCheck(target.address, undefined, undefined, 10_000), `${target.name} after ${what}`).toBe('SERVING');
  expect(rssMb(target.pid), `${target.name} memory after ${what}`).toBeLessThan(RSS_BOUND_MB);
  for (const [path, h] of watched) expect(hash(path), `${path} after ${what}`).toBe(h);
  expect(readdirSync(outside).sort()).toEqual(['marked-trap', 'unmarked', 'victim.txt']);
  expect(readdirSync(join(outside, 'unmarked'))).toEqual([]);
  for (const f of readdirSync(join(outside, 'marked-trap'))) if (f !== RUN_FOLDER_MARKER) expect(lstatSync(join(outside, 'marked-trap', f)).isSymbolicLink(), f).toBe(true);
}

beforeAll(async () => {
  ramDir = createRunFolder(tmpdir(), 'vmmsim-fuzz-');
  outside = mkdtempSync(join(tmpdir(), 'vmmsim-fuzz-outside-'));
  const victim = join(outside, 'victim.txt');
  writeFileSync(victim, 'not yours\n'.repeat(15));
  watched.set(victim, hash(victim));
  // A marked folder whose memory files are symlinks to the victim: only O_NOFOLLOW stands between.
  const trap = join(outside, 'marked-trap');
  renameSync(createRunFolder(outside, 'marked-'), trap);
  for (const f of ['host.ram', 'guest-0.ram', 'spapr-tce-0.table', 'workload.trace']) symlinkSync(victim, join(trap, f));
  mkdirSync(join(outside, 'unmarked'));
  writeFileSync(join(ramDir, 'workload.trace'), 'no events here\n');
  [psmmu, vfio] = await Promise.all([startServe(['psmmu', '--index', '0'], marker), startServe(['vfio'], marker)]);
}, 60_000);

afterAll(async () => {
  await stopServed([psmmu, vfio].filter(Boolean));
  rmSync(ramDir, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
  expect(await waitForNoProcesses(marker, 10_000)).toEqual([]);
});

describe('fuzzing standalone roles', () => {
  it(`survives ${RUNS} random sequences of bad control calls and link traffic with every check holding after each step`, async () => {
    let steps = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('vfio', 'vfio', 'psmmu'), fc.array(stepArb, { minLength: 1, maxLength: 5 }), async (which, seq) => {
        const target = which === 'vfio' ? vfio : psmmu;
        for (const s of seq) {
          await act(target, s);
          steps += 1;
          await checkAfter(target, `${s.step} (${JSON.stringify(s).slice(0, 200)})`);
        }
      }),
      { numRuns: RUNS, seed: Number(process.env['VMMSIM_FUZZ_SEED'] ?? 20261207), endOnFailure: true },
    );
    expect(steps).toBeGreaterThanOrEqual(RUNS);
    // A proper run still works after all that.
    const c = new Control(vfio.name, vfio.address, testSecurity());
    try {
      await c.configure(standaloneTopology(ramDir, [psmmu, vfio]));
      expect((await c.stats()).name).toBe('vfio');
    } finally {
      c.close();
    }
    expect(statSync(ramDir).isDirectory()).toBe(true);
  }, 120_000);
});
