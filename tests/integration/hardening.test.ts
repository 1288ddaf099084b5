/**
 * Regression tests of the holes a test against standalone roles found (issue "Hardening"): each
 * `it` is one of them, against real `vmmsim serve` processes on loopback TCP with a run token.
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Errno } from '../../services/runtime/errors.js';
import type { Topology } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { RUN_FOLDER_MARKER, createRunFolder } from '../../services/machine/run-folder.js';
import { CONTROLLER, RunToken, callerMetadata, loadTokenFile } from '../../services/runtime/transport/auth.js';
import { INSECURE, withToken } from '../../services/runtime/transport/credentials.js';
import { LinkClient } from '../../services/runtime/transport/link.js';
import { LINK_HELLO_MS, MAX_LINK_STREAMS } from '../../services/runtime/transport/options.js';
import { MAX_ENVELOPES_PER_BATCH } from '../../services/runtime/transport/wire-limits.js';
import { Control } from '../../services/controller/control-client.js';
import { healthCheck } from '../helpers/health.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { emptyEnvelopes, linkStub, outcome, rawLinkStub, rssMb, standaloneTopology } from '../helpers/raw-link.js';
import { startServe, stopServed, testSecurity, testTokenFile, type Served } from '../helpers/serve.js';
import { runCli } from '../helpers/cli.js';

const marker = randomUUID();
let psmmu: Served;
let vfio: Served;
let ramDir = '';
let outside = '';

/** A file outside the run folder that no request may change, with what it held. */
let victim = '';
const VICTIM_TEXT = 'a file of the operator, 150 bytes or so, that a Configure must never truncate\n'.repeat(2);

function control(s: Served, security = testSecurity()): Control {
  return new Control(s.name, s.address, security);
}

function topology(patch: (t: Topology) => void = () => undefined): Topology {
  const t = standaloneTopology(ramDir, [psmmu, vfio]);
  patch(t);
  return t;
}

/** The role still serves: health says SERVING and a proved peer's ECHO comes back. */
async function stillServing(s: Served): Promise<void> {
  expect(await healthCheck(s.address), s.name).toBe('SERVING');
  const link = new LinkClient({ selfId: 99, selfName: 'qemu-0', peerId: 1, peerName: s.name }, s.address, 5000, testSecurity());
  try {
    await link.open();
    const r = await link.request({ kind: 'ECHO', opId: 1, payload: Buffer.from('still'), modeledNs: 0 });
    expect(r.status).toBe(0);
  } finally {
    link.close();
  }
  expect(s.child.exitCode, `${s.name} exited: ${s.stderr()}`).toBeNull();
}

beforeAll(async () => {
  ramDir = createRunFolder(tmpdir(), 'vmmsim-harden-');
  outside = mkdtempSync(join(tmpdir(), 'vmmsim-harden-outside-'));
  victim = join(outside, 'victim.txt');
  writeFileSync(victim, VICTIM_TEXT);
  [psmmu, vfio] = await Promise.all([startServe(['psmmu', '--index', '0'], marker), startServe(['vfio'], marker)]);
}, 60_000);

afterAll(async () => {
  await stopServed([psmmu, vfio].filter(Boolean));
  rmSync(ramDir, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
  expect(await waitForNoProcesses(marker, 10_000)).toEqual([]);
});

describe('a Configure cannot reach a file outside the run folder', () => {
  it('refuses a folder with a symlinked host.ram (the 512 MiB truncation), an empty, a relative and an unmarked folder', async () => {
    // The folder an attacker prepares: marked, so only the symlink stands between vfio and the victim.
    const trap = createRunFolder(tmpdir(), 'vmmsim-harden-trap-');
    symlinkSync(victim, join(trap, 'host.ram'));
    const unmarked = mkdtempSync(join(tmpdir(), 'vmmsim-harden-unmarked-'));
    const c = control(vfio);
    try {
      await expect(c.configure(topology((t) => (t.ramDir = trap)))).rejects.toMatchObject({ code: 'E_RAM_DIR', message: expect.stringContaining('symbolic link') });
      await expect(c.configure(topology((t) => (t.ramDir = '')))).rejects.toMatchObject({ code: 'E_CONFIGURE', message: expect.stringContaining('ramDir') });
      await expect(c.configure(topology((t) => (t.ramDir = 'relative/folder')))).rejects.toMatchObject({ code: 'E_CONFIGURE' });
      await expect(c.configure(topology((t) => (t.ramDir = `${ramDir}/../${ramDir.split('/').pop() ?? ''}`)))).rejects.toMatchObject({ code: 'E_CONFIGURE' });
      await expect(c.configure(topology((t) => (t.ramDir = unmarked)))).rejects.toMatchObject({ code: 'E_RAM_DIR', message: expect.stringContaining(RUN_FOLDER_MARKER) });
      await expect(c.configure(topology((t) => (t.ramDir = '/etc')))).rejects.toMatchObject({ code: 'E_RAM_DIR' });
    } finally {
      c.close();
      rmSync(trap, { recursive: true, force: true });
      rmSync(unmarked, { recursive: true, force: true });
    }
    expect(readFileSync(victim, 'utf8')).toBe(VICTIM_TEXT);
    expect(lstatSync(victim).size).toBe(VICTIM_TEXT.length);
    await stillServing(vfio);
  });

  it('refuses a trace path outside the run folder', async () => {
    const c = control(psmmu);
    try {
      await expect(c.configure(topology((t) => (t.workload = { ...t.workload, kind: 'trace-replay', trace: '/etc/shadow' })))).rejects.toMatchObject({ code: 'E_CONFIGURE', message: expect.stringContaining('workload.trace') });
    } finally {
      c.close();
    }
  });
});

describe('one Configure cannot wedge or crash a role', () => {
  const cases: [string, (t: Topology) => void, RegExp][] = [
    ['devices[0].vm = 4e9 (vfio looped up to it)', (t) => ((t.devices as { vm: number }[])[0] as { vm: number }).vm = 4e9, /devices\[0\]\.vm/],
    ['devices[0].psmmu = 1e9 (EFBIG)', (t) => ((t.devices as { psmmu: number }[])[0] as { psmmu: number }).psmmu = 1e9, /devices\[0\]\.psmmu/],
    ['vcmdqsPerVsmmu = 2^32-1', (t) => (t.vcmdqsPerVsmmu = 2 ** 32 - 1), /vcmdqsPerVsmmu/],
    ['device.dmaRate = 1e12', (t) => (t.device = { ...t.device, dmaRate: 1e12 }), /device\.dmaRate/],
    ['a cost of 1e300 ns', (t) => (t.costsNs = { ...t.costsNs, 'smmu.sync': 1e300 }), /costsNs\.smmu\.sync/],
    ['an unknown model', (t) => (t.model = 'x'.repeat(100_000)), /model/],
    ['2000 endpoints', (t) => (t.endpoints = Array.from({ length: 2000 }, (_, i) => ({ id: i + 1, role: 'guest', index: i, name: `guest-${i}`, address: 'x', pid: 0, host: 'h' }))), /endpoints/],
  ];
  for (const [what, patch, field] of cases) {
    it(`refuses ${what} with E_CONFIGURE, at once, and keeps serving`, async () => {
      const c = control(vfio);
      try {
        const err = await c.configure(topology(patch), 5000).then(() => undefined, (e: unknown) => e);
        expect(err).toMatchObject({ code: 'E_CONFIGURE', message: expect.stringMatching(field) });
      } finally {
        c.close();
      }
      await stillServing(vfio);
    });
  }
});

describe('a peer cannot pass for another role', () => {
  it('refuses control calls without the run token, or from a peer that is not the controller', async () => {
    const stranger = withToken(INSECURE, RunToken.generate());
    const unproved = new Control(vfio.name, vfio.address, INSECURE);
    const wrongToken = new Control(vfio.name, vfio.address, stranger);
    try {
      await expect(unproved.stats()).rejects.toMatchObject({ code: 'E_UNAUTHENTICATED' });
      await expect(wrongToken.configure(topology())).rejects.toMatchObject({ code: 'E_UNAUTHENTICATED' });
    } finally {
      unproved.close();
      wrongToken.close();
    }
    // A proved peer that is a role, not the controller.
    const token = loadTokenFile(testTokenFile());
    const client = new (grpc.makeGenericClientConstructor({}, 'x'))(vfio.address, grpc.credentials.createInsecure());
    const asPsmmu = callerMetadata('psmmu-0', token);
    const err = await new Promise<grpc.ServiceError | null>((resolve) => {
      client.makeUnaryRequest('/vmmsim.v1.Control/Stats', (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), asPsmmu, (e) => resolve(e));
    });
    client.close();
    expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err?.details).toContain('not the controller');
    expect(callerMetadata(CONTROLLER, token).get('x-vmmsim-auth')).toHaveLength(1);
  });

  it('serves a link request as the role its stream proved, whatever endpoint id its hop record claims', async () => {
    const c = control(psmmu);
    try {
      await c.configure(topology());
    } finally {
      c.close();
    }
    const token = loadTokenFile(testTokenFile());
    const vfioId = (topology().endpoints ?? []).find((e) => e.name === 'vfio')?.id ?? 0;
    // No proof: the stream is refused before any request is read.
    const stub = linkStub(psmmu.address);
    try {
      const bare = stub.Open();
      const refused = outcome(bare);
      bare.write({ envelopes: [] });
      expect((await refused).error?.code).toBe(grpc.status.UNAUTHENTICATED);
      // Proved as guest-0, claiming vfio's endpoint id in its hop: a CMDQ_SUBMIT only vfio may send.
      const asGuest = stub.Open(callerMetadata('guest-0', token));
      const first = outcome(asGuest);
      asGuest.write({ envelopes: [{ correlationId: 1, opId: 1, kind: 'CMDQ_SUBMIT', payload: Buffer.alloc(16), hops: [{ from: vfioId, to: 1, sentNs: 0, receivedNs: 0 }] }] });
      const got = await first;
      expect((got.data as { envelopes: { status: number }[] } | undefined)?.envelopes[0]?.status).toBe(-Errno.EOPNOTSUPP);
      asGuest.cancel();
      // A proved name that is no upstream peer of psmmu (kvm never links to it).
      const asKvm = stub.Open(callerMetadata('kvm', token));
      const third = outcome(asKvm);
      asKvm.write({ envelopes: [{ correlationId: 2, opId: 1, kind: 'CMDQ_SUBMIT', payload: Buffer.alloc(16), hops: [{ from: vfioId, to: 1, sentNs: 0, receivedNs: 0 }] }] });
      expect(((await third).data as { envelopes: { status: number }[] } | undefined)?.envelopes[0]?.status).toBe(-Errno.EPERM);
      asKvm.cancel();
    } finally {
      stub.close();
    }
    await stillServing(psmmu);
  });
});

describe('one message or one peer cannot exhaust a role', () => {
  it(`refuses a 16 MB batch of 8 M empty envelopes before decoding it, within the memory of a small batch`, async () => {
    const before = rssMb(psmmu.pid);
    const token = loadTokenFile(testTokenFile());
    const stub = rawLinkStub(psmmu.address);
    try {
      const call = stub.Open(callerMetadata('vfio', token));
      const ended = outcome(call, 30_000);
      call.write(emptyEnvelopes(8_000_000));
      const r = await ended;
      expect(r.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(r.error?.details).toContain(`more than ${MAX_ENVELOPES_PER_BATCH} envelopes`);
    } finally {
      stub.close();
    }
    await stillServing(psmmu);
    // The 16 MB message itself is held while it arrives; its 8 M envelopes never are.
    expect(rssMb(psmmu.pid) - before).toBeLessThan(200);
  });

  it('keeps answering health checks while it works through batches of the most envelopes allowed', async () => {
    const token = loadTokenFile(testTokenFile());
    const stub = linkStub(psmmu.address);
    try {
      const call = stub.Open(callerMetadata('vfio', token));
      let replies = 0;
      const all = 10 * MAX_ENVELOPES_PER_BATCH;
      const done = new Promise<void>((resolve, reject) => {
        call.on('data', (b: { envelopes: unknown[] }) => {
          replies += b.envelopes.length;
          if (replies >= all) resolve();
        });
        call.on('error', reject);
      });
      for (let k = 0; k < 10; k++) {
        call.write({ envelopes: Array.from({ length: MAX_ENVELOPES_PER_BATCH }, (_, i) => ({ correlationId: k * MAX_ENVELOPES_PER_BATCH + i + 1, opId: 1, kind: 'ECHO' as const, payload: Buffer.alloc(8), hops: [] })) });
      }
      // Health is served between chunks of the batches, not after all of them.
      const checks = await Promise.all([healthCheck(psmmu.address), healthCheck(psmmu.address)]);
      expect(checks).toEqual(['SERVING', 'SERVING']);
      await done;
      expect(replies).toBe(all);
      call.cancel();
    } finally {
      stub.close();
    }
    await stillServing(psmmu);
  }, 60_000);

  it(`caps open link streams at ${MAX_LINK_STREAMS}, ends silent ones after ${LINK_HELLO_MS / 1000} s, and gives the memory back`, async () => {
    const token = loadTokenFile(testTokenFile());
    const before = rssMb(psmmu.pid);
    // Ten connections of 30 streams each (the server allows 32 per connection), none saying a word.
    const stubs = Array.from({ length: 10 }, () => linkStub(psmmu.address));
    const calls = stubs.flatMap((s) => Array.from({ length: 30 }, () => s.Open(callerMetadata('vfio', token))));
    const ends = calls.map((c) => outcome(c, LINK_HELLO_MS + 20_000));
    try {
      const results = await Promise.all(ends);
      const refused = results.filter((r) => r.error?.code === grpc.status.RESOURCE_EXHAUSTED).length;
      const dropped = results.filter((r) => r.error?.code === grpc.status.DEADLINE_EXCEEDED).length;
      expect(refused).toBe(calls.length - MAX_LINK_STREAMS);
      expect(dropped).toBe(MAX_LINK_STREAMS);
    } finally {
      for (const s of stubs) s.close();
    }
    await stillServing(psmmu);
    expect(rssMb(psmmu.pid) - before).toBeLessThan(60);
  }, LINK_HELLO_MS + 40_000);
});

describe('vmmsim serve refuses to serve TCP to anyone without being told to', () => {
  it('exits 2 with E_INSECURE without a token or TLS, and warns loudly with --insecure', async () => {
    const r = await runCli(['serve', 'psmmu', '--listen', '127.0.0.1:0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^vmmsim: E_INSECURE: psmmu-0 would serve 127\.0\.0\.1:0 to anyone who can reach it/m);
    const loose = await startServe(['psmmu', '--index', '3', '--insecure'], marker);
    try {
      expect(loose.stderr()).toMatch(/WARNING: psmmu-3 runs with --insecure/);
    } finally {
      await stopServed([loose]);
    }
  });

  it('refuses a token file others can read, or a symlink to one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmmsim-token-'));
    try {
      const open = join(dir, 'open');
      writeFileSync(open, 'x'.repeat(64), { mode: 0o644 });
      const link = join(dir, 'link');
      symlinkSync(testTokenFile(), link);
      for (const [file, why] of [[open, /readable by every user/], [link, /symbolic link/]] as const) {
        const r = await runCli(['serve', 'psmmu', '--listen', '127.0.0.1:0', '--token-file', file]);
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(why);
        expect(r.stderr).toMatch(/^vmmsim: E_TOKEN_FILE: /m);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
