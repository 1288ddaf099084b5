/**
 * One SMMUv3 command stream through every consumer of SMMU commands, compared:
 *
 * - the pSMMU's main CMDQ (psmmu/cmdq.ts), the reference, whose effect of each command is also
 *   checked against what smmuv3.md says it drops (written out below, not read from the table);
 * - the VCMDQ engine over raw words as a worker runs it (worker-pool/engine.ts), host-owned (VINTF0)
 *   and guest-owned (HYP_OWN=0), in this thread and in a real worker thread of a VcmdqPool;
 * - IOMMU_HWPT_INVALIDATE (vfio/hwpt-invalidate.ts) issuing to a main CMDQ;
 * - the allow-lists, the pSMMU's wasted-delivery check (psmmu/relevance.ts) and the vSMMU's dispatch
 *   (qemu/vsmmu-route.ts).
 *
 * The stream is written as a guest of VM 0 writes it (vSIDs, a VMID of its own). Host-owned queues
 * get it as the host would issue it (VMID and pSIDs of vIOMMU A); a guest VCMDQ and HWPT_INVALIDATE
 * must then have exactly the effect the main CMDQ has on the stream as cmdqv.md and iommufd.md say
 * they rewrite it, with a refused command where they refuse one. Every consumer's IOTLB and
 * configuration cache after each command, and where its queue stopped with which error, must match.
 */
import { describe, expect, it } from 'vitest';
import { GUEST_RAM_SIZE, GUEST_TABLE_BASE, HOST_TABLE_BASE, cdIpa, steAddr, vmRamBase } from '../../services/machine/board.js';
import { COST_STEPS, CostTable } from '../../services/cost/steps.js';
import { Errno } from '../../services/runtime/errors.js';
import { HWPT_INVALIDATE_SIZE, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 } from '../../services/formats/iommufd.js';
import type { VdeviceObject, ViommuObject } from '../../services/machine/iommufd-objects.js';
import { FrameAllocator, PhysMemory } from '../../services/machine/memory.js';
import { PageTable } from '../../services/machine/pagetable.js';
import { GUEST_VCMDQ_OPCODES, HWPT_INVALIDATE_OPCODES } from '../../services/formats/smmu/allow-lists.js';
import {
  CMD_SIZE, Opcode, atcInv, cfgiAll, cfgiCd, cfgiCdAll, cfgiSte, cfgiSteRange, cmdSync, encodeCommand, opcodeName, readOpcode, readSid,
  tlbiNhAll, tlbiNhAsid, tlbiNhVa, tlbiNhVaa, tlbiNsnhAll, tlbiS12Vmall, tlbiS2Ipa, writeSid, writeVmid, type SmmuCommand,
} from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { CommandScope, readScope } from '../../services/formats/smmu/semantics.js';
import { STE_CONFIG, encodeCd, encodeSte } from '../../services/formats/smmu/structures.js';
import { PhysicalCmdq } from '../../services/psmmu/cmdq.js';
import { EventQueue } from '../../services/psmmu/events.js';
import { scopeConcerns } from '../../services/psmmu/relevance.js';
import { Translator } from '../../services/psmmu/translate.js';
import { routeCommand } from '../../services/designs/nested-smmuv3/vsmmu-route.js';
import { invalidateEntries } from '../../services/vfio/hwpt-invalidate.js';
import { Cmdqv } from '../../worker-pool/cmdqv.js';
import { ConfigInvalidations } from '../../worker-pool/config-invalidations.js';
import { controlBytes } from '../../worker-pool/control.js';
import { consumerQueue, drain } from '../../worker-pool/engine.js';
import { Iotlb } from '../../worker-pool/iotlb.js';
import { VcmdqPool } from '../../worker-pool/pool.js';
import { CONFIG_EN, R_CONFIG, R_CONS, R_GERROR, R_GERRORN, RingProducer, createRing, isHalted, slotByte } from '../../worker-pool/ring.js';
import { GuestView } from '../helpers/smmu-fixture.js';

// ---- The machine: two pSMMUs; VM 0 behind both (vIOMMU A on pSMMU 0, B on pSMMU 1), VM 1 and two
// stage-2-only streams on pSMMU 0. ----

const PAGE = 4096;
/** The VA pages every stage-1 stream has cached, and the IPA pages every VMID has stage-2-only entries for. */
const VA_PAGES = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17];
const IPA0 = 0x8_0000;
const IPA_PAGES = VA_PAGES.map((_, i) => IPA0 + i);

interface Stream {
  sid: number;
  vm: number;
  vmid: number;
  /** -1: a stage-2-only stream. */
  asid: number;
  /** The device's number (where its CD sits in guest RAM). */
  device: number;
}

const STREAMS: readonly (readonly Stream[])[] = [
  [
    { sid: 0x100, vm: 0, vmid: 5, asid: 3, device: 0 },
    { sid: 0x101, vm: 0, vmid: 5, asid: 4, device: 1 },
    { sid: 0x108, vm: 1, vmid: 7, asid: 3, device: 2 },
    { sid: 0x200, vm: 2, vmid: 9, asid: -1, device: 3 },
    { sid: 0x300, vm: 3, vmid: 9, asid: -1, device: 4 },
  ],
  [{ sid: 0x180, vm: 0, vmid: 6, asid: 5, device: 5 }],
];

const VIOMMU_A: ViommuObject = { id: 20, vm: 0, psmmu: 0, vmid: 5, hwptId: 10 };
const VIOMMU_B: ViommuObject = { id: 21, vm: 0, psmmu: 1, vmid: 6, hwptId: 11 };
const VDEVS = new Map<ViommuObject, ReadonlyMap<number, VdeviceObject>>([
  [VIOMMU_A, new Map([
    [8, { id: 30, viommuId: 20, devId: 1, vsid: 8, psid: 0x100 }],
    [9, { id: 31, viommuId: 20, devId: 2, vsid: 9, psid: 0x101 }],
  ])],
  [VIOMMU_B, new Map([[10, { id: 32, viommuId: 21, devId: 3, vsid: 10, psid: 0x180 }]])],
]);
/** The ASID each of VM 0's vSIDs uses (its guest CD), as the VMM's lookup table learns it. */
const VM0_ASIDS = new Map([[8, 3], [9, 4], [10, 5]]);

const COSTS = new CostTable(Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, 1])));

interface Smmu {
  iotlb: Iotlb;
  translator: Translator;
  configLog: ConfigInvalidations;
  cmdq: PhysicalCmdq;
}

/** pSMMU k with every stream's configuration cached and IOTLB entries of every kind for each. */
function warmSmmu(k: number): Smmu {
  const host = new PhysMemory();
  const frames = new FrameAllocator(HOST_TABLE_BASE);
  const iotlb = Iotlb.create(1024);
  const configLog = ConfigInvalidations.create();
  const translator = new Translator(k, host, iotlb, new EventQueue(), COSTS, configLog);
  const streams = STREAMS[k] ?? [];
  for (const s of streams) {
    const s2 = new PageTable(host, frames);
    if (s.asid >= 0) {
      s2.mapBlocks(0, vmRamBase(s.vm), GUEST_RAM_SIZE, 1);
      // No stage-1 mapping: the warm-up translation caches the configuration and faults.
      new GuestView(host, vmRamBase(s.vm)).write(cdIpa(s.device), encodeCd({ valid: true, asid: s.asid, ttb0: GUEST_TABLE_BASE }));
      host.write(steAddr(k, s.sid), encodeSte({ valid: true, config: STE_CONFIG.NESTED, s1ContextPtr: cdIpa(s.device), vmid: s.vmid, s2ttb: s2.root }));
    } else {
      host.write(steAddr(k, s.sid), encodeSte({ valid: true, config: STE_CONFIG.S2, s1ContextPtr: 0, vmid: s.vmid, s2ttb: s2.root }));
    }
    translator.translate(s.sid, VA_PAGES[0]! * PAGE, false, false);
  }
  for (const s of streams) {
    if (s.asid < 0) continue;
    for (const p of VA_PAGES) {
      iotlb.insert({ vmid: s.vmid, asid: s.asid, stage2Only: false, page: p * PAGE, pa: 0x9000_0000 + p * PAGE, writable: true, ipa: (IPA0 + p) * PAGE, leafDescAddr: 0 });
    }
  }
  for (const vmid of new Set(streams.map((s) => s.vmid))) {
    for (const p of IPA_PAGES) iotlb.insert({ vmid, asid: -1, stage2Only: true, page: p * PAGE, pa: 0xa000_0000 + p * PAGE, writable: true, ipa: p * PAGE, leafDescAddr: 0 });
  }
  expect(translator.cachedConfigs().dma).toEqual(streams.map((s) => s.sid).sort((a, b) => a - b));
  return { iotlb, translator, configLog, cmdq: new PhysicalCmdq(5, iotlb, translator) };
}

// ---- The stream, as VM 0's guest writes it ----

/** The VMID the guest writes; every consumer must replace or ignore it. */
const GUEST_VMID = 0x33;

interface Step {
  cmd: SmmuCommand | 'illegal';
  /**
   * What smmuv3.md says the command drops on pSMMU 0 when the host issues it for vIOMMU A (VMID 5,
   * vSIDs 8 and 9 as pSIDs 0x100 and 0x101): IOTLB entries and configured StreamIDs. Written from
   * the reference, independently of the opcode table.
   */
  drops?: (e: Entry) => boolean;
  config?: number[];
  halts?: true;
}

interface Entry {
  vmid: number;
  asid: number;
  page: number;
}

const inPages = (first: number, n: number) => (p: number) => p >= first && p < first + n;

const STREAM: readonly Step[] = [
  { cmd: tlbiNhVa({ vmid: GUEST_VMID, asid: 3, va: 0x10n * 4096n }), drops: (e) => e.vmid === 5 && e.asid === 3 && e.page === 0x10 },
  { cmd: tlbiNhVa({ vmid: GUEST_VMID, asid: 3, va: 0x12n * 4096n, tg: 1, num: 1 }), drops: (e) => e.vmid === 5 && e.asid === 3 && inPages(0x12, 2)(e.page) },
  { cmd: cmdSync() },
  { cmd: tlbiNhVaa({ vmid: GUEST_VMID, va: 0x14n * 4096n, tg: 1, num: 1 }), drops: (e) => e.vmid === 5 && e.asid >= 0 && inPages(0x14, 2)(e.page) },
  { cmd: tlbiNhAsid({ vmid: GUEST_VMID, asid: 4 }), drops: (e) => e.vmid === 5 && e.asid === 4 },
  // vIOMMU B's ASID: nothing of it on pSMMU 0.
  { cmd: tlbiNhAsid({ vmid: GUEST_VMID, asid: 5 }) },
  { cmd: tlbiS2Ipa({ vmid: GUEST_VMID, ipa: BigInt(IPA0 * PAGE), tg: 1, num: 3 }), drops: (e) => e.vmid === 5 && e.asid < 0 && inPages(IPA0, 4)(e.page) },
  { cmd: cfgiCd({ sid: 9, ssid: 0 }), config: [0x101] },
  { cmd: 'illegal', halts: true },
  { cmd: tlbiNhAll({ vmid: GUEST_VMID }), drops: (e) => e.vmid === 5 && e.asid >= 0 },
  { cmd: cfgiCdAll({ sid: 8 }), config: [0x100] },
  { cmd: atcInv({ sid: 8, size: 0, addr: 0x10n * 4096n }) },
  // A vSID of vIOMMU B: no SID pair for it in VM 0's VINTF on pSMMU 0.
  { cmd: atcInv({ sid: 10, size: 0, addr: 0n }) },
  { cmd: cfgiSteRange({ sid: 0x10a, range: 2 }), config: [0x108] },
  { cmd: cfgiSte({ sid: 0x200 }), config: [0x200] },
  { cmd: tlbiS12Vmall({ vmid: GUEST_VMID }), drops: (e) => e.vmid === 5 },
  { cmd: cmdSync() },
  { cmd: cmdSync({ cs: 3 }), halts: true },
  { cmd: tlbiNsnhAll(), drops: () => true },
  { cmd: cfgiAll(), config: [0x300] },
  { cmd: cmdSync() },
];

function bytesOf(step: Step): Buffer {
  const b = Buffer.alloc(CMD_SIZE);
  if (step.cmd === 'illegal') b[0] = 0x7f;
  else encodeCommand(step.cmd, b, 0);
  return b;
}

const GUEST_STREAM: readonly Buffer[] = STREAM.map(bytesOf);

// ---- How each path rewrites a guest command, as the references say (not read from the table) ----

const ILLEGAL = Buffer.from([0x7f, ...new Array<number>(CMD_SIZE - 1).fill(0)]);
/** smmuv3.md: the commands with a VMID field. */
const WITH_VMID = new Set(['TLBI_NH_ALL', 'TLBI_NH_ASID', 'TLBI_NH_VA', 'TLBI_NH_VAA', 'TLBI_S12_VMALL', 'TLBI_S2_IPA']);
/** Commands naming one StreamID a host translates from a vSID (range CFGIs are not translated). */
const ONE_SID = new Set(['CFGI_STE', 'CFGI_CD', 'CFGI_CD_ALL', 'ATC_INV']);
/** cmdqv.md: what a guest-owned VCMDQ takes. */
const GUEST_VCMDQ_DOC = ['TLBI_NH_ASID', 'TLBI_NH_VA', 'ATC_INV', 'CMD_SYNC'];
/** iommufd.md: what HWPT_INVALIDATE takes, and as what. */
const HWPT_DOC: Record<string, string> = {
  TLBI_NSNH_ALL: 'TLBI_NH_ALL', TLBI_NH_VA: 'TLBI_NH_VA', TLBI_NH_VAA: 'TLBI_NH_VAA', TLBI_NH_ALL: 'TLBI_NH_ALL',
  TLBI_NH_ASID: 'TLBI_NH_ASID', ATC_INV: 'ATC_INV', CFGI_CD: 'CFGI_CD', CFGI_CD_ALL: 'CFGI_CD_ALL',
};

/**
 * A guest command as it reaches vIOMMU `v`'s pSMMU: its VMID, its vSID as the pSID (undefined when
 * the vIOMMU has no such vSID), under opcode `as`.
 */
function rewrite(bytes: Buffer, v: ViommuObject, as = readOpcode(bytes, 0)): Buffer | undefined {
  const out = Buffer.from(bytes);
  out[0] = as;
  const name = opcodeName(as);
  if (WITH_VMID.has(name)) writeVmid(out, 0, v.vmid);
  if (ONE_SID.has(name)) {
    const vdev = VDEVS.get(v)?.get(readSid(out, 0));
    if (vdev) writeSid(out, 0, vdev.psid);
    else if (name !== 'CFGI_STE') return undefined;
  }
  return out;
}

/** The host's own issue of the stream for vIOMMU A: every command, VMID and vSIDs translated. */
const hostForm = (b: Buffer): Buffer => rewrite(b, VIOMMU_A) ?? b;
/**
 * What a guest VCMDQ of VM 0 on pSMMU 0 must do: the allowed commands rewritten (a vSID without a
 * SID pair is refused), anything else refused. An illegal command stays illegal either way.
 */
function guestVcmdqForm(b: Buffer): Buffer {
  return GUEST_VCMDQ_DOC.includes(opcodeName(readOpcode(b, 0))) ? rewrite(b, VIOMMU_A) ?? ILLEGAL : ILLEGAL;
}
/** What HWPT_INVALIDATE on vIOMMU A must do. */
function hwptForm(b: Buffer): Buffer {
  const as = HWPT_DOC[opcodeName(readOpcode(b, 0))];
  return as === undefined ? ILLEGAL : rewrite(b, VIOMMU_A, Opcode[as as keyof typeof Opcode]) ?? ILLEGAL;
}

// ---- Runs: the state after each command, and where a queue stopped ----

interface State {
  tlb: string[];
  config: number[];
}

interface Trace {
  /** Stream index of each command a queue stopped on, with CONS.ERR (or -errno for HWPT_INVALIDATE). */
  halts: { at: number; error: number }[];
  /** The caches after each command, one command submitted at a time. */
  steps: State[];
  /** The caches when the whole stream, submitted at once, stopped on each refused command, and at its end. */
  batch: State[];
}

function state(s: Smmu): State {
  return {
    tlb: s.iotlb.entries().map((e) => `${e.vmid}/${e.asid}/0x${(e.page / PAGE).toString(16)}`).sort(),
    config: s.translator.cachedConfigs().dma,
  };
}

/** One consumer: runs commands from stream index `at`, reporting each stop (after which it recovers as Linux does). */
interface Consumer {
  smmu: Smmu;
  run(commands: Buffer, at: number, stopped: (index: number, error: number) => void): Promise<void>;
  close?(): Promise<void>;
}

const SYNC = ((): Buffer => {
  const b = Buffer.alloc(CMD_SIZE);
  encodeCommand(cmdSync(), b, 0);
  return b;
})();

async function trace(make: () => Promise<Consumer>, stream: readonly Buffer[]): Promise<Trace> {
  const halts: Trace['halts'] = [];
  const steps: State[] = [];
  const one = await make();
  try {
    for (let i = 0; i < stream.length; i++) {
      await one.run(stream[i]!, i, (index, error) => halts.push({ at: index, error }));
      steps.push(state(one.smmu));
    }
  } finally {
    await one.close?.();
  }
  const batch: State[] = [];
  const all = await make();
  const batchHalts: Trace['halts'] = [];
  try {
    await all.run(Buffer.concat(stream), 0, (index, error) => {
      batchHalts.push({ at: index, error });
      batch.push(state(all.smmu));
    });
    batch.push(state(all.smmu));
  } finally {
    await all.close?.();
  }
  // Submitted at once, the queue stops at the same commands.
  expect(batchHalts).toEqual(halts);
  return { halts, steps, batch };
}

/** The pSMMU's main CMDQ; on a stop the host rewrites the slot with a CMD_SYNC and acknowledges (arm_smmu_cmdq_skip_err). */
function mainCmdq(k = 0): Promise<Consumer> {
  const smmu = warmSmmu(k);
  const q = smmu.cmdq;
  return Promise.resolve({
    smmu,
    run: async (commands, at, stopped) => {
      const start = q.cons;
      expect(q.write(commands)).toBe(true);
      for (let r = q.consume(); r.error !== 0; r = q.consume()) {
        stopped(at + Q.used(Q.withConsErr(q.cons, 0), start, q.log2), r.error);
        q.acknowledge(SYNC);
      }
    },
  });
}

/** A VCMDQ consumed in this thread by the worker's own code (drain), VINTF0 (host) or VM 0's VINTF on pSMMU 0. */
function engine(guest: boolean): Promise<Consumer> {
  const smmu = warmSmmu(0);
  const cmdqv = new Cmdqv({ vintfs: 2, vcmdqs: 2 });
  if (guest) {
    expect(cmdqv.assignVintf(1, VIOMMU_A.vmid).ok).toBe(true);
    [...(VDEVS.get(VIOMMU_A) ?? new Map<number, VdeviceObject>()).values()].forEach((d, slot) => expect(cmdqv.setSidPair(1, slot, d.vsid, d.psid).ok).toBe(true));
  }
  const vintf = guest ? 1 : 0;
  const vintfTable = new Int32Array(cmdqv.vintfTable);
  const view = createRing(5, { queue: 0, vintf, lidx: 0 });
  view.i32[R_CONFIG] = CONFIG_EN;
  const q = consumerQueue(view.buffer, 0, vintf, vintfTable, cmdqv.vintfBase(vintf), !guest);
  // The worker's own configuration log view: CFGIs travel to the translator through shared memory.
  const env = { iotlb: Iotlb.attach(smmu.iotlb.buffer), config: ConfigInvalidations.attach(smmu.configLog.buffer), ctl: new Int32Array(new SharedArrayBuffer(controlBytes(1))) };
  const producer = new RingProducer(view);
  return Promise.resolve({
    smmu,
    run: async (commands, at, stopped) => {
      const start = producer.consumedTotal();
      expect(producer.write(commands, 0, commands.length / CMD_SIZE)).toBe(commands.length / CMD_SIZE);
      drain(q, env);
      while (isHalted(view)) {
        const cons = Atomics.load(view.i32, R_CONS);
        stopped(at + producer.consumedTotal() - start, Q.consErr(cons));
        view.u8.set(SYNC, slotByte(view, cons));
        Atomics.store(view.i32, R_GERRORN, Atomics.load(view.i32, R_GERROR));
        drain(q, env);
      }
      expect(producer.consumedTotal()).toBe(producer.total);
    },
  });
}

/** The same queue in a real worker thread of a VcmdqPool sharing the pSMMU's IOTLB and configuration log. */
async function worker(guest: boolean): Promise<Consumer> {
  const smmu = warmSmmu(0);
  const pool = await VcmdqPool.start({ iotlb: smmu.iotlb, configLog: smmu.configLog, workers: 1, vintfs: 2, vcmdqs: 2 });
  try {
    if (guest) {
      expect(pool.assignVintf(1, VIOMMU_A.vmid).ok).toBe(true);
      [...(VDEVS.get(VIOMMU_A) ?? new Map<number, VdeviceObject>()).values()].forEach((d, slot) => expect(pool.setSidPair(1, slot, d.vsid, d.psid).ok).toBe(true));
    }
    const r = await pool.allocate(guest ? 1 : 0, 0, 5);
    if (!r.ok) throw r.error;
    const q = r.value;
    return {
      smmu,
      run: async (commands, at, stopped) => {
        const start = q.producer.consumedTotal();
        let s = await q.submit(commands);
        while (s.status === 'halted') {
          stopped(at + q.producer.consumedTotal() - start, s.error);
          expect(q.acknowledge(SYNC).ok).toBe(true);
          s = await q.flush();
        }
      },
      close: () => pool.destroy(),
    };
  } catch (err) {
    await pool.destroy();
    throw err;
  }
}

/** IOMMU_HWPT_INVALIDATE on vIOMMU A, one call per guest command (QEMU's way), issuing to pSMMU 0's main CMDQ. */
function hwpt(): Promise<Consumer> {
  const smmu = warmSmmu(0);
  const sink = {
    converted: () => undefined,
    submit: async (chunk: Buffer): Promise<number> => {
      expect(smmu.cmdq.write(chunk)).toBe(true);
      return smmu.cmdq.consume().error === 0 ? 0 : -Errno.EIO;
    },
  };
  return Promise.resolve({
    smmu,
    run: async (commands, at, stopped) => {
      for (let i = 0; i < commands.length / CMD_SIZE; i++) {
        const head = { size: HWPT_INVALIDATE_SIZE, hwptId: VIOMMU_A.id, dataUptr: 0x7f00_0000_0000, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: CMD_SIZE, entryNum: 1, reserved: 0 };
        const r = await invalidateEntries(head, commands.subarray(i * CMD_SIZE, (i + 1) * CMD_SIZE), VIOMMU_A, VDEVS.get(VIOMMU_A) ?? new Map(), sink);
        if (r.status !== 0) stopped(at + i, r.status);
      }
    },
  });
}

// ---- The tests ----

const HOST_STREAM = GUEST_STREAM.map(hostForm);
let reference: Trace | undefined;

async function hostReference(): Promise<Trace> {
  reference ??= await trace(() => mainCmdq(), HOST_STREAM);
  return reference;
}

describe('one SMMUv3 command stream through every consumer', () => {
  it('the main CMDQ drops what smmuv3.md says each command drops, and stops on each illegal command', async () => {
    const ref = await hostReference();
    const before = state(warmSmmu(0));
    let prev = before;
    STREAM.forEach((step, i) => {
      const now = ref.steps[i]!;
      const parse = (key: string): Entry => {
        const [vmid, asid, page] = key.split('/');
        return { vmid: Number(vmid), asid: Number(asid), page: Number(page) };
      };
      const name = step.cmd === 'illegal' ? 'illegal' : opcodeName(step.cmd.opcode);
      expect(now.tlb, `${i} ${name}: IOTLB`).toEqual(prev.tlb.filter((k) => !(step.drops?.(parse(k)) ?? false)));
      expect(now.config, `${i} ${name}: configuration cache`).toEqual(prev.config.filter((sid) => !(step.config ?? []).includes(sid)));
      prev = now;
    });
    expect(ref.halts).toEqual(STREAM.flatMap((s, at) => (s.halts ? [{ at, error: Q.CERROR.ILL }] : [])));
    expect(ref.batch.at(-1)).toEqual(ref.steps.at(-1));
  });

  it('a host-owned VCMDQ (VINTF0) as the worker runs it has the main CMDQ effect, CFGIs included', async () => {
    expect(await trace(() => engine(false), HOST_STREAM)).toEqual(await hostReference());
  });

  it('a host-owned VCMDQ in a real worker thread: the same, its CFGIs reaching the translator through shared memory', async () => {
    expect(await trace(() => worker(false), HOST_STREAM)).toEqual(await hostReference());
  }, 30_000);

  it('a guest-owned VCMDQ refuses what cmdqv.md does not allow, stamps its VMID and replaces vSIDs: the main CMDQ effect of that', async () => {
    const expected = await trace(() => mainCmdq(), GUEST_STREAM.map(guestVcmdqForm));
    expect(expected.halts.map((h) => h.at)).toEqual([3, 6, 7, 8, 9, 10, 12, 13, 14, 15, 17, 18, 19]);
    expect(await trace(() => engine(true), GUEST_STREAM)).toEqual(expected);
    expect(await trace(() => worker(true), GUEST_STREAM)).toEqual(expected);
  }, 30_000);

  it('IOMMU_HWPT_INVALIDATE refuses with EIO what iommufd.md does not take and issues the rest converted: the main CMDQ effect of that', async () => {
    const expected = await trace(() => mainCmdq(), GUEST_STREAM.map(hwptForm));
    const got = await trace(() => hwpt(), GUEST_STREAM);
    expect(got.halts).toEqual(expected.halts.map((h) => ({ at: h.at, error: -Errno.EIO })));
    expect({ ...got, halts: [] }).toEqual({ ...expected, halts: [] });
  });

  it('the allow-lists are the references\' lists', () => {
    const names = (s: ReadonlySet<number>): string[] => [...s].map(opcodeName).sort();
    expect(names(GUEST_VCMDQ_OPCODES)).toEqual([...GUEST_VCMDQ_DOC].sort());
    expect(names(HWPT_INVALIDATE_OPCODES)).toEqual(Object.keys(HWPT_DOC).sort());
  });

  /**
   * What a command delivered to pSMMU k touches there: anything it drops from warm caches, or, for
   * ATC_INV (no ATC is modelled), its StreamID being one of k's.
   */
  function touches(k: number, bytes: Buffer): boolean {
    const smmu = warmSmmu(k);
    const before = state(smmu);
    expect(smmu.cmdq.write(bytes)).toBe(true);
    smmu.cmdq.consume();
    const after = state(smmu);
    if (readOpcode(bytes, 0) === Opcode.ATC_INV) return (STREAMS[k] ?? []).some((s) => s.sid === readSid(bytes, 0));
    return after.tlb.length !== before.tlb.length || after.config.length !== before.config.length;
  }

  const scope = new CommandScope();
  /** Commands the wasted count looks at: what executes, CMD_SYNC and illegal ones not. */
  const delivers = (bytes: Buffer): boolean => readOpcode(bytes, 0) !== Opcode.CMD_SYNC && opcodeName(readOpcode(bytes, 0)) !== 'ILLEGAL';

  it('the pSMMU counts a delivered command as relevant exactly when it touches something behind it', () => {
    for (const [k, v] of [[0, VIOMMU_A], [1, VIOMMU_B]] as const) {
      const smmu = warmSmmu(k);
      const sids = (STREAMS[k] ?? []).map((s) => s.sid);
      GUEST_STREAM.forEach((guestCmd, i) => {
        const bytes = rewrite(guestCmd, v);
        if (!bytes || !delivers(bytes)) return;
        readScope(bytes, 0, scope);
        expect(scopeConcerns(scope, sids, (sid) => smmu.translator.contextOf(sid)), `${i} ${opcodeName(readOpcode(bytes, 0))} on pSMMU ${k}`).toBe(touches(k, bytes));
      });
    }
  });

  it('a single vSMMU routes each forwarded command to the vIOMMUs whose pSMMU it touches (lookup), or to a superset (broadcast)', () => {
    const all = [VIOMMU_A, VIOMMU_B];
    const bySid = (vsid: number): ViommuObject | undefined => all.find((v) => VDEVS.get(v)?.has(vsid));
    const byAsid = (asid: number): ReadonlySet<ViommuObject> | undefined => {
      const users = new Set([...VM0_ASIDS].filter(([, a]) => a === asid).flatMap(([vsid]) => [bySid(vsid)!]));
      return users.size > 0 ? users : undefined;
    };
    let routed = 0;
    GUEST_STREAM.forEach((guestCmd, i) => {
      if (!HWPT_INVALIDATE_OPCODES.has(readOpcode(guestCmd, 0))) return;
      routed += 1;
      readScope(guestCmd, 0, scope);
      const touched = all.filter((v, k) => {
        const bytes = rewrite(guestCmd, v, Opcode[HWPT_DOC[opcodeName(readOpcode(guestCmd, 0))] as keyof typeof Opcode]);
        return bytes !== undefined && touches(k, bytes);
      });
      const name = `${i} ${opcodeName(readOpcode(guestCmd, 0))}`;
      expect(routeCommand(scope, all, { bySid, byAsid }), `${name} (lookup)`).toEqual(touched);
      const broadcast = routeCommand(scope, all, { bySid });
      expect(touched.every((v) => broadcast.includes(v)), `${name} (broadcast)`).toBe(true);
    });
    expect(routed).toBe(11);
  });
});
