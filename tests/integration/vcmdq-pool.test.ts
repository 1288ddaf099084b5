import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../services/runtime/paths.js';
import {
  CMD_SIZE, SyncCs, atcInv, cfgiSte, cmdSync, encodeCommand, tlbiNhAll, tlbiNhAsid, tlbiNhVa, type SmmuCommand,
} from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { Iotlb, type IotlbEntry } from '../../worker-pool/iotlb.js';
import { VcmdqError } from '../../worker-pool/errors.js';
import { VcmdqPool, type SubmitResult, type VEvent, type Vcmdq } from '../../worker-pool/pool.js';
import { workerFile } from '../../worker-pool/worker-file.js';

const PAGE = 4096;
const VM_A = 0x11;
const VM_B = 0x12;

function encode(cmds: SmmuCommand[]): Buffer {
  const b = Buffer.alloc(cmds.length * CMD_SIZE);
  cmds.forEach((c, i) => encodeCommand(c, b, i * CMD_SIZE));
  return b;
}

function entry(vmid: number, asid: number, pageNo: number): IotlbEntry {
  return { vmid, asid, stage2Only: false, page: pageNo * PAGE, pa: 0x8000_0000 + pageNo * PAGE, writable: true, ipa: pageNo * PAGE, leafDescAddr: 0 };
}

function completed(r: SubmitResult): void {
  expect(r, JSON.stringify(r)).toMatchObject({ status: 'completed' });
}

async function allocate(pool: VcmdqPool, vintf: number, lidx: number, log2: number): Promise<Vcmdq> {
  const r = await pool.allocate(vintf, lidx, log2);
  if (!r.ok) throw r.error;
  return r.value;
}

let iotlb: Iotlb;
let pool: VcmdqPool;
let a: Vcmdq; // VM A's queue (VINTF1)
let b: Vcmdq; // VM B's queue (VINTF2)
let host: Vcmdq; // the host's queue (VINTF0)
const vevents: VEvent[] = [];

beforeAll(async () => {
  workerFile(); // E_VCMDQ_BUILD unless dist/ is built and newer than the sources (`npm run build`)
  iotlb = Iotlb.create(4096);
  pool = await VcmdqPool.start({ iotlb, workers: 2, vintfs: 4, vcmdqs: 8 });
  pool.onVevent((e) => vevents.push(e));
  expect(pool.assignVintf(1, VM_A).ok).toBe(true);
  expect(pool.assignVintf(2, VM_B).ok).toBe(true);
  expect(pool.setSidPair(1, 0, 8, 0x108).ok).toBe(true);
  a = await allocate(pool, 1, 0, 4);
  b = await allocate(pool, 2, 0, 4);
  host = await allocate(pool, 0, 0, 4);
});

afterAll(async () => {
  await pool?.destroy();
});

/** Waits for the vEVENT of `queue` (the watcher runs on the event loop, after the halt). */
async function veventOf(queue: number): Promise<VEvent> {
  for (let i = 0; i < 200; i++) {
    const e = vevents.find((v) => v.queue === queue);
    if (e) {
      vevents.splice(vevents.indexOf(e), 1);
      return e;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`no vEVENT for VCMDQ ${queue}`);
}

describe('VCMDQ pool with real worker threads', () => {
  it('runs its queues on two worker threads', () => {
    expect(pool.threadCount).toBe(2);
    expect(new Set([a.worker, b.worker])).toEqual(new Set([0, 1]));
    expect(host.worker).toBe(a.worker); // shares A's worker: halting A must not stop it
  });

  it('stamps the VINTF VMID into the guest\'s TLBIs: VMs never invalidate each other\'s entries', async () => {
    iotlb.invalidateAll();
    for (let p = 0; p < 16; p++) for (const vm of [VM_A, VM_B]) iotlb.insert(entry(vm, 1, p));
    // Guest A writes VM B's VMID into its TLBI; the CMDQV uses VINTF1's VMID instead.
    completed(await a.submit(encode([tlbiNhVa({ vmid: VM_B, asid: 1, va: 0n, tg: 1, num: 7 }), cmdSync()])));
    for (let p = 0; p < 16; p++) {
      expect(iotlb.lookup(VM_A, 1, p * PAGE) === undefined, `VM A page ${p}`).toBe(p < 8);
      expect(iotlb.lookup(VM_B, 1, p * PAGE), `VM B page ${p}`).toBeDefined();
    }
    completed(await b.submit(encode([tlbiNhAsid({ vmid: VM_A, asid: 1 }), cmdSync()])));
    expect(iotlb.entries().map((e) => e.vmid)).toEqual(Array(8).fill(VM_A));
  });

  it('completes CMD_SYNC only after every earlier command of its queue, in submission order', async () => {
    iotlb.invalidateAll();
    const rounds = 40;
    for (let k = 0; k < rounds; k++) for (let p = 0; p < 50; p++) iotlb.insert(entry(VM_A, 2 + (k % 8), k * 64 + p));
    const order: number[] = [];
    const checks: Promise<void>[] = [];
    for (let k = 0; k < rounds; k++) {
      // Whole-table scans (a range of 2^20 pages) before the sync make the earlier commands slow.
      const cmds = [
        tlbiNhVa({ vmid: 0, asid: 2 + (k % 8), va: BigInt(k * 64 * PAGE), tg: 1, num: 31, scale: 15 }),
        tlbiNhVa({ vmid: 0, asid: 2 + (k % 8), va: BigInt(k * 64 * PAGE), tg: 1, num: 15, scale: 16 }),
        cmdSync({ cs: SyncCs.IRQ, msiaddr: 0x9000n, msidata: k }),
      ];
      checks.push(
        a.submit(encode(cmds)).then((r) => {
          completed(r);
          order.push(k);
          // Every TLBI before this sync is visible: no entry of this round's pages is left.
          for (let p = 0; p < 50; p++) expect(iotlb.lookup(VM_A, 2 + (k % 8), (k * 64 + p) * PAGE), `round ${k} page ${p}`).toBeUndefined();
          expect(r.status === 'completed' && r.msi.every((m) => m.addr === 0x9000 && m.data <= k)).toBe(true);
        }),
      );
    }
    await Promise.all(checks);
    expect(order).toEqual(Array.from({ length: rounds }, (_, k) => k));
  });

  it.each([
    ['TLBI_NH_ALL', tlbiNhAll({ vmid: 0 })],
    ['CFGI_STE', cfgiSte({ sid: 8 })],
    ['an unknown opcode', { opcode: 0x7f, fields: {} }],
  ])('an illegal command (%s) halts that queue only, is reported as a vEVENT, and the guest recovers it', async (_name, bad) => {
    iotlb.invalidateAll();
    iotlb.insert(entry(VM_A, 1, 1));
    const r = await a.submit(encode([tlbiNhVa({ vmid: 0, asid: 1, va: 0n }), bad, tlbiNhVa({ vmid: 0, asid: 1, va: BigInt(PAGE) }), cmdSync()]));
    expect(r).toMatchObject({ status: 'halted', commands: 1, written: 4, badIndex: 1, error: Q.CERROR.ILL, opcode: bad.opcode });
    expect(a.halted).toBe(true);
    const regs = a.registers();
    expect(Q.consErr(regs.cons)).toBe(Q.CERROR.ILL);
    expect(regs.gerror ^ regs.gerrorn).toBe(1);
    expect(await veventOf(a.queue)).toEqual({ queue: a.queue, vintf: 1, lidx: 0, error: Q.CERROR.ILL, cons: regs.cons, opcode: bad.opcode });

    // The other VM's queue (other worker) and the host's queue (same worker as A) keep completing.
    for (let i = 0; i < 50; i++) {
      completed(await b.submit(encode([tlbiNhAsid({ vmid: 0, asid: 9 }), cmdSync()])));
      completed(await host.submit(encode([tlbiNhAll({ vmid: 0x77 }), cmdSync()])));
    }
    // A is still halted: nothing behind the bad command ran. A new submission is written (the
    // hardware takes PROD writes while halted) but does not run until recovery.
    expect(iotlb.lookup(VM_A, 1, PAGE)).toBeDefined();
    expect(await a.submit(encode([cmdSync()]))).toMatchObject({ status: 'halted', written: 1, commands: 0, badIndex: -1 });

    // Linux recovery: overwrite the bad slot with CMD_SYNC and write GERRORN = GERROR.
    expect(a.acknowledge(encode([cmdSync()])).ok).toBe(true);
    completed(await a.flush());
    expect(a.halted).toBe(false);
    expect(iotlb.lookup(VM_A, 1, PAGE)).toBeUndefined(); // the TLBI behind the bad command ran
    completed(await a.submit(encode([cmdSync()])));
    const again = a.acknowledge();
    expect(again.ok ? 'ok' : again.error.code).toBe('E_VCMDQ_NOT_HALTED');
    expect(vevents.filter((e) => e.queue !== a.queue)).toEqual([]);
  });

  it('rewrites ATC_INV\'s vSID to the pSID and refuses an unknown vSID (halt, ILL)', async () => {
    completed(await a.submit(encode([atcInv({ sid: 8, size: 0, addr: 0x1000n }), cmdSync()])));
    expect(a.stats()).toMatchObject({ lastAtcVsid: 8, lastAtcPsid: 0x108 });
    const r = await a.submit(encode([atcInv({ sid: 9, size: 0, addr: 0n }), cmdSync()]));
    expect(r).toMatchObject({ status: 'halted', badIndex: 0, error: Q.CERROR.ILL, opcode: 0x40 });
    expect(await veventOf(a.queue)).toMatchObject({ queue: a.queue, error: Q.CERROR.ILL, opcode: 0x40 });
    // Once the VMM adds the pair, retrying the same command (no replacement) succeeds.
    expect(pool.setSidPair(1, 1, 9, 0x109).ok).toBe(true);
    expect(a.acknowledge().ok).toBe(true);
    completed(await a.flush());
    expect(a.stats()).toMatchObject({ lastAtcVsid: 9, lastAtcPsid: 0x109 });
  });

  it('wraps around a small ring over many submissions, some longer than the ring, all in order', async () => {
    const small = await allocate(pool, 1, 1, 3); // 8 entries
    const start = small.producer.total;
    const msi: number[] = [];
    const results: Promise<SubmitResult>[] = [];
    let total = 0;
    for (let k = 0; k < 300; k++) {
      const n = 1 + ((k * 7) % 20); // up to 20 commands: more than the ring holds
      const cmds: SmmuCommand[] = Array.from({ length: n - 1 }, (_, i) => tlbiNhVa({ vmid: 0, asid: 3, va: BigInt((k * 32 + i) * PAGE) }));
      cmds.push(cmdSync({ cs: SyncCs.IRQ, msiaddr: 0x4000n, msidata: k }));
      total += n;
      results.push(small.submit(encode(cmds)).then((r) => (r.status === 'completed' && msi.push(...r.msi.map((m) => m.data)), r)));
    }
    for (const r of await Promise.all(results)) completed(r);
    expect(small.producer.total - start).toBe(total);
    expect(msi).toEqual(Array.from({ length: 300 }, (_, k) => k));
    const regs = small.registers();
    expect(regs.prod).toBe(regs.cons);
    expect(regs.prod).toBe(Q.inc(0, 3, total % 16)); // index+wrap count modulo 2^(log2+1)
    expect(small.stats()).toMatchObject({ commands: total, syncs: 300, halts: 0 });
    expect((await pool.free(1, 1)).ok).toBe(true);
  });

  it('regression: a writer that found the ring full waits on the CONS it checked, so a ring that drains in between still wakes it', async () => {
    // The bug: space was computed from one CONS read and the wait used a second, newer read; when the
    // worker drained the ring between the two, the writer slept on a value that never changed again.
    // A 2-entry ring makes "full" the common case; the old code hung within a few dozen rounds.
    const tiny = await allocate(pool, 1, 1, 1);
    const sync = encode([cmdSync()]);
    const five = encode(Array<SmmuCommand>(5).fill(cmdSync()));
    for (let round = 0; round < 60; round++) {
      const all = Promise.all(Array.from({ length: 40 }, (_, i) => tiny.submit(i % 3 === 0 ? five : sync)));
      let timer: NodeJS.Timeout | undefined;
      const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), 5000)));
      const r = await Promise.race([all, hung]);
      clearTimeout(timer);
      expect(r, `round ${round}: ${JSON.stringify(tiny.registers())}`).not.toBe('hung');
    }
    expect((await pool.free(1, 1)).ok).toBe(true);
  });

  it('refuses allocation-order and size violations with coded results, not exceptions', async () => {
    const skip = await pool.allocate(2, 2, 4);
    expect(skip.ok ? 'ok' : skip.error.code).toBe('E_VCMDQ_EXHAUSTED'); // 8 VCMDQs / 4 VINTFs = 2 per VINTF
    const order = await pool.allocate(2, 0, 4);
    expect(order.ok ? 'ok' : order.error.code).toBe('E_LVCMDQ_ORDER');
    const size = await pool.allocate(2, 1, 0);
    expect(size.ok ? 'ok' : size.error.code).toBe('E_LVCMDQ_SIZE');
    const b1 = await allocate(pool, 2, 1, 1);
    const free0 = await pool.free(2, 0);
    expect(free0.ok ? 'ok' : free0.error.code).toBe('E_LVCMDQ_ORDER');
    completed(await b1.submit(encode([cmdSync(), cmdSync(), cmdSync()]))); // 3 commands through a 2-entry ring
    expect((await pool.free(2, 1)).ok).toBe(true);
    await expect(b1.submit(encode([cmdSync()]))).rejects.toMatchObject({ code: 'E_VCMDQ_GONE' });
    await expect(b.submit(Buffer.alloc(20))).rejects.toBeInstanceOf(VcmdqError);
  });
});

describe('pool teardown', () => {
  it('destroy stops every worker thread and rejects what was pending', async () => {
    const p = await VcmdqPool.start({ iotlb: Iotlb.create(65536), workers: 2, vintfs: 2, vcmdqs: 2 });
    const q = await allocate(p, 0, 0, 2);
    completed(await q.submit(encode([cmdSync()])));
    // 2000 whole-table scans through a 4-entry ring: still running when destroy comes.
    const slow = tlbiNhVa({ vmid: 1, asid: 1, va: 0n, tg: 1, num: 31, scale: 20 });
    const stuck = q.submit(encode(Array<SmmuCommand>(2000).fill(slow))).then(
      (r) => r,
      (err: unknown) => err,
    );
    await new Promise((r) => setTimeout(r, 20));
    expect(p.threadCount).toBe(2);
    await p.destroy();
    await p.destroy(); // idempotent
    expect(p.threadCount).toBe(0);
    expect(await stuck).toMatchObject({ code: 'E_VCMDQ_GONE' });
    await expect(q.submit(encode([cmdSync()]))).rejects.toMatchObject({ code: 'E_VCMDQ_GONE' });
    await expect(p.allocate(0, 1, 2)).rejects.toMatchObject({ code: 'E_VCMDQ_GONE' });
  });

  it('a worker that cannot start fails start() with E_VCMDQ_WORKER, and its process still exits by itself', async () => {
    // In a child process: the failing worker's load error is the pool's to report, not this runner's.
    const r = await runChild(`
      import { VcmdqPool } from ${JSON.stringify(dist('worker-pool/pool.js'))};
      import { Iotlb } from ${JSON.stringify(dist('worker-pool/iotlb.js'))};
      const err = await VcmdqPool.start({ iotlb: Iotlb.create(64), workers: 2, workerFile: '/nonexistent/vcmdq-worker.js' }).then(() => undefined, (e) => e);
      console.log(JSON.stringify({ name: err?.constructor?.name, code: err?.code }));
    `);
    expect(r.code, `child did not exit by itself; stderr: ${r.err}`).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ name: 'VcmdqError', code: 'E_VCMDQ_WORKER' });
  });

  it('a process that starts, uses and destroys a pool exits by itself (no thread or handle left)', async () => {
    const r = await runChild(`
      import { VcmdqPool } from ${JSON.stringify(dist('worker-pool/pool.js'))};
      import { Iotlb } from ${JSON.stringify(dist('worker-pool/iotlb.js'))};
      const pool = await VcmdqPool.start({ iotlb: Iotlb.create(64), workers: 2, vintfs: 2, vcmdqs: 4 });
      pool.assignVintf(1, 5);
      const q = (await pool.allocate(1, 0, 2)).value;
      const sync = Buffer.alloc(16); sync[0] = 0x46;
      for (let i = 0; i < 100; i++) await q.submit(sync);
      await pool.destroy();
      console.log(JSON.stringify({ threads: pool.threadCount, resources: process.getActiveResourcesInfo() }));
    `);
    expect(r.code, `child did not exit by itself; stderr: ${r.err}`).toBe(0);
    const report = JSON.parse(r.out) as { threads: number; resources: string[] };
    expect(report.threads).toBe(0);
    expect(report.resources.filter((x) => /Worker|MessagePort|Timeout/.test(x))).toEqual([]);
  });
});

function dist(f: string): string {
  return pathToFileURL(join(packageRoot(), 'dist', f)).href;
}

/** Runs an ES module script in its own Node process; a process that has not exited after 30 s is killed (code null). */
async function runChild(script: string): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(null);
    }, 30_000);
    child.on('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  return { code, out, err };
}
