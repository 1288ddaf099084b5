import { Errno, errnoName } from '../runtime/errors.js';
import { encodeMmio } from '../formats/kvm-run.js';
import { CMD_SIZE, cmdSync, encodeCommand } from '../formats/smmu/commands.js';
import * as Q from '../formats/smmu/queue.js';
import { GERROR_CMDQ_ERR, SMMU_REG } from '../formats/smmu/registers.js';
import { IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE, decodeHwptInvalidate, decodeHwptQueueData, withEntryNum, type HwptInvalidate } from '../formats/iommufd.js';
import { readGuestRam } from '../machine/guest-ram.js';
import { type VdeviceObject, type ViommuObject } from '../machine/iommufd-objects.js';
import type { OpContext } from '../runtime/op-context.js';
import type { PageTable } from '../machine/pagetable.js';
import { EMPTY, type HandlerResult, type RoleEnv, type RoleInstance, type Request } from '../runtime/role-api.js';
import type { Endpoint } from '../runtime/topology.js';
import { liobnParts, decodeTceUpdate, encodeTceKill, tceGpa, tcePerms, H_RC } from '../formats/spapr-tce.js';
import {
  DMA_MAP_SIZE, DMA_UNMAP_SIZE, IOMMU_WRITE, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VMM_RAM_VADDR,
  decodeContainerIoctl, decodeDmaMap, decodeDmaUnmap, decodeKernelIommuMap, encodeDmaUnmap, pageAligned,
} from '../formats/vfio-type1.js';
import { PAGE_SIZE } from '../machine/memory.js';
import { vfioContainers } from '../machine/vfio-containers.js';
import { HOST_IOMMU_COUNTERS, HostIommuDomain, VFIO_DMA_ENTRY_LIMIT, stage1DomainInvalidation } from './host-iommu.js';
import { TceTableDomain, type TablePe } from './tce-table.js';
import { HostTables } from './host-tables.js';
import { checkHwptInvalidate, invalidateEntries, invalidateQueue } from './hwpt-invalidate.js';
import { HwQueues } from './hw-queues.js';
import { IOAS_COUNTERS, VmIoas, type IoasCounters } from './ioas.js';
import { decodeIoasMap, decodeIoasUnmap, encodeIoasUnmap } from '../formats/iommufd-ioas.js';
import { designOf, iommufdLayoutOf, shadowOf } from '../designs/registry.js';

/**
 * The largest guest queue the queue uAPI reads: an SMMUv3 command queue has at most 2^19 entries
 * (IDR1.CMDQS is 5 bits, capped at 19 by the architecture).
 */
const QUEUE_UAPI_MAX_LOG2 = 19;

/**
 * vfio: the host kernel's VFIO and iommufd, holding the iommufd objects of every VM and turning a
 * VMM's HWPT_INVALIDATE into commands on the right physical SMMU's CMDQ.
 */
class VfioRole implements RoleInstance {
  private readonly viommus = new Map<number, ViommuObject>();
  /** vDEVICEs of each vIOMMU by vSID. */
  private readonly vdevs = new Map<number, Map<number, VdeviceObject>>();
  private readonly counters = { hwptInvalidate: 0, kernelInvalidate: 0, queueInvalidate: 0, commands: 0, chunks: 0, cmdqRecoveries: 0 };
  /** The GERRORN value the host driver last wrote to each physical SMMU. */
  private readonly gerrorn = new Map<string, number>();
  /** Failed calls by errno name (EINVAL, EIO, ENOENT...). */
  private readonly errors: Record<string, number> = {};

  private readonly tables: HostTables;
  /** The VMs' HW queues (VCMDQs), re-created by a VMM on migration. */
  private readonly hwQueues: HwQueues;
  /**
   * When the model shadows guest mappings: each VFIO container's host domain by `vm/fd` (one per
   * device, or one per VM for a TCE table), and by device for the in-kernel callers.
   */
  private readonly containers = new Map<string, HostIommuDomain | TceTableDomain>();
  private readonly byDevice = new Map<number, HostIommuDomain>();
  /** Per VM, its PHB's TCE table (sPAPR). */
  private readonly tceTables = new Map<number, TceTableDomain>();
  private readonly hostCounters = Object.fromEntries(HOST_IOMMU_COUNTERS.map((k) => [k, 0])) as HostIommuDomain['counters'];
  /** Per VM, its IOAS when the stage 2 maps guest RAM itself (no vIOMMU, or a nesting parent). */
  private readonly ioas = new Map<number, VmIoas>();
  private readonly ioasCounters = Object.fromEntries(IOAS_COUNTERS.map((k) => [k, 0])) as IoasCounters;

  /** Where the VMs' RAM files are (the queue uAPI reads the guest queue through the VMM's mapping). */
  private readonly ramDir: string;

  constructor(env: RoleEnv) {
    this.ramDir = env.topology.ramDir;
    this.tables = new HostTables(env.topology);
    const t = env.topology;
    const host = designOf(t.model).traits.hostTables;
    const shadow = shadowOf(t.model);
    const submit = (ctx: OpContext, p: number, cmds: Buffer): Promise<number> => this.submit(ctx, `psmmu-${p}`, cmds);
    if (shadow) {
      for (const c of vfioContainers(t, shadow === 'device-domain')) {
        if (shadow === 'device-domain') {
          const d = this.tables.deviceDomains.get(c.devices[0] as number);
          if (!d) throw new Error(`device ${c.devices[0]} has no host domain`);
          const domain = new HostIommuDomain(c.vm, d.table, stage1DomainInvalidation(d.asid, d.psmmu, submit, this.hostCounters), this.hostCounters, `vfio.container-${c.vm}.${c.fd}`);
          this.containers.set(`${c.vm}/${c.fd}`, domain);
          for (const dev of c.devices) this.byDevice.set(dev, domain);
        } else {
          // Each assigned device is a PE of its own, on its pSMMU's PHB.
          const pes: TablePe[] = c.devices.map((i) => ({ psmmu: t.devices[i]?.psmmu ?? 0, sid: t.devices[i]?.psid ?? 0 }));
          const kill = async (ctx: OpContext, pe: TablePe, ioba: number, npages: number, pageShift: number): Promise<number> =>
            (await ctx.call(`psmmu-${pe.psmmu}`, 'TCE_KILL', encodeTceKill({ pe: pe.sid, ioba, npages, pageShift }))).status;
          const table = new TceTableDomain(c.vm, this.tables.stage2[c.vm] as PageTable, pes, kill, this.hostCounters);
          this.containers.set(`${c.vm}/${c.fd}`, table);
          this.tceTables.set(c.vm, table);
        }
      }
    } else if (host !== 'emulated' && host !== 'bare-metal') {
      this.tables.stage2.forEach((table, vm) => {
        this.ioas.set(vm, new VmIoas(vm, table, env.topology, (ctx, p, cmds) => this.submit(ctx, `psmmu-${p}`, cmds), this.ioasCounters));
      });
    }
    const layout = iommufdLayoutOf(env.topology);
    this.hwQueues = new HwQueues(env.topology, layout, async (ctx, psmmu, mmio) => (await ctx.call(`psmmu-${psmmu}`, 'HOST_MMIO', mmio)).status);
    for (const v of layout.viommus) {
      this.viommus.set(v.id, v);
      this.vdevs.set(v.id, new Map());
    }
    for (const d of layout.vdevices) this.vdevs.get(d.viommuId)?.set(d.vsid, d);
  }

  async handle(req: Request, ctx: OpContext, from: Endpoint): Promise<HandlerResult> {
    if (req.kind === 'HWPT_INVALIDATE' && from.role === 'qemu') return this.hwptInvalidate(req.payload, from.index, ctx, req.guestMemory);
    if (req.kind === 'VIOMMU_INVALIDATE' && from.role === 'kvm') return this.hwptInvalidate(req.payload, undefined, ctx);
    if (req.kind === 'VFIO_DMA_MAP' && from.role === 'qemu') return this.dmaMap(req.payload, from.index, ctx);
    if (req.kind === 'VFIO_DMA_UNMAP' && from.role === 'qemu') return this.dmaUnmap(req.payload, from.index, ctx);
    if ((req.kind === 'IOMMU_MAP' || req.kind === 'IOMMU_UNMAP') && from.role === 'kvm') return this.kernelMap(req.kind, req.payload, ctx);
    if (req.kind === 'TCE_UPDATE' && from.role === 'kvm') return this.tceUpdate(req.payload, ctx);
    if (req.kind === 'IOAS_UNMAP' && from.role === 'qemu') return this.ioasUnmap(req.payload, from.index, ctx);
    if (req.kind === 'IOAS_MAP' && from.role === 'qemu') return this.ioasMap(req.payload, from.index, ctx);
    if (req.kind === 'IOMMU_HW_QUEUE_ALLOC' && from.role === 'qemu') return this.counted(await this.hwQueues.alloc(req.payload, ctx, from.index));
    if (req.kind === 'IOMMU_DESTROY' && from.role === 'qemu') return this.counted(await this.hwQueues.destroy(req.payload, ctx, from.index));
    return { status: -Errno.EOPNOTSUPP, payload: EMPTY };
  }

  private counted(r: HandlerResult): HandlerResult {
    this.count(r.status);
    return r;
  }

  private reply(status: number, payload: Buffer = EMPTY): HandlerResult {
    this.count(status);
    return { status, payload };
  }

  /**
   * ioctl(VFIO_IOMMU_MAP_DMA) on one of VM `vm`'s containers. Type1: checks as vfio_dma_do_map
   * (flags, alignment, an IOVA range outside the domain's aperture: EINVAL; no mapping left under
   * dma_entry_limit: ENOSPC), then pin, map, and the domain's invalidation (none on SMMUv3). sPAPR
   * v2 (tce_iommu_ioctl): flags and alignment checked, then tce_iommu_build_v2 on preregistered
   * memory, with no pin, no vfio_dma and no container lock.
   */
  private async dmaMap(payload: Buffer, vm: number, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('ioctl.syscall');
    const io = decodeContainerIoctl(payload);
    if (!io) return this.reply(-Errno.EFAULT);
    const domain = this.containers.get(`${vm}/${io.fd}`);
    if (!domain) return this.reply(-Errno.EBADF);
    const m = decodeDmaMap(io.arg);
    if (!m) return this.reply(-Errno.EFAULT);
    if (m.argsz < DMA_MAP_SIZE || (m.flags & ~(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)) !== 0) return this.reply(-Errno.EINVAL);
    if (!pageAligned(m.iova, m.size) || m.vaddr % PAGE_SIZE !== 0) return this.reply(-Errno.EINVAL);
    if (domain instanceof TceTableDomain) {
      // Neither READ nor WRITE is refused by tce_iommu_ioctl (no DMA direction).
      if ((m.flags & (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)) === 0) return this.reply(-Errno.EINVAL);
      return this.reply(await domain.build(ctx, m.iova, m.vaddr - VMM_RAM_VADDR, m.size, (m.flags & VFIO_DMA_MAP_FLAG_WRITE) !== 0));
    }
    if (!HostIommuDomain.inAperture(m.iova, m.size / PAGE_SIZE)) return this.reply(-Errno.EINVAL);
    const status = await domain.lock.with(async () => {
      ctx.charge('kernel.vfio_dma_op');
      if (domain.mappings >= VFIO_DMA_ENTRY_LIMIT) return -Errno.ENOSPC;
      return domain.map(ctx, { iova: m.iova, gpa: m.vaddr - VMM_RAM_VADDR, pages: m.size / PAGE_SIZE, write: (m.flags & VFIO_DMA_MAP_FLAG_WRITE) !== 0, pin: true });
    }, ctx);
    return this.reply(status);
  }

  /** ioctl(VFIO_IOMMU_UNMAP_DMA): the reply carries the struct back with size = bytes unmapped. */
  private async dmaUnmap(payload: Buffer, vm: number, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('ioctl.syscall');
    const io = decodeContainerIoctl(payload);
    if (!io) return this.reply(-Errno.EFAULT);
    const domain = this.containers.get(`${vm}/${io.fd}`);
    if (!domain) return this.reply(-Errno.EBADF);
    const u = decodeDmaUnmap(io.arg);
    if (!u) return this.reply(-Errno.EFAULT);
    if (u.argsz < DMA_UNMAP_SIZE || u.flags !== 0 || !pageAligned(u.iova, u.size)) return this.reply(-Errno.EINVAL);
    if (domain instanceof TceTableDomain) {
      // tce_iommu_clear: the reply's size stays what was asked (the ioctl writes nothing back).
      const status = await domain.clear(ctx, u.iova, u.size);
      return this.reply(status, status < 0 ? EMPTY : encodeDmaUnmap(u));
    }
    const r = await domain.lock.with(async () => {
      ctx.charge('kernel.vfio_dma_op');
      return domain.unmap(ctx, u.iova, u.size / PAGE_SIZE, true);
    }, ctx);
    if (r < 0) return this.reply(r);
    return this.reply(0, encodeDmaUnmap({ ...u, size: r * PAGE_SIZE }));
  }

  /** ioctl(IOMMU_IOAS_UNMAP): the reply carries the struct back with length = bytes unmapped. */
  private async ioasUnmap(payload: Buffer, vm: number, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('ioctl.syscall');
    const u = decodeIoasUnmap(payload);
    if (!u) return this.reply(-Errno.EFAULT);
    const ioas = this.ioas.get(vm);
    if (!ioas) return this.reply(-Errno.ENOENT);
    const r = await ioas.unmap(ctx, u);
    if (r < 0) return this.reply(r);
    return this.reply(0, encodeIoasUnmap({ ...u, length: r }));
  }

  /** ioctl(IOMMU_IOAS_MAP) of a range of the VMM's guest RAM at a fixed IOVA. */
  private async ioasMap(payload: Buffer, vm: number, ctx: OpContext): Promise<HandlerResult> {
    ctx.charge('ioctl.syscall');
    const m = decodeIoasMap(payload);
    if (!m) return this.reply(-Errno.EFAULT);
    const ioas = this.ioas.get(vm);
    if (!ioas) return this.reply(-Errno.ENOENT);
    return this.reply(await ioas.map(ctx, m));
  }

  /** An in-kernel iommu_map()/iommu_unmap() (vhost-iommu) on a device's domain: no syscall, the container's domain and lock. */
  private async kernelMap(kind: 'IOMMU_MAP' | 'IOMMU_UNMAP', payload: Buffer, ctx: OpContext): Promise<HandlerResult> {
    const m = decodeKernelIommuMap(payload);
    if (!m) return this.reply(-Errno.EFAULT);
    const domain = this.byDevice.get(m.device);
    if (!domain || this.tables.deviceDomains.get(m.device)?.vm !== m.vm) return this.reply(-Errno.ENODEV);
    if (!pageAligned(m.iova, m.size) || (kind === 'IOMMU_MAP' && m.gpa % PAGE_SIZE !== 0)) return this.reply(-Errno.EINVAL);
    const pages = m.size / PAGE_SIZE;
    const r = await domain.lock.with(
      () => (kind === 'IOMMU_MAP' ? domain.map(ctx, { iova: m.iova, gpa: m.gpa, pages, write: (m.prot & IOMMU_WRITE) !== 0, pin: true }) : domain.unmap(ctx, m.iova, pages, true)),
      ctx,
    );
    return this.reply(r < 0 ? r : 0);
  }

  /**
   * KVM's in-kernel TCE handlers (virtual mode since the real-mode ones were removed, ~v5.19):
   * write each TCE into the window's hardware table from preregistered (already pinned) memory and
   * kill its TCE cache entry, one TCE after another (kvmppc_tce_iommu_map / unmap end with
   * iommu_tce_kill). The status is a PAPR return code.
   */
  private async tceUpdate(payload: Buffer, ctx: OpContext): Promise<HandlerResult> {
    const u = decodeTceUpdate(payload);
    const w = u ? liobnParts(u.liobn) : undefined;
    const table = w === undefined ? undefined : this.tceTables.get(w.vm);
    if (!u || !w || !table) return { status: H_RC.PARAMETER, payload: EMPTY };
    const gpas = u.tces.map((t) => (tcePerms(t).read || tcePerms(t).write ? tceGpa(t) : undefined));
    const r = await table.putEach(ctx, w.window, u.ioba, gpas, u.tces.map((t) => tcePerms(t).write));
    return { status: r < 0 ? H_RC.PARAMETER : H_RC.SUCCESS, payload: EMPTY };
  }

  /** Commands to one pSMMU's CMDQ, with the host driver's recovery if the queue stops. */
  private async submit(ctx: OpContext, peer: string, commands: Buffer): Promise<number> {
    const r = await ctx.call(peer, 'CMDQ_SUBMIT', commands);
    if (r.status !== 0 && r.payload.length >= 4) await this.recover(peer, r.payload.readUInt32LE(0), ctx);
    return r.status;
  }

  private count(status: number): void {
    if (status === 0) return;
    const name = errnoName(status);
    this.errors[name] = (this.errors[name] ?? 0) + 1;
  }

  /**
   * IOMMU_HWPT_INVALIDATE from VM `vm`'s VMM on a vIOMMU: the core checks, then the conversion and
   * chunking. `vm` undefined: the same call from inside the kernel (KVM's in-kernel vSMMU queue,
   * exploration: VIOMMU_INVALIDATE): no syscall, and KVM already read and converted each command
   * (kvm.vsmmu_cmd), so only the issue to the pSMMU is charged here.
   */
  private async hwptInvalidate(payload: Buffer, vm: number | undefined, ctx: OpContext, guestMemory: Request['guestMemory'] = []): Promise<HandlerResult> {
    if (vm === undefined) this.counters.kernelInvalidate += 1;
    else {
      ctx.charge('ioctl.syscall');
      this.counters.hwptInvalidate += 1;
    }
    const parsed = decodeHwptInvalidate(payload);
    if (!parsed) return { status: -Errno.EFAULT, payload: EMPTY };
    const { head, entries } = parsed;
    const check = checkHwptInvalidate(head, entries.length);
    if (check !== 0 || head.entryNum === 0) {
      // A failed check, or a successful probe of the data type (entry_num 0).
      this.count(check);
      return { status: check, payload: withEntryNum(head, 0) };
    }
    const viommu = this.viommus.get(head.hwptId);
    if (!viommu || (vm !== undefined && viommu.vm !== vm)) {
      // iommufd_get_object() finds no object of that id in this VMM's iommufd: another VM's
      // vIOMMU is not there, so its translations stay out of reach.
      this.count(-Errno.ENOENT);
      return { status: -Errno.ENOENT, payload: withEntryNum(head, 0) };
    }
    const vdevs = this.vdevs.get(viommu.id) as Map<number, VdeviceObject>;
    const peer = `psmmu-${viommu.psmmu}`;
    if (head.dataType === IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE && vm !== undefined) return this.queueInvalidate(head, entries, vm, viommu, vdevs, peer, ctx, guestMemory);
    const r = await invalidateEntries(head, entries, viommu, vdevs, {
      converted: () => {
        if (vm !== undefined) ctx.charge('kernel.hwpt_cmd');
      },
      submit: async (chunk, commands) => {
        ctx.charge('kernel.cmdq_insert', commands + 1);
        this.counters.chunks += 1;
        this.counters.commands += commands;
        return this.submit(ctx, peer, chunk);
      },
    });
    this.count(r.status);
    return { status: r.status, payload: withEntryNum(head, r.entryNum) };
  }

  /**
   * vmm.hwptInvalidate=queue (the v2 proposal, never merged): the kernel reads the guest queue's
   * entries from CONS to PROD out of guest RAM itself (the VMM's mapping of it, at cmdq_uptr),
   * kernel.hwpt_queue_entry each, and issues the converted ones as one list with one CMD_SYNC.
   */
  private async queueInvalidate(
    head: HwptInvalidate, data: Buffer, vm: number, viommu: ViommuObject, vdevs: Map<number, VdeviceObject>, peer: string, ctx: OpContext,
    guestMemory: Request['guestMemory'],
  ): Promise<HandlerResult> {
    const q = decodeHwptQueueData(data);
    if (!q || q.entrySize !== CMD_SIZE || q.log2size > QUEUE_UAPI_MAX_LOG2) {
      this.count(-Errno.EINVAL);
      return { status: -Errno.EINVAL, payload: withEntryNum(head, 0) };
    }
    const count = Q.used(q.prod, q.cons, q.log2size);
    const slot = (i: number): Buffer => {
      const at = q.cmdqGpa + Q.index(q.cons + i, q.log2size) * CMD_SIZE;
      return readGuestRam(guestMemory, this.ramDir, vm, at, CMD_SIZE);
    };
    this.counters.queueInvalidate += 1;
    const r = await invalidateQueue(count, slot, viommu, vdevs, {
      converted: () => ctx.charge('kernel.hwpt_queue_entry'),
      submit: async (list, commands) => {
        ctx.charge('kernel.cmdq_insert', commands + 1);
        this.counters.chunks += 1;
        this.counters.commands += commands;
        return this.submit(ctx, peer, list);
      },
    });
    this.count(r.status);
    return { status: r.status, payload: withEntryNum(head, r.entryNum) };
  }

  /**
   * arm_smmu_cmdq_skip_err for the physical queue: on CERROR_ILL, a CMD_SYNC over the refused
   * command and GERRORN = GERROR, so the queue runs again for everyone else.
   */
  private async recover(peer: string, cons: number, ctx: OpContext): Promise<void> {
    if (Q.consErr(cons) !== Q.CERROR.ILL) return;
    this.counters.cmdqRecoveries += 1;
    const sync = Buffer.alloc(CMD_SIZE);
    encodeCommand(cmdSync(), sync, 0);
    // The host driver tracks GERROR by toggling: after one error it is the previous GERRORN ^ CMDQ_ERR.
    this.gerrorn.set(peer, (this.gerrorn.get(peer) ?? 0) ^ GERROR_CMDQ_ERR);
    const mmio = encodeMmio({ physAddr: SMMU_REG.GERRORN, data: this.gerrorn.get(peer) ?? 0, len: 4, isWrite: true });
    await ctx.call(peer, 'HOST_MMIO', mmio, [{ gpa: 0, data: sync }]);
  }

  stats(): Record<string, number> {
    const errors = Object.fromEntries(Object.entries(this.errors).map(([k, v]) => [`errors.${k}`, v]));
    // Host stage-2 commands per pSMMU, so the run's accounting can tell them from the guests' deliveries.
    const stage2: Record<string, number> = {};
    for (const i of this.ioas.values()) for (const [p, n] of i.delivered) stage2[`stage2Commands.psmmu-${p}`] = (stage2[`stage2Commands.psmmu-${p}`] ?? 0) + n;
    return { ...this.counters, ...this.hwQueues.counters, ...(this.containers.size > 0 ? this.hostCounters : {}), ...(this.ioas.size > 0 ? this.ioasCounters : {}), ...stage2, ...errors };
  }

  close(): void {
    this.tables.close();
  }
}

export function createRole(env: RoleEnv): RoleInstance {
  return new VfioRole(env);
}
