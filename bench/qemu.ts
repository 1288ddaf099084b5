/**
 * `npm run bench -- qemu [--json] [--commands N] [--reps N]`: what QEMU's own vIOMMU models cost per
 * guest command, timed in a real QEMU driven through its qtest protocol (no guest, no KVM: the
 * harness writes guest RAM and the device's registers the way a guest driver does). The figures are
 * micro-cost sources for the VMM's steps (profiles/*.yaml cite them):
 *
 *   vmm.vsmmu_cmd         hw/arm/smmuv3.c smmuv3_cmdq_consume per command: read 16 bytes of the
 *                         queue from guest RAM, decode, dispatch. Timed with CMD_SYNC (CS=NONE),
 *                         whose dispatch does nothing else.
 *   vmm.iotlb_invalidate  a TLBI_NH_VA (one 4 KiB page, TTL 3) minus a CMD_SYNC: smmuv3_range_inval,
 *                         smmu_iotlb_inv_iova and the notifier walk, on an IOTLB with no entry.
 *   vmm.vtd_desc          hw/i386/intel_iommu.c vtd_fetch_inv_desc per descriptor, in the pair
 *                         Linux's qi_submit_sync queues for one page: a page-selective IOTLB
 *                         invalidation (vtd_process_iotlb_desc) and a wait descriptor with a status
 *                         write (vtd_process_wait_desc).
 *
 * One register write (CMDQ_PROD, IQT) makes QEMU consume every command queued before it, so a write
 * after N commands against a write after one gives the per-command time with the qtest round trip
 * taken out: (t(N) - t(1)) / (N - 1), the median over --reps repetitions (CMD_SYNC and TLBI in turn).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { VmmsimError } from '../services/runtime/errors.js';
import { nowNs } from '../services/runtime/clock.js';
import { median } from '../services/controller/measured.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, tlbiNhVa, type SmmuCommand } from '../services/formats/smmu/commands.js';
import * as Q from '../services/formats/smmu/queue.js';
import { SMMU_REG, VSMMU_MMIO_BASE } from '../services/formats/smmu/registers.js';
import { DESC_SIZE, DescType, Granularity, VTD_MMIO_BASE, VTD_REG, encodeDescriptors, encodeIqa, iqRegisterOf, type VtdDescriptor } from '../services/formats/vtd.js';

const USAGE = `usage: npm run bench -- qemu [options]

Per-command costs of QEMU's vSMMU (smmuv3_cmdq_consume) and VT-d queued invalidation
(vtd_fetch_inv_desc), timed in a real qemu-system-aarch64 and qemu-system-x86_64 through qtest.
Needs both on PATH (Debian: apt-get install qemu-system-arm qemu-system-x86).

options:
  --commands N   commands per timed register write (default 2048, at most 4096)
  --reps N       timed writes per case (default 41); each figure is a median
  --json         print one JSON object on stdout
  -h, --help     this text
`;

/** SMMU_CR0.CMDQEN: smmuv3_cmdq_consume does nothing until the queue is enabled. */
const SMMU_CR0 = 0x20;
const CR0_CMDQEN = 1 << 3;
/** The queue in guest RAM (the virt machine's RAM starts at 1 GiB), 2^12 slots. */
const SMMU_Q_GPA = 0x4000_0000;
const SMMU_Q_LOG2 = 12;
/** VT-d: GCMD.QIE, and a queue of 2^(4+8) = 4096 descriptors at 256 MiB (q35 RAM starts at 0). */
const GCMD_QIE = 1 << 26;
const VTD_Q_GPA = 0x1000_0000;
const VTD_Q_QS = 4;
const VTD_Q_ENTRIES = 1 << (VTD_Q_QS + 8);
const VTD_STATUS_GPA = 0x1100_0000;

interface Options {
  commands: number;
  reps: number;
  json: boolean;
}

/** One qtest connection: a line protocol, one reply ("OK ..." or "FAIL ...") per command. */
class Qtest {
  private buf = '';
  private waiting: { res: (line: string) => void; rej: (err: Error) => void }[] = [];
  private lost: Error | undefined;

  private constructor(
    private readonly sock: Socket,
    private readonly child: ChildProcess,
    private readonly dir: string,
    stderr: () => string,
  ) {
    // QEMU going away (a fatal error at start, a crash) fails the command waiting, with its words.
    const gone = (why: string): void => {
      this.lost ??= new VmmsimError('E_RUN', `QEMU closed its qtest socket (${why}): ${stderr().trim() || 'no message'}`, 'QEMU stopped on its own: its message is quoted; run that qemu-system binary alone to see it (a missing module or firmware means a broken install)');
      for (const w of this.waiting.splice(0)) w.rej(this.lost);
    };
    sock.on('error', (err) => gone(err.message));
    sock.on('close', () => gone('closed'));
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        // Asynchronous notices (IRQ lines) are not replies.
        if (line.startsWith('IRQ')) continue;
        this.waiting.shift()?.res(line);
      }
    });
  }

  static async start(binary: string, machine: string[]): Promise<Qtest> {
    const dir = mkdtempSync(join(tmpdir(), 'vmmsim-qtest-'));
    const path = join(dir, 'qtest.sock');
    const server = createServer();
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(path, res);
    });
    // eslint-disable-next-line no-restricted-syntax -- QEMU's display backend "none", not a design's name
    const child = spawn(binary, [...machine, '-S', '-display', 'none', '-nodefaults', '-m', '512', '-qtest', `unix:${path}`, '-qtest-log', '/dev/null'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', () => undefined); // a spawn failure shows as the exit below
    try {
      const sock = await new Promise<Socket>((res, rej) => {
        const timer = setTimeout(() => rej(new VmmsimError('E_RUN', `${binary} did not connect to its qtest socket in 20 s: ${stderr.trim()}`)), 20_000);
        child.once('exit', (code) => {
          clearTimeout(timer);
          rej(new VmmsimError('E_RUN', `${binary} exited (${code}) before connecting: ${stderr.trim()}`));
        });
        server.once('connection', (s) => {
          clearTimeout(timer);
          res(s);
        });
      });
      return new Qtest(sock, child, dir, () => stderr);
    } catch (err) {
      // A QEMU that never connected is not left running, nor its folder behind.
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw err;
    } finally {
      server.close();
    }
  }

  async cmd(line: string): Promise<string> {
    if (this.lost) throw this.lost;
    const reply = new Promise<string>((res, rej) => this.waiting.push({ res, rej }));
    this.sock.write(`${line}\n`);
    const r = await reply;
    if (!r.startsWith('OK')) throw new VmmsimError('E_RUN', `qtest "${line.slice(0, 60)}" answered "${r}"`);
    return r;
  }

  async readl(addr: number): Promise<number> {
    return Number((await this.cmd(`readl 0x${addr.toString(16)}`)).split(' ')[1]);
  }

  async writel(addr: number, v: number): Promise<void> {
    await this.cmd(`writel 0x${addr.toString(16)} 0x${(v >>> 0).toString(16)}`);
  }

  async writeq(addr: number, v: bigint): Promise<void> {
    await this.cmd(`writeq 0x${addr.toString(16)} 0x${v.toString(16)}`);
  }

  async write(addr: number, data: Buffer): Promise<void> {
    await this.cmd(`b64write 0x${addr.toString(16)} 0x${data.length.toString(16)} ${data.toString('base64')}`);
  }

  /** The time one register write takes to be answered (QEMU handles it before it replies). */
  async timedWritel(addr: number, v: number): Promise<number> {
    const t0 = nowNs();
    await this.writel(addr, v);
    return nowNs() - t0;
  }

  close(): void {
    this.sock.destroy();
    this.child.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function qemuVersion(binary: string): string | undefined {
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return undefined;
  return /version (\S+)/.exec(r.stdout)?.[1];
}

/** SMMUv3 on the virt machine: t(N) - t(1) per command for CMD_SYNC and for TLBI_NH_VA. */
async function smmuCase(q: Qtest, opts: Options): Promise<{ syncNs: number; tlbiNs: number; invalidateNs: number; consumed: number }> {
  const B = VSMMU_MMIO_BASE;
  const entries = Q.size(SMMU_Q_LOG2);
  await q.writeq(B + SMMU_REG.CMDQ_BASE, BigInt(SMMU_Q_GPA) | BigInt(SMMU_Q_LOG2));
  await q.writel(B + SMMU_CR0, CR0_CMDQEN);
  let prod = 0; // the PROD register: index and wrap
  let consumed = 0;
  let written = 0; // commands written so far, the commands' own numbering
  const submit = async (make: (i: number) => SmmuCommand, n: number): Promise<number> => {
    const bytes = Buffer.alloc(n * CMD_SIZE);
    for (let i = 0; i < n; i++) encodeCommand(make(written + i), bytes, i * CMD_SIZE);
    await q.write(SMMU_Q_GPA + Q.slotOffset(prod, SMMU_Q_LOG2, CMD_SIZE), bytes);
    written += n;
    prod = Q.inc(prod, SMMU_Q_LOG2, n);
    const t = await q.timedWritel(B + SMMU_REG.CMDQ_PROD, prod);
    consumed += n;
    return t;
  };
  const sync = (): SmmuCommand => cmdSync({ cs: SyncCs.NONE });
  const tlbi = (i: number): SmmuCommand => tlbiNhVa({ vmid: 0, asid: 1, va: BigInt(0x1_0000_0000 + (i % 65536) * 4096), tg: 1, ttl: 3 });
  // Both kinds in turn within each repetition, so a drift of the machine moves both alike; each
  // repetition's (t(N) - t(1)) is one sample.
  const sample = async (make: (i: number) => SmmuCommand): Promise<number> => {
    // A batch never wraps inside the ring: pad to its start with commands not timed.
    const room = entries - Q.index(prod, SMMU_Q_LOG2);
    if (room < opts.commands) await submit(sync, room);
    const many = await submit(make, opts.commands);
    const one = await submit(make, 1);
    return (many - one) / (opts.commands - 1);
  };
  const syncs: number[] = [];
  const tlbis: number[] = [];
  for (let r = 0; r < opts.reps + 5; r++) {
    const a = await sample(sync);
    const b = await sample(tlbi);
    if (r < 5) continue; // warm-up
    syncs.push(a);
    tlbis.push(b);
  }
  const cons = await q.readl(B + SMMU_REG.CMDQ_CONS);
  const gerror = await q.readl(B + SMMU_REG.GERROR);
  if (Q.ptr(cons, SMMU_Q_LOG2) !== prod || gerror !== 0) throw new VmmsimError('E_RUN', `QEMU's vSMMU stopped at CONS 0x${cons.toString(16)} (PROD 0x${prod.toString(16)}, GERROR 0x${gerror.toString(16)}): a command was refused`);
  return { syncNs: median(syncs), tlbiNs: median(tlbis), invalidateNs: median(syncs.map((x, i) => (tlbis[i] ?? NaN) - x)), consumed };
}

/** VT-d on q35: t(N) - t(1) per descriptor for [page-selective IOTLB, wait with status write] pairs. */
async function vtdCase(q: Qtest, opts: Options): Promise<{ descNs: number; descriptors: number }> {
  const B = VTD_MMIO_BASE;
  await q.writeq(B + VTD_REG.IQA, encodeIqa(VTD_Q_GPA, VTD_Q_QS));
  await q.writel(B + VTD_REG.GCMD, GCMD_QIE);
  if (((await q.readl(B + VTD_REG.GSTS)) & GCMD_QIE) === 0) throw new VmmsimError('E_RUN', "QEMU's intel-iommu did not enable queued invalidation (GSTS.QIES clear)");
  let tail = 0; // descriptors written so far
  const pair = (i: number): VtdDescriptor[] => [
    { type: DescType.IOTLB, granularity: Granularity.DEVICE_OR_PAGE, dr: true, dw: true, did: 1, addr: 0x1_0000_0000 + (i % 65536) * 4096, ih: false, am: 0 },
    { type: DescType.WAIT, interrupt: false, statusWrite: true, fence: true, pageDrain: false, statusData: 1, statusAddr: VTD_STATUS_GPA },
  ];
  const submit = async (descs: VtdDescriptor[]): Promise<number> => {
    await q.write(VTD_Q_GPA + (tail % VTD_Q_ENTRIES) * DESC_SIZE, encodeDescriptors(descs));
    tail += descs.length;
    return q.timedWritel(B + VTD_REG.IQT, iqRegisterOf(tail % VTD_Q_ENTRIES));
  };
  // At most entries - 4 descriptors in flight: a tail that caught up with the head would read as empty.
  const pairs = Math.min(Math.floor(opts.commands / 2), VTD_Q_ENTRIES / 2 - 2);
  const batch = (n: number): VtdDescriptor[] => Array.from({ length: n }, (_, i) => pair(tail + i)).flat();
  const pad = async (n: number): Promise<void> => {
    const room = VTD_Q_ENTRIES - (tail % VTD_Q_ENTRIES);
    if (room < n) await submit(batch(room / 2));
  };
  const per: number[] = [];
  for (let r = 0; r < opts.reps + 5; r++) {
    await pad(pairs * 2 + 2);
    const m = await submit(batch(pairs));
    const o = await submit(batch(1));
    if (r >= 5) per.push((m - o) / (2 * pairs - 2));
  }
  const fsts = await q.readl(B + VTD_REG.FSTS);
  const iqh = await q.readl(B + VTD_REG.IQH);
  if (fsts !== 0 || iqh !== iqRegisterOf(tail % VTD_Q_ENTRIES)) throw new VmmsimError('E_RUN', `QEMU's intel-iommu stopped at IQH 0x${iqh.toString(16)} with FSTS 0x${fsts.toString(16)}: a descriptor was refused`);
  return { descNs: median(per), descriptors: tail };
}

function parseOptions(argv: string[]): Options | undefined {
  const a = benchArgs('qemu', USAGE, argv, {
    commands: { type: 'string' },
    reps: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (!a) return undefined;
  return {
    commands: a.values.commands === undefined ? 2048 : a.number('commands', a.values.commands, 16, 4096),
    reps: a.values.reps === undefined ? 41 : a.number('reps', a.values.reps, 5, 10_000),
    json: a.values.json === true,
  };
}

export async function qemuBench(argv: string[]): Promise<void> {
  const opts = parseOptions(argv);
  if (!opts) return;
  const arm = 'qemu-system-aarch64';
  const x86 = 'qemu-system-x86_64';
  const versions = { arm: qemuVersion(arm), x86: qemuVersion(x86) };
  if (!versions.arm || !versions.x86) {
    throw new VmmsimError('E_RUN', `${!versions.arm ? arm : x86} is not on PATH: this bench times QEMU's own device models`, 'install QEMU (Debian: apt-get install qemu-system-arm qemu-system-x86; bookworm-backports has 10.0) and rerun');
  }
  const progress = (s: string): void => void process.stderr.write(`bench qemu: ${s}\n`);
  progress(`${arm} ${versions.arm}: virt with iommu=smmuv3, ${opts.commands} commands per PROD write, ${opts.reps} writes per case`);
  let q = await Qtest.start(arm, ['-M', 'virt,iommu=smmuv3']);
  let smmu;
  try {
    smmu = await smmuCase(q, opts);
  } finally {
    q.close();
  }
  progress(`${x86} ${versions.x86}: q35 with intel-iommu, ${opts.commands} descriptors per IQT write`);
  q = await Qtest.start(x86, ['-M', 'q35', '-device', 'intel-iommu,intremap=off']);
  let vtd;
  try {
    vtd = await vtdCase(q, opts);
  } finally {
    q.close();
  }
  const r1 = (n: number): number => Math.round(n * 10) / 10;
  const result = {
    bench: 'qemu',
    qemu: versions,
    cpu: (await import('node:os')).cpus()[0]?.model ?? 'unknown',
    commandsPerWrite: opts.commands,
    reps: opts.reps,
    smmuv3: {
      // smmuv3_cmdq_consume per CMD_SYNC (CS=NONE): fetch, decode, dispatch.
      vsmmuCmdNs: r1(smmu.syncNs),
      // per TLBI_NH_VA (one page, TTL 3), whole.
      tlbiNhVaNs: r1(smmu.tlbiNs),
      // what the TLBI adds to a command: smmuv3_range_inval, smmu_iotlb_inv_iova, notifiers.
      iotlbInvalidateNs: r1(smmu.invalidateNs),
      commands: smmu.consumed,
    },
    vtd: {
      // vtd_fetch_inv_desc per descriptor of [IOTLB page-selective, wait with status write] pairs.
      descNs: r1(vtd.descNs),
      descriptors: vtd.descriptors,
    },
  };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  process.stdout.write(
    [
      `QEMU ${versions.arm} (aarch64) / ${versions.x86} (x86_64) on ${result.cpu}, per guest command (t(${opts.commands}) - t(1)) / ${opts.commands - 1}, medians of ${opts.reps} writes:`,
      `  vmm.vsmmu_cmd         smmuv3_cmdq_consume, one CMD_SYNC (CS=NONE)       ${result.smmuv3.vsmmuCmdNs.toFixed(1).padStart(8)} ns`,
      `                        one TLBI_NH_VA (4 KiB, TTL 3)                      ${result.smmuv3.tlbiNhVaNs.toFixed(1).padStart(8)} ns`,
      `  vmm.iotlb_invalidate  the TLBI's own work (smmuv3_range_inval)           ${result.smmuv3.iotlbInvalidateNs.toFixed(1).padStart(8)} ns`,
      `  vmm.vtd_desc          vtd_fetch_inv_desc, IOTLB page + wait(SW) pairs   ${result.vtd.descNs.toFixed(1).padStart(8)} ns`,
      '',
    ].join('\n'),
  );
}
