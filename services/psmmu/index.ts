import { Errno } from '../runtime/errors.js';
import type { StartReply } from '../runtime/generated/vmmsim/v1/StartReply.js';
import type { OpContext } from '../runtime/op-context.js';
import { DeviceDma } from '../machine/device-dma.js';
import { Random } from '../machine/random.js';
import { EMPTY, type HandlerResult, type RoleEnv, type RoleInstance, type Request } from '../runtime/role-api.js';
import { decodeMmio, encodeMmio } from '../formats/kvm-run.js';
import { CMD_SIZE } from '../formats/smmu/commands.js';
import { decodeTceKill } from '../formats/spapr-tce.js';
import { PAGE_SIZE } from '../machine/memory.js';
import * as Q from '../formats/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG, psmmuIdr } from '../formats/smmu/registers.js';
import type { Endpoint } from '../runtime/topology.js';
import { AtcInvalidations } from '../../worker-pool/atc-invalidations.js';
import { ConfigInvalidations } from '../../worker-pool/config-invalidations.js';
import { Iotlb } from '../../worker-pool/iotlb.js';
import { AddressSpace, HostPhysical } from './address-space.js';
import { PhysicalCmdq } from './cmdq.js';
import { EventQueue } from './events.js';
import type { PsmmuMetrics, PsmmuState } from './metrics.js';
import { scopeConcerns } from './relevance.js';
import { Translator } from './translate.js';
import { VintfPage } from './vintf.js';
import { designOf } from '../designs/registry.js';

/** Main CMDQ size (Linux asks for the largest the SMMU offers; 2^8 keeps wrap-around frequent). */
const CMDQ_LOG2 = 8;
const DEFAULT_IOTLB_ENTRIES = 2048;

/** psmmu-K: one physical SMMUv3 with its command queue, IOTLB, walker, event queue and devices. */
class PsmmuRole implements RoleInstance {
  private readonly iotlb: Iotlb;
  private readonly space: AddressSpace;
  private readonly events = new EventQueue();
  private readonly translator: Translator;
  private readonly cmdq: PhysicalCmdq;
  private readonly dma: DeviceDma;
  private readonly vintf: VintfPage;
  private readonly counters = { submissions: 0, commands: 0, wasted: 0, syncs: 0, atcSyncs: 0, errors: 0, tceKills: 0 };
  private readonly name: string;
  /** Bare metal (design host): the guest process is the host kernel, which drives this SMMU directly. */
  private readonly bareMetal: boolean;
  /** Range invalidation (IDR3.RIL; smmu.ril). */
  private readonly ril: boolean;
  private readonly metrics: PsmmuMetrics | undefined;
  private readonly state: PsmmuState;

  constructor(
    env: RoleEnv,
    /** Its Prometheus instruments, when the process serves metrics. */
    metrics: PsmmuMetrics | undefined,
  ) {
    const t = env.topology;
    const k = env.self.index;
    this.name = env.self.name;
    // A set-associative IOTLB holds whole sets of 8 ways.
    this.iotlb = Iotlb.create(Math.max(8, Math.ceil((t.device?.iotlbEntries || DEFAULT_IOTLB_ENTRIES) / 8) * 8));
    this.space = new AddressSpace(t.ramDir);
    // CFGIs the host's VCMDQs execute reach the translator's configuration cache through this log.
    const configLog = ConfigInvalidations.create();
    this.translator = new Translator(k, new HostPhysical(this.space), this.iotlb, this.events, env.costs, configLog);
    // A design whose devices are all the VMM's own: no DMA of this run reaches a pSMMU.
    const emulated = designOf(t.model).traits.hostTables === 'emulated';
    this.bareMetal = designOf(t.model).traits.hostTables === 'bare-metal';
    this.ril = t.smmu?.ril ?? true;
    const sids = emulated ? [] : t.devices.filter((d) => d.psmmu === k).map((d) => d.psid);
    // ATS (device.ats): the devices keep ATCs, which ATC_INVs from any queue reach through this log.
    const atcLog = t.device?.ats && !emulated ? AtcInvalidations.create() : undefined;
    this.cmdq = new PhysicalCmdq(CMDQ_LOG2, this.iotlb, this.translator, (scope) => scopeConcerns(scope, sids, (sid) => this.translator.contextOf(sid)), atcLog);
    this.vintf = new VintfPage(k, t, { iotlb: this.iotlb, configLog, ...(atcLog ? { atcLog } : {}) }, env.log);
    // Under emulated-smmuv3 the devices are QEMU's emulated ones: their DMA never reaches a pSMMU.
    const devices = emulated
      ? []
      : t.devices.flatMap((d, i) => (d.psmmu === k ? [{ index: i, sid: d.psid, ram: () => this.space.guest(d.vm), iommu: this.translator }] : []));
    this.dma = new DeviceDma(
      devices,
      { rate: t.device?.dmaRate ?? 0, lingerMs: t.device?.lingerMs ?? 0, lingerShare: t.device?.lingerShare ?? 0, ...(atcLog ? { atcLog } : {}) },
      new Random(t.seed, 1000 + k),
    );
    // What this run shows the process's metrics, read when they are scraped.
    this.state = {
      cmdqOpcodes: this.cmdq.byOpcode,
      vcmdqOpcodes: this.vintf.byOpcode,
      events: this.events.byType,
      vevents: () => this.vintf.counters.vevents,
      translations: () => ({ hits: this.translator.counters.hits, misses: this.translator.counters.misses }),
      cmdqEntries: () => Q.used(this.cmdq.prod, this.cmdq.cons, this.cmdq.log2),
      cmdqPeak: () => this.cmdq.peak,
      vcmdqDepths: () => this.vintf.queueDepths(),
      workerThreads: () => this.vintf.workerThreads,
    };
    this.metrics = metrics;
    this.metrics?.attach(this.state);
  }

  async init(): Promise<void> {
    await this.vintf.init();
  }

  async handle(req: Request, ctx: OpContext, from: Endpoint): Promise<HandlerResult> {
    if (req.kind === 'VINTF_MMIO' && from.role === 'guest' && !this.bareMetal) return this.vintf.access(req, from.index, ctx);
    // The host kernel: VFIO, or on bare metal the guest process, which plays the host kernel.
    const hostKernel = from.role === 'vfio' || (from.role === 'guest' && this.bareMetal);
    // The host's writes reach the SMMU's registers or, on the CMDQV's page, its VINTFs' queues.
    if (req.kind === 'HOST_MMIO' && hostKernel) return (await this.vintf.hostWrite(req)) ?? this.hostRegister(req, ctx);
    if (req.kind === 'TCE_KILL' && hostKernel) return this.tceKill(req, ctx);
    if (req.kind !== 'CMDQ_SUBMIT' || !hostKernel) return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
    if (req.payload.length === 0 || req.payload.length % CMD_SIZE !== 0) return { status: -Errno.EINVAL, payload: EMPTY };
    this.counters.submissions += 1;
    if (this.cmdq.halted || !this.cmdq.write(req.payload)) return { status: -Errno.EIO, payload: consReg(this.cmdq.cons) };
    const r = await this.consume(ctx);
    if (r.error) {
      this.counters.errors += 1;
      return { status: -Errno.EIO, payload: consReg(this.cmdq.cons) };
    }
    return { status: 0, payload: consReg(this.cmdq.cons) };
  }

  /**
   * The host driver's register accesses. Reads: the ID registers (its probe), CMDQ_CONS and GERROR.
   * GERRORN = GERROR acknowledges a stopped command queue (the driver rewrote the refused slot
   * first, as Linux's arm_smmu_cmdq_skip_err does); consumption resumes at CONS.
   */
  private async hostRegister(req: Request, ctx: OpContext): Promise<HandlerResult> {
    const mmio = decodeMmio(req.payload);
    if (mmio && !mmio.isWrite) {
      const value = this.readRegister(mmio.physAddr);
      return value === undefined ? { status: -Errno.EINVAL, payload: EMPTY } : { status: 0, payload: encodeMmio({ ...mmio, data: value }) };
    }
    if (!mmio || mmio.physAddr !== SMMU_REG.GERRORN) return { status: -Errno.EINVAL, payload: EMPTY };
    if (!this.cmdq.halted || ((mmio.data ^ this.cmdq.gerror) & GERROR_CMDQ_ERR) !== 0) return { status: 0, payload: consReg(this.cmdq.cons) };
    const slot = req.guestMemory[0]?.data;
    this.cmdq.acknowledge(slot && slot.length === CMD_SIZE ? slot : undefined);
    const r = await this.consume(ctx);
    return { status: r.error ? -Errno.EIO : 0, payload: consReg(this.cmdq.cons) };
  }

  /** A register the host reads: IDR0/IDR3 (psmmuIdr), CMDQ_CONS, GERROR; undefined for any other. */
  private readRegister(offset: number): number | undefined {
    const idr = psmmuIdr(this.ril);
    if (offset === SMMU_REG.IDR0) return idr.idr0;
    if (offset === SMMU_REG.IDR3) return idr.idr3;
    if (offset === SMMU_REG.CMDQ_CONS) return this.cmdq.cons;
    if (offset === SMMU_REG.GERROR) return this.cmdq.gerror;
    return undefined;
  }

  /**
   * A TCE cache kill on one PE, when this process stands for a POWER host's PHB (the sPAPR
   * designs): the translations of the PE's table over the range leave the cache (the IOTLB here,
   * by the table's VMID: a PE-scoped kill is narrower, entries of another PE of the same VM and
   * range go too), and the kill is priced as one OPAL_PCI_TCE_KILL (ppc.tce_kill), holding the
   * PHB's kill queue (skiboot's phb4_tce_kill waits for room in it). No SMMU command runs.
   */
  private async tceKill(req: Request, ctx: OpContext): Promise<HandlerResult> {
    const k = decodeTceKill(req.payload);
    const pe = k ? this.translator.contextOf(k.pe) : undefined;
    if (!k || !pe || k.ioba % PAGE_SIZE !== 0) return { status: -Errno.EINVAL, payload: EMPTY };
    this.counters.tceKills += 1;
    this.iotlb.invalidateIpaPages(pe.vmid, k.ioba / PAGE_SIZE, Math.max(1, k.npages) * Math.max(1, 2 ** k.pageShift / PAGE_SIZE));
    await ctx.hold(`${this.name}.tce_kill`, () => ctx.charge('ppc.tce_kill'));
    return { status: 0, payload: EMPTY };
  }

  /**
   * The SMMU runs its CMDQ from CONS to PROD. One CMDQ per SMMU: every submitter's commands execute
   * one batch after another, which the operation records as a hold of the queue in modeled time.
   */
  private async consume(ctx: OpContext): Promise<ReturnType<PhysicalCmdq['consume']>> {
    const r = this.cmdq.consume();
    await ctx.hold(`${this.name}.cmdq`, () => {
      ctx.charge('smmu.cmd_exec', r.executed);
      ctx.charge('smmu.sync', r.syncs);
      // A CMD_SYNC behind ATC_INVs completes only when the devices answered (PCIe round trip).
      ctx.charge('smmu.atc_inv', r.atcSyncs);
    });
    this.counters.commands += r.executed;
    this.counters.wasted += r.wasted;
    this.counters.syncs += r.syncs;
    this.counters.atcSyncs += r.atcSyncs;
    return r;
  }

  /** The run begins: the devices start their DMA. */
  async start(): Promise<StartReply> {
    this.dma.start();
    return { ops: [], hops: [], elapsedSec: 0, modeledElapsedNs: 0, guestCommands: 0 };
  }

  stats(): Record<string, number> {
    const tr = this.translator.counters;
    const tlb = this.iotlb.stats();
    return {
      ...this.counters,
      translations: tr.translations,
      iotlbHits: tr.hits,
      iotlbMisses: tr.misses,
      walkAccesses: tr.walkAccesses,
      faults: tr.faults,
      staleHits: tr.staleHits,
      dmaModeledNs: tr.modeledNs,
      ...this.dma.counters,
      iotlbEntries: this.iotlb.size,
      iotlbInvalidated: tlb.invalidated,
      iotlbEvictions: tlb.evictions,
      ...this.events.counters(),
      ...this.vintf.counters,
    };
  }

  async close(): Promise<void> {
    this.metrics?.detach(this.state);
    this.dma.stop();
    this.space.close();
    await this.vintf.close();
  }
}

/** The CONS register value a submitter reads back. */
function consReg(cons: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(cons >>> 0);
  return b;
}

export async function createRole(env: RoleEnv): Promise<RoleInstance> {
  // prom-client only in a process that serves metrics.
  const metrics = env.metrics ? (await import('./metrics.js')).psmmuMetrics(env.metrics) : undefined;
  return new PsmmuRole(env, metrics);
}
