/**
 * `npm run bench -- qemu [--json] [--commands N] [--requests N] [--reps N]`: what QEMU's own
 * vIOMMU models cost per guest command, timed in a real QEMU driven through its qtest protocol (no
 * guest, no KVM: the harness writes guest RAM and the device's registers the way a guest driver
 * does). The figures are micro-cost sources for the VMM's steps (profiles/*.yaml cite them):
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
 *   vmm.virtio_req        hw/virtio/virtio-iommu.c virtio_iommu_handle_command per request, MAP and
 *                         UNMAP apart, on q35 with virtio-iommu-pci and an edu (or pci-testdev,
 *                         e1000e) device attached to domain 1 as its endpoint: virtqueue_pop
 *                         (virtqueue_split_pop: the head from the avail ring, the two descriptors,
 *                         virtqueue_map_desc of both buffers, vring_set_avail_event), the request
 *                         copied out (iov_to_buf) and switched on, virtio_iommu_map (g_tree_lookup
 *                         and g_tree_insert in the domain's interval tree) or virtio_iommu_unmap
 *                         (g_tree_lookup_extended and g_tree_remove), the tail written, virtqueue_push
 *                         and virtio_notify (no interrupt: used_event is kept behind, as Linux's
 *                         callback-less request queue does). No device has an IOMMU notifier (no
 *                         VFIO), so virtio_iommu_notify_map/unmap return at once: VFIO's own DMA map
 *                         is priced apart. Timed in two ring layouts, in turn within each repetition:
 *                          - indirect (what a Linux guest sends): each request ONE ring descriptor
 *                            with VRING_DESC_F_INDIRECT pointing at a 32-byte, 2-entry table in guest
 *                            RAM (the readable request with F_NEXT, then the writable tail), one
 *                            table per request. QEMU offers VIRTIO_RING_F_INDIRECT_DESC on every
 *                            virtio device (include/hw/virtio/virtio.h DEFINE_VIRTIO_COMMON_FEATURES:
 *                            "indirect_desc", default true); Linux keeps the bit
 *                            (vring_transport_features) and sets vq->indirect from it (unless the
 *                            queue has per-buffer context, which virtio-iommu's has not), and
 *                            virtqueue_add_split goes indirect whenever virtqueue_use_indirect
 *                            (vq->indirect && total_sg > 1 && vq->vq.num_free). Every virtio-iommu
 *                            request has two sg entries: __viommu_add_req (behind viommu_add_req,
 *                            which MAP and UNMAP use, and viommu_send_req_sync) calls
 *                            virtqueue_add_sgs(vq, sg, 1, 1, ...) with top_sg the request and
 *                            bottom_sg the tail. virtqueue_split_pop then does, per request, what a
 *                            direct chain does not: address_space_cache_init of the table,
 *                            vring_split_desc_read from it, address_space_cache_destroy.
 *                          - direct: each request a 2-descriptor chain in the ring (readable
 *                            request, writable tail), as a driver without INDIRECT_DESC sends it.
 *                         The same N (--requests) for both, so they compare. --json keeps the direct
 *                         figures under mapNs / unmapNs (and their IqrNs, MinMaxNs) and gives the
 *                         indirect ones as indirectMapNs / indirectUnmapNs (...), with
 *                         indirectMapExtraNs / indirectUnmapExtraNs the medians of each
 *                         repetition's indirect minus direct figure.
 *
 * One register write (CMDQ_PROD, IQT, the virtio-pci queue notify) makes QEMU consume every command
 * queued before it, so a write after N commands against a write after one gives the per-command time
 * with the qtest round trip taken out: (t(N) - t(1)) / (N - 1), the median over --reps repetitions
 * (CMD_SYNC and TLBI in turn; N MAPs, N UNMAPs, one MAP, one UNMAP in each ring layout, which of the
 * two goes first alternating between repetitions). virtio_iommu_handle_command
 * pops until the ring is empty. virtio-iommu-pci has never had an "ioeventfd" property (the devices
 * that want one, virtio-blk-pci and virtio-net-pci among them, define it themselves), so its
 * VIRTIO_PCI_FLAG_USE_IOEVENTFD stays clear, virtio_bus_start_ioeventfd does nothing, and
 * virtio_pci_notify_write -> virtio_queue_notify calls the handler inside the notify write itself,
 * in QEMU 7.2 as in 10.0 (`-device virtio-iommu-pci,ioeventfd=off` is refused: no such property).
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
import { percentileOfSorted } from '../services/runtime/samples.js';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, tlbiNhVa, type SmmuCommand } from '../services/formats/smmu/commands.js';
import * as Q from '../services/formats/smmu/queue.js';
import { SMMU_REG, VSMMU_MMIO_BASE } from '../services/formats/smmu/registers.js';
import { DESC_SIZE, DescType, Granularity, VTD_MMIO_BASE, VTD_REG, encodeDescriptors, encodeIqa, iqRegisterOf, type VtdDescriptor } from '../services/formats/vtd.js';
import {
  CONFIG_SIZE, MAP_F_READ, MAP_F_WRITE, ReqType, Status, TAIL_SIZE, VIRTIO_IOMMU_F_DOMAIN_RANGE, VIRTIO_IOMMU_F_INPUT_RANGE, VIRTIO_IOMMU_F_MAP_UNMAP,
  decodeConfig, encodeRequest, statusName, type DeviceConfig, type Request,
} from '../services/formats/virtio-iommu.js';
import { PAGE_SIZE } from '../services/formats/page.js';
import * as VQ from '../services/machine/virtqueue.js';

const USAGE = `usage: npm run bench -- qemu [options]

Per-command costs of QEMU's vSMMU (smmuv3_cmdq_consume), VT-d queued invalidation
(vtd_fetch_inv_desc) and virtio-iommu requests (virtio_iommu_handle_command, MAP and UNMAP),
timed in a real qemu-system-aarch64 and qemu-system-x86_64 through qtest. Needs both on PATH
(Debian: apt-get install qemu-system-arm qemu-system-x86); a qemu-system-x86_64 without
virtio-iommu-pci skips that case with a note.

options:
  --commands N   commands per timed register write (default 2048, at most 4096)
  --requests N   virtio-iommu requests per queue notify (default 127, at most 127: a 256-entry
                 queue holds 128 two-descriptor chains); the same N for both ring layouts timed:
                 indirect (one ring descriptor per request pointing at a 2-entry table, what a
                 Linux guest sends: QEMU offers VIRTIO_RING_F_INDIRECT_DESC, and Linux's
                 virtqueue_add_split goes indirect for any request of more than one sg entry,
                 virtqueue_use_indirect, as every virtio-iommu request is: __viommu_add_req's
                 virtqueue_add_sgs(vq, sg, 1, 1, ...)) and direct (2-descriptor chains)
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
  requests: number;
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

  private async value(line: string): Promise<number> {
    return Number((await this.cmd(line)).split(' ')[1]);
  }

  async readb(addr: number): Promise<number> {
    return this.value(`readb 0x${addr.toString(16)}`);
  }

  async readw(addr: number): Promise<number> {
    return this.value(`readw 0x${addr.toString(16)}`);
  }

  async readl(addr: number): Promise<number> {
    return this.value(`readl 0x${addr.toString(16)}`);
  }

  async writeb(addr: number, v: number): Promise<void> {
    await this.cmd(`writeb 0x${addr.toString(16)} 0x${(v & 0xff).toString(16)}`);
  }

  async writew(addr: number, v: number): Promise<void> {
    await this.cmd(`writew 0x${addr.toString(16)} 0x${(v & 0xffff).toString(16)}`);
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

  async read(addr: number, len: number): Promise<Buffer> {
    return Buffer.from((await this.cmd(`b64read 0x${addr.toString(16)} 0x${len.toString(16)}`)).split(' ')[1] ?? '', 'base64');
  }

  async inl(port: number): Promise<number> {
    return (await this.value(`inl 0x${port.toString(16)}`)) >>> 0;
  }

  async outl(port: number, v: number): Promise<void> {
    await this.cmd(`outl 0x${port.toString(16)} 0x${(v >>> 0).toString(16)}`);
  }

  /** The time one register write takes to be answered (QEMU handles it before it replies). */
  async timedWritel(addr: number, v: number): Promise<number> {
    const t0 = nowNs();
    await this.writel(addr, v);
    return nowNs() - t0;
  }

  async timedWritew(addr: number, v: number): Promise<number> {
    const t0 = nowNs();
    await this.writew(addr, v);
    return nowNs() - t0;
  }

  /** Kills QEMU and waits for it to be reaped (a bench that exits at once would leave a zombie for init). */
  async close(): Promise<void> {
    this.sock.destroy();
    const exited = this.child.exitCode !== null || this.child.signalCode !== null ? Promise.resolve() : new Promise<void>((res) => this.child.once('exit', () => res()));
    this.child.kill('SIGKILL');
    await Promise.race([exited, new Promise<void>((res) => setTimeout(res, 5_000).unref())]);
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

/** virtio-iommu on q35: where the IOMMU and its endpoint sit on pcie.0 (the endpoint's id is its BDF). */
const VIOMMU_SLOT = 3;
const ENDPOINT_SLOT = 4;
/** Any PCI device QEMU puts behind the IOMMU can be the endpoint; the first the binary has is used. */
const ENDPOINT_DEVICES = ['edu', 'pci-testdev', 'e1000e'];
/** virtio-iommu-pci: the virtio vendor and the modern device id, 0x1040 + VIRTIO_ID_IOMMU (23). */
const VIRTIO_PCI_VENDOR = 0x1af4;
const VIRTIO_IOMMU_PCI_DEVICE = 0x1040 + 23;
/** Its memory BAR in q35's 32-bit PCI hole, and its request queue in guest RAM (q35 RAM starts at 0). */
const VIOMMU_BAR_GPA = 0xe000_0000;
const VIOMMU_VQ_GPA = 0x1000_0000;
/** One request buffer per chain: the largest request (MAP, 40 bytes with its tail), rounded up. */
const REQ_SLOT = 64;
/** One indirect table per request: the request's two descriptors (Linux's alloc_indirect_split of total_sg = 2). */
const INDIRECT_TABLE = 2 * VQ.DESC_SIZE;
const VIOMMU_DOMAIN = 1;
const IOVA_BASE = 0x1_0000_0000n;
const PA_BASE = 0x0800_0000n;

/** PCI configuration mechanism #1 (CONFIG_ADDRESS, CONFIG_DATA), which q35 keeps beside MMCONFIG. */
const PCI_CONFIG_ADDRESS = 0xcf8;
const PCI_CONFIG_DATA = 0xcfc;
const PCI_ID = 0x00;
const PCI_COMMAND = 0x04;
const PCI_BAR0 = 0x10;
const PCI_CAPABILITY_LIST = 0x34;
/** PCI_STATUS_CAP_LIST, in the dword that holds COMMAND and STATUS. */
const PCI_STATUS_CAP_LIST = 1 << (16 + 4);
const PCI_COMMAND_MEMORY = 1 << 1;
const PCI_COMMAND_MASTER = 1 << 2;
const PCI_CAP_ID_VNDR = 0x09;

/** virtio-pci modern (virtio 1.x 4.1.4): struct virtio_pci_cap's cfg_type and struct virtio_pci_common_cfg. */
const VirtioPciCap = { COMMON: 1, NOTIFY: 2, DEVICE: 4 } as const;
const COMMON = { DFSELECT: 0x00, DF: 0x04, GFSELECT: 0x08, GF: 0x0c, STATUS: 0x14, Q_SELECT: 0x16, Q_SIZE: 0x18, Q_ENABLE: 0x1c, Q_NOTIFY_OFF: 0x1e, Q_DESC: 0x20, Q_DRIVER: 0x28, Q_DEVICE: 0x30 } as const;
const DevStatus = { ACKNOWLEDGE: 1, DRIVER: 2, DRIVER_OK: 4, FEATURES_OK: 8, NEEDS_RESET: 0x40, FAILED: 0x80 } as const;
const VIRTIO_RING_F_INDIRECT_DESC = 28;
const VIRTIO_RING_F_EVENT_IDX = 29;
const VIRTIO_F_VERSION_1 = 32;
const REQUESTQ = 0;

const bit = (n: number): bigint => 1n << BigInt(n);
const hex = (n: number | bigint): string => `0x${n.toString(16)}`;
const pageUp = (n: number): number => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;

async function pciRead(q: Qtest, bdf: number, reg: number): Promise<number> {
  await q.outl(PCI_CONFIG_ADDRESS, 0x8000_0000 | (bdf << 8) | (reg & 0xfc));
  return q.inl(PCI_CONFIG_DATA);
}

async function pciWrite(q: Qtest, bdf: number, reg: number, v: number): Promise<void> {
  await q.outl(PCI_CONFIG_ADDRESS, 0x8000_0000 | (bdf << 8) | (reg & 0xfc));
  await q.outl(PCI_CONFIG_DATA, v);
}

/** Sizes a memory BAR, puts it at the first multiple of its size from `at`, and returns its address and size. */
async function placeBar(q: Qtest, bdf: number, bar: number, at: number): Promise<{ addr: number; size: number }> {
  const reg = PCI_BAR0 + 4 * bar;
  const orig = await pciRead(q, bdf, reg);
  if (orig & 1) throw new VmmsimError('E_RUN', `BAR ${bar} of the virtio-iommu is an I/O BAR: a virtio 1.x capability points into it`);
  const is64 = ((orig >>> 1) & 3) === 2;
  await pciWrite(q, bdf, reg, 0xffff_ffff);
  const mask = (await pciRead(q, bdf, reg)) & ~0xf;
  const size = (~mask + 1) >>> 0;
  if (mask === 0 || size > 0x1000_0000) throw new VmmsimError('E_RUN', `BAR ${bar} of the virtio-iommu sizes as ${hex(mask >>> 0)}: not a memory BAR this bench can place below 4 GiB`);
  const addr = Math.ceil(at / size) * size;
  await pciWrite(q, bdf, reg, addr);
  if (is64) await pciWrite(q, bdf, reg + 4, 0);
  return { addr, size };
}

/** The virtio-pci regions the driver uses, found by walking the vendor capabilities, with their BARs placed. */
async function virtioPciRegions(q: Qtest, bdf: number): Promise<{ common: number; notify: number; notifyMultiplier: number; device: number }> {
  if (((await pciRead(q, bdf, PCI_COMMAND)) & PCI_STATUS_CAP_LIST) === 0) throw new VmmsimError('E_RUN', 'the virtio-iommu has no PCI capability list');
  const caps = new Map<number, { bar: number; offset: number; multiplier: number }>();
  let at = (await pciRead(q, bdf, PCI_CAPABILITY_LIST)) & 0xfc;
  for (let guard = 0; at !== 0 && guard < 48; guard++) {
    const head = await pciRead(q, bdf, at);
    const type = head >>> 24;
    if ((head & 0xff) === PCI_CAP_ID_VNDR && !caps.has(type)) {
      const bar = (await pciRead(q, bdf, at + 4)) & 0xff;
      const offset = await pciRead(q, bdf, at + 8);
      const multiplier = type === VirtioPciCap.NOTIFY ? await pciRead(q, bdf, at + 16) : 0;
      caps.set(type, { bar, offset, multiplier });
    }
    at = (head >>> 8) & 0xfc;
  }
  const need = (type: number, name: string): { bar: number; offset: number; multiplier: number } => {
    const c = caps.get(type);
    if (!c) throw new VmmsimError('E_RUN', `the virtio-iommu has no virtio ${name} capability (cfg_type ${type}): not a virtio 1.x device`);
    return c;
  };
  const common = need(VirtioPciCap.COMMON, 'common configuration');
  const notify = need(VirtioPciCap.NOTIFY, 'notification');
  const device = need(VirtioPciCap.DEVICE, 'device configuration');
  const bars = new Map<number, number>();
  let next = VIOMMU_BAR_GPA;
  for (const bar of new Set([common.bar, notify.bar, device.bar])) {
    const placed = await placeBar(q, bdf, bar, next);
    bars.set(bar, placed.addr);
    next = placed.addr + placed.size;
  }
  await pciWrite(q, bdf, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  const addr = (c: { bar: number; offset: number }): number => (bars.get(c.bar) ?? 0) + c.offset;
  return { common: addr(common), notify: addr(notify), notifyMultiplier: notify.multiplier, device: addr(device) };
}

/**
 * The driver's side of virtio 1.x initialisation (3.1.1), as Linux's virtio_pci_modern does it:
 * reset, ACKNOWLEDGE, DRIVER, the features (VERSION_1 and MAP_UNMAP needed; INPUT_RANGE,
 * DOMAIN_RANGE, INDIRECT_DESC and EVENT_IDX taken when offered, as Linux takes them), FEATURES_OK,
 * the request queue's rings, DRIVER_OK. The event queue is left disabled: nothing here faults.
 * `buffers` is guest RAM past the rings for the requests (one REQ_SLOT per ring entry), then the
 * indirect tables at `tables` (one INDIRECT_TABLE per ring entry).
 */
async function virtioIommuInit(q: Qtest, bdf: number): Promise<{ config: DeviceConfig; layout: VQ.VirtqueueLayout; buffers: number; tables: number; indirect: boolean; notify: number; status: () => Promise<number> }> {
  const r = await virtioPciRegions(q, bdf);
  const c = r.common;
  const status = (): Promise<number> => q.readb(c + COMMON.STATUS);
  await q.writeb(c + COMMON.STATUS, 0);
  if ((await status()) !== 0) throw new VmmsimError('E_RUN', "QEMU's virtio-iommu did not reset (device_status not 0 after writing 0)");
  let st = DevStatus.ACKNOWLEDGE | DevStatus.DRIVER;
  await q.writeb(c + COMMON.STATUS, DevStatus.ACKNOWLEDGE);
  await q.writeb(c + COMMON.STATUS, st);
  let offered = 0n;
  for (const sel of [0, 1]) {
    await q.writel(c + COMMON.DFSELECT, sel);
    offered |= BigInt(await q.readl(c + COMMON.DF)) << BigInt(32 * sel);
  }
  const needed = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_IOMMU_F_MAP_UNMAP);
  if ((offered & needed) !== needed) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu offers features ${hex(offered)}, without VIRTIO_F_VERSION_1 or VIRTIO_IOMMU_F_MAP_UNMAP`);
  const accepted = offered & (needed | bit(VIRTIO_IOMMU_F_INPUT_RANGE) | bit(VIRTIO_IOMMU_F_DOMAIN_RANGE) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX));
  for (const sel of [0, 1]) {
    await q.writel(c + COMMON.GFSELECT, sel);
    await q.writel(c + COMMON.GF, Number((accepted >> BigInt(32 * sel)) & 0xffff_ffffn));
  }
  st |= DevStatus.FEATURES_OK;
  await q.writeb(c + COMMON.STATUS, st);
  if (((await status()) & DevStatus.FEATURES_OK) === 0) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu refused features ${hex(accepted)} (FEATURES_OK did not stick)`);
  const raw = Buffer.alloc(CONFIG_SIZE);
  for (let i = 0; i < CONFIG_SIZE; i += 4) raw.writeUInt32LE((await q.readl(r.device + i)) >>> 0, i);
  const config = decodeConfig(raw);
  await q.writew(c + COMMON.Q_SELECT, REQUESTQ);
  const size = await q.readw(c + COMMON.Q_SIZE);
  if (size < 4 || (size & (size - 1)) !== 0) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu request queue has ${size} entries`);
  const desc = VIOMMU_VQ_GPA;
  const avail = desc + pageUp(VQ.descTableBytes(size));
  const used = avail + pageUp(VQ.availRingBytes(size));
  const layout: VQ.VirtqueueLayout = { size, desc, avail, used };
  await q.writew(c + COMMON.Q_SIZE, size);
  for (const [reg, gpa] of [[COMMON.Q_DESC, desc], [COMMON.Q_DRIVER, avail], [COMMON.Q_DEVICE, used]] as const) {
    await q.writel(c + reg, gpa);
    await q.writel(c + reg + 4, 0);
  }
  const notify = r.notify + (await q.readw(c + COMMON.Q_NOTIFY_OFF)) * r.notifyMultiplier;
  await q.writew(c + COMMON.Q_ENABLE, 1);
  st |= DevStatus.DRIVER_OK;
  await q.writeb(c + COMMON.STATUS, st);
  if (((await status()) & (DevStatus.NEEDS_RESET | DevStatus.FAILED)) !== 0) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu set device_status ${hex(await status())} at DRIVER_OK`);
  const buffers = used + pageUp(VQ.usedRingBytes(size));
  const tables = buffers + pageUp(size * REQ_SLOT);
  return { config, layout, buffers, tables, indirect: (accepted & bit(VIRTIO_RING_F_INDIRECT_DESC)) !== 0n, notify, status };
}

function describeRequest(r: Request): string {
  switch (r.type) {
    case ReqType.ATTACH:
      return `ATTACH endpoint ${hex(r.endpoint)} to domain ${r.domain}`;
    case ReqType.MAP:
      return `MAP domain ${r.domain} [${hex(r.virtStart)}, ${hex(r.virtEnd)}] -> ${hex(r.physStart)}`;
    case ReqType.UNMAP:
      return `UNMAP domain ${r.domain} [${hex(r.virtStart)}, ${hex(r.virtEnd)}]`;
    default:
      return `request type ${r.type}`;
  }
}

/** One figure from its --reps samples: the median, the quartiles and the extremes (ns, to 0.1). */
interface Figure {
  ns: number;
  iqr: [number, number];
  minMax: [number, number];
}

function figure(samples: readonly number[]): Figure {
  const r1 = (n: number): number => Math.round(n * 10) / 10;
  const sorted = [...samples].sort((a, b) => a - b);
  return { ns: r1(median(sorted)), iqr: [r1(percentileOfSorted(sorted, 25)), r1(percentileOfSorted(sorted, 75))], minMax: [r1(sorted[0] ?? NaN), r1(sorted[sorted.length - 1] ?? NaN)] };
}

/** How a request sits in the ring: one VRING_DESC_F_INDIRECT descriptor per request (Linux), or a 2-descriptor chain. */
type RingLayout = 'indirect' | 'direct';

/** MAP and UNMAP per request in one ring layout. */
interface LayoutFigures {
  map: Figure;
  unmap: Figure;
  /** Requests of this layout completed, each OK (warm-up included). */
  requests: number;
}

interface ViommuResult {
  /** 2-descriptor chains; `requests` also counts the ATTACH (sent as one). */
  direct: LayoutFigures;
  /** One indirect descriptor per request; undefined when the device does not offer INDIRECT_DESC. */
  indirect: LayoutFigures | undefined;
  /** Medians of each repetition's indirect minus direct figure (the two are timed in turn). */
  indirectExtra: { mapNs: number; unmapNs: number } | undefined;
  perNotify: number;
  pageSize: number;
  endpoint: number;
}

/**
 * virtio-iommu on q35: the endpoint attached to one domain, then per repetition, for each ring
 * layout in turn (the order alternating between repetitions), N MAPs, N UNMAPs of the same ranges,
 * one MAP, one UNMAP, each batch one queue notify, timed; every request is checked (used.idx
 * advanced by the batch, each used element its head, each tail OK).
 */
async function viommuCase(q: Qtest, opts: Options): Promise<ViommuResult> {
  const viommuBdf = VIOMMU_SLOT << 3;
  const endpoint = ENDPOINT_SLOT << 3;
  const id = await pciRead(q, viommuBdf, PCI_ID);
  if (id !== ((VIRTIO_IOMMU_PCI_DEVICE << 16) | VIRTIO_PCI_VENDOR) >>> 0) throw new VmmsimError('E_RUN', `00:${VIOMMU_SLOT.toString(16).padStart(2, '0')}.0 has PCI id ${hex(id)}, not virtio-iommu-pci's 1af4:1057`);
  if ((await pciRead(q, endpoint, PCI_ID)) === 0xffff_ffff) throw new VmmsimError('E_RUN', `no endpoint device at 00:${ENDPOINT_SLOT.toString(16).padStart(2, '0')}.0`);
  const dev = await virtioIommuInit(q, viommuBdf);
  const L = dev.layout;
  // The direct layout bounds N (two ring entries a request); the indirect one would take size - 1.
  const maxChains = L.size / 2 - 1;
  if (opts.requests > maxChains) throw new VmmsimError('E_USAGE', `--requests ${opts.requests} does not fit QEMU's ${L.size}-entry virtio-iommu queue (at most ${maxChains} two-descriptor chains)`);
  // The smallest page the device maps, and N of them from IOVA_BASE inside its input range.
  const page = dev.config.pageSizeMask & -dev.config.pageSizeMask;
  if (page === 0n || page > 0x1_0000_0000n) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu reports page_size_mask ${hex(dev.config.pageSizeMask)}`);
  const iovaBase = IOVA_BASE > dev.config.inputStart ? IOVA_BASE : dev.config.inputStart;
  if (iovaBase + BigInt(opts.requests) * page - 1n > dev.config.inputEnd) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu input range [${hex(dev.config.inputStart)}, ${hex(dev.config.inputEnd)}] is too small for ${opts.requests} pages`);
  if (VIOMMU_DOMAIN < dev.config.domainStart || VIOMMU_DOMAIN > dev.config.domainEnd) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu domain range [${dev.config.domainStart}, ${dev.config.domainEnd}] excludes domain ${VIOMMU_DOMAIN}`);

  let availIdx = 0;
  const completed: Record<RingLayout, number> = { direct: 0, indirect: 0 };
  /**
   * Queues the requests, notifies once, and returns the notify write's time. Direct: request k is
   * the chain of descriptors 2k (readable request, F_NEXT) and 2k+1 (writable tail), head 2k.
   * Indirect: request k is descriptor k (F_INDIRECT, the 32 bytes of table k), head k, and table k
   * holds the same two descriptors, the first's next 1 (an index into the table).
   */
  const submit = async (reqs: Request[], layout: RingLayout): Promise<number> => {
    const n = reqs.length;
    const perReq = layout === 'direct' ? 2 : 1;
    const headOf = (k: number): number => perReq * k;
    const descs = Buffer.alloc(perReq * n * VQ.DESC_SIZE);
    const tables = Buffer.alloc(layout === 'indirect' ? n * INDIRECT_TABLE : 0);
    const bufs = Buffer.alloc(n * REQ_SLOT);
    const whole = reqs.map((r) => encodeRequest(r));
    whole.forEach((b, k) => {
      const gpa = dev.buffers + k * REQ_SLOT;
      const readable = b.length - TAIL_SIZE;
      b.copy(bufs, k * REQ_SLOT);
      if (layout === 'direct') {
        VQ.encodeDescriptor({ addr: gpa, len: readable, flags: VQ.VRING_DESC_F_NEXT, next: 2 * k + 1 }).copy(descs, 2 * k * VQ.DESC_SIZE);
        VQ.encodeDescriptor({ addr: gpa + readable, len: TAIL_SIZE, flags: VQ.VRING_DESC_F_WRITE, next: 0 }).copy(descs, (2 * k + 1) * VQ.DESC_SIZE);
      } else {
        VQ.encodeIndirectTable([
          { addr: gpa, len: readable, flags: VQ.VRING_DESC_F_NEXT, next: 1 },
          { addr: gpa + readable, len: TAIL_SIZE, flags: VQ.VRING_DESC_F_WRITE, next: 0 },
        ]).copy(tables, k * INDIRECT_TABLE);
        VQ.encodeDescriptor({ addr: dev.tables + k * INDIRECT_TABLE, len: INDIRECT_TABLE, flags: VQ.VRING_DESC_F_INDIRECT, next: 0 }).copy(descs, k * VQ.DESC_SIZE);
      }
    });
    // The avail ring whole: NO_INTERRUPT, the new idx, the heads, and used_event one behind the
    // used index, so virtio_notify's vring_need_event is false for every push of the batch (only
    // the very first push, the ATTACH, is always signalled): no interrupt, as for Linux's request
    // queue, which has no callback.
    const avail = Buffer.alloc(VQ.availRingBytes(L.size));
    avail.writeUInt16LE(VQ.VRING_AVAIL_F_NO_INTERRUPT, 0);
    for (let k = 0; k < n; k++) avail.writeUInt16LE(headOf(k), VQ.avail.ring(L, VQ.idxAdd(availIdx, k)) - L.avail);
    const before = availIdx; // used.idx equals avail.idx between batches
    availIdx = VQ.idxAdd(availIdx, n);
    avail.writeUInt16LE(availIdx, 2);
    avail.writeUInt16LE(VQ.idxAdd(before, -1), VQ.avail.usedEvent(L) - L.avail);
    await q.write(L.desc, descs);
    if (tables.length > 0) await q.write(dev.tables, tables);
    await q.write(dev.buffers, bufs);
    await q.write(L.avail, avail);
    const t = await q.timedWritew(dev.notify, REQUESTQ);
    const usedIdx = await q.readw(VQ.used.idx(L));
    if (usedIdx !== availIdx) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu used ${VQ.idxDiff(usedIdx, before)} of ${n} requests (${layout} descriptors, device_status ${hex(await dev.status())}): it stopped at ${describeRequest(reqs[VQ.idxDiff(usedIdx, before)] ?? reqs[0]!)}`);
    const usedRing = await q.read(L.used, VQ.usedRingBytes(L.size));
    const tails = await q.read(dev.buffers, n * REQ_SLOT);
    for (let k = 0; k < n; k++) {
      const at = VQ.used.elem(L, VQ.idxAdd(before, k)) - L.used;
      const head = usedRing.readUInt32LE(at);
      const len = usedRing.readUInt32LE(at + 4);
      const size = whole[k]?.length ?? 0;
      const st = tails.readUInt8(k * REQ_SLOT + size - TAIL_SIZE);
      if (head !== headOf(k) || len !== TAIL_SIZE || st !== Status.OK) {
        throw new VmmsimError('E_RUN', `QEMU's virtio-iommu answered ${statusName(st)} (used element id ${head}, len ${len}; ${layout} descriptors) to ${describeRequest(reqs[k]!)}, request ${k + 1} of ${n}`, "vmmsim's virtio-iommu request format (services/formats/virtio-iommu.ts) or descriptor layout and QEMU's decoder disagree, or the endpoint is not behind the IOMMU: compare the request with QEMU's hw/virtio/virtio-iommu.c and hw/virtio/virtio.c virtqueue_split_pop");
      }
    }
    completed[layout] += n;
    return t;
  };

  await submit([{ type: ReqType.ATTACH, domain: VIOMMU_DOMAIN, endpoint, flags: 0, reserved: Buffer.alloc(4) }], 'direct');
  const range = (i: number): { virtStart: bigint; virtEnd: bigint } => ({ virtStart: iovaBase + BigInt(i) * page, virtEnd: iovaBase + BigInt(i + 1) * page - 1n });
  const map = (i: number): Request => ({ type: ReqType.MAP, domain: VIOMMU_DOMAIN, ...range(i), physStart: PA_BASE + BigInt(i) * page, flags: MAP_F_READ | MAP_F_WRITE });
  const unmap = (i: number): Request => ({ type: ReqType.UNMAP, domain: VIOMMU_DOMAIN, ...range(i) });
  const n = opts.requests;
  const all = Array.from({ length: n }, (_, i) => i);
  /** One repetition's per-request MAP and UNMAP in one layout; the domain's tree is empty again after it. */
  const sample = async (layout: RingLayout): Promise<{ map: number; unmap: number }> => {
    const mapMany = await submit(all.map(map), layout);
    const unmapMany = await submit(all.map(unmap), layout); // the domain's tree holds n mappings at its start
    const mapOne = await submit([map(0)], layout);
    const unmapOne = await submit([unmap(0)], layout);
    return { map: (mapMany - mapOne) / (n - 1), unmap: (unmapMany - unmapOne) / (n - 1) };
  };
  const layouts: RingLayout[] = dev.indirect ? ['direct', 'indirect'] : ['direct'];
  const samples: Record<RingLayout, { map: number[]; unmap: number[] }> = { direct: { map: [], unmap: [] }, indirect: { map: [], unmap: [] } };
  for (let r = 0; r < opts.reps + 5; r++) {
    // Both layouts in each repetition, first one then the other, so neither always follows the other.
    for (const layout of r % 2 === 0 ? layouts : [...layouts].reverse()) {
      const s = await sample(layout);
      if (r < 5) continue; // warm-up
      samples[layout].map.push(s.map);
      samples[layout].unmap.push(s.unmap);
    }
  }
  const st = await dev.status();
  if ((st & (DevStatus.NEEDS_RESET | DevStatus.FAILED)) !== 0) throw new VmmsimError('E_RUN', `QEMU's virtio-iommu ended with device_status ${hex(st)}`);
  const figures = (layout: RingLayout): LayoutFigures => ({ map: figure(samples[layout].map), unmap: figure(samples[layout].unmap), requests: completed[layout] });
  const extra = (kind: 'map' | 'unmap'): number => Math.round(median(samples.indirect[kind].map((x, i) => x - (samples.direct[kind][i] ?? NaN))) * 10) / 10;
  return {
    direct: figures('direct'),
    indirect: dev.indirect ? figures('indirect') : undefined,
    indirectExtra: dev.indirect ? { mapNs: extra('map'), unmapNs: extra('unmap') } : undefined,
    perNotify: n,
    pageSize: Number(page),
    endpoint,
  };
}

function viommuLine(label: string, f: Figure): string {
  return `${label.padEnd(74)}${f.ns.toFixed(1).padStart(8)} ns  (quartiles ${f.iqr[0]}..${f.iqr[1]}, extremes ${f.minMax[0]}..${f.minMax[1]})`;
}

/** The -device names a QEMU binary knows. */
function qemuDevices(binary: string): Set<string> {
  const r = spawnSync(binary, ['-device', 'help'], { encoding: 'utf8' });
  return new Set([...`${r.stdout}${r.stderr}`.matchAll(/name "([^"]+)"/g)].map((m) => m[1] ?? ''));
}

function parseOptions(argv: string[]): Options | undefined {
  const a = benchArgs('qemu', USAGE, argv, {
    commands: { type: 'string' },
    requests: { type: 'string' },
    reps: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (!a) return undefined;
  return {
    commands: a.values.commands === undefined ? 2048 : a.number('commands', a.values.commands, 16, 4096),
    requests: a.values.requests === undefined ? 127 : a.number('requests', a.values.requests, 8, 127),
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
    await q.close();
  }
  progress(`${x86} ${versions.x86}: q35 with intel-iommu, ${opts.commands} descriptors per IQT write`);
  q = await Qtest.start(x86, ['-M', 'q35', '-device', 'intel-iommu,intremap=off']);
  let vtd;
  try {
    vtd = await vtdCase(q, opts);
  } finally {
    await q.close();
  }
  // virtio-iommu: a third QEMU (q35 takes one vIOMMU), skipped when the binary lacks the device.
  const devices = qemuDevices(x86);
  const endpointDevice = ENDPOINT_DEVICES.find((d) => devices.has(d));
  let viommu: ViommuResult | undefined;
  let viommuSkipped: string | undefined;
  if (!devices.has('virtio-iommu-pci')) viommuSkipped = `${x86} ${versions.x86} has no virtio-iommu-pci device`;
  else if (!endpointDevice) viommuSkipped = `${x86} ${versions.x86} has none of ${ENDPOINT_DEVICES.join(', ')} to attach as the endpoint`;
  else {
    progress(`${x86} ${versions.x86}: q35 with virtio-iommu-pci and ${endpointDevice} as its endpoint, ${opts.requests} requests per queue notify, as indirect descriptors and as 2-descriptor chains`);
    q = await Qtest.start(x86, ['-M', 'q35', '-device', `virtio-iommu-pci,addr=${hex(VIOMMU_SLOT)}`, '-device', `${endpointDevice},addr=${hex(ENDPOINT_SLOT)}`]);
    try {
      viommu = await viommuCase(q, opts);
    } finally {
      await q.close();
    }
  }
  if (viommuSkipped) progress(`virtio-iommu skipped: ${viommuSkipped}`);
  const indirectSkipped = viommu && !viommu.indirect ? "QEMU's virtio-iommu does not offer VIRTIO_RING_F_INDIRECT_DESC (indirect_desc=off?), so a guest would send 2-descriptor chains" : undefined;
  if (indirectSkipped) progress(`virtio-iommu indirect descriptors skipped: ${indirectSkipped}`);
  const r1 = (n: number): number => Math.round(n * 10) / 10;
  const endpointName = viommu ? `${endpointDevice ?? ''} 00:${(viommu.endpoint >> 3).toString(16).padStart(2, '0')}.0` : '';
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
    virtioIommu: viommu
      ? {
          // virtio_iommu_handle_command per MAP / UNMAP request of one page, each request a
          // 2-descriptor chain in the ring (direct): the median of the --reps samples, their
          // quartiles and their extremes (a sample is one repetition's (t(N) - t(1)) / (N - 1): a
          // hiccup of either write makes an extreme, even a negative one).
          mapNs: viommu.direct.map.ns,
          mapIqrNs: viommu.direct.map.iqr,
          mapMinMaxNs: viommu.direct.map.minMax,
          unmapNs: viommu.direct.unmap.ns,
          unmapIqrNs: viommu.direct.unmap.iqr,
          unmapMinMaxNs: viommu.direct.unmap.minMax,
          // What a Linux guest sends: one VRING_DESC_F_INDIRECT ring descriptor per request, at a
          // 2-entry table (virtqueue_use_indirect: INDIRECT_DESC negotiated and total_sg 2 > 1).
          linuxRingLayout: 'indirect',
          ...(viommu.indirect && viommu.indirectExtra
            ? {
                // The same figures with each request one indirect descriptor (same N, same
                // repetitions, the two layouts timed in turn), and the median of each
                // repetition's indirect minus direct figure.
                indirectMapNs: viommu.indirect.map.ns,
                indirectMapIqrNs: viommu.indirect.map.iqr,
                indirectMapMinMaxNs: viommu.indirect.map.minMax,
                indirectUnmapNs: viommu.indirect.unmap.ns,
                indirectUnmapIqrNs: viommu.indirect.unmap.iqr,
                indirectUnmapMinMaxNs: viommu.indirect.unmap.minMax,
                indirectMapExtraNs: viommu.indirectExtra.mapNs,
                indirectUnmapExtraNs: viommu.indirectExtra.unmapNs,
                // indirect requests completed, each with status OK (the warm-up included)
                indirectRequests: viommu.indirect.requests,
              }
            : { indirectSkipped }),
          requestsPerNotify: viommu.perNotify,
          // the mappings in the domain's tree when the UNMAP batch starts (0 to N during the MAPs)
          mappingsAtUnmap: viommu.perNotify,
          pageBytes: viommu.pageSize,
          endpoint: endpointName,
          // direct requests completed, each with status OK: the ATTACH and the warm-up included
          requests: viommu.direct.requests,
        }
      : { skipped: viommuSkipped },
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
      ...(viommu
        ? [
            `  vmm.virtio_req        virtio_iommu_handle_command, per request:`,
            ...(viommu.indirect && viommu.indirectExtra
              ? [
                  `                        as one indirect descriptor (a 2-entry table), as a Linux guest sends it:`,
                  viommuLine(`                          one MAP (${viommu.pageSize / 1024} KiB)`, viommu.indirect.map),
                  viommuLine(`                          one UNMAP (${viommu.perNotify} mappings in the tree at first)`, viommu.indirect.unmap),
                ]
              : [`                        indirect descriptors skipped: ${indirectSkipped ?? ''}`]),
            `                        as a 2-descriptor chain in the ring (a driver without INDIRECT_DESC):`,
            viommuLine(`                          one MAP (${viommu.pageSize / 1024} KiB)`, viommu.direct.map),
            viommuLine(`                          one UNMAP (${viommu.perNotify} mappings in the tree at first)`, viommu.direct.unmap),
            ...(viommu.indirectExtra ? [`                        indirect minus direct, median of the repetitions: MAP ${viommu.indirectExtra.mapNs.toFixed(1)} ns, UNMAP ${viommu.indirectExtra.unmapNs.toFixed(1)} ns`] : []),
            `                        (t(${viommu.perNotify}) - t(1)) / ${viommu.perNotify - 1}, one queue notify per batch; ${viommu.direct.requests + (viommu.indirect?.requests ?? 0)} requests, all OK; endpoint ${endpointName}`,
          ]
        : [`  vmm.virtio_req        skipped: ${viommuSkipped ?? ''}`]),
      '',
    ].join('\n'),
  );
}
