import { Errno } from '../../runtime/errors.js';
import { encodeMmio } from '../../formats/kvm-run.js';
import { PAGE_SIZE } from '../../machine/memory.js';
import { Mutex } from '../../machine/mutex.js';
import type { OpContext } from '../../runtime/op-context.js';
import {
  MAP_F_READ, MAP_F_WRITE, ReqType, Status, TAIL_SIZE, VIOMMU_INDIRECT_DESCS, VIOMMU_NOTIFY_GPA, VIOMMU_REQUEST_QUEUE, VIOMMU_REQUEST_VQ,
  encodeRequest, indirectTableGpa, requestSlotGpa, type Request,
} from '../../formats/virtio-iommu.js';
import { type DmaApi, type DmaApiFactory, type GuestDevice, type GuestKernel } from '../../guest/driver.js';
import { FlushQueue } from '../../guest/flush-queue.js';
import { CpuIovaSpace, type IovaAllocator } from '../../guest/iova.js';
import { VirtqueueDriver } from './virtqueue-driver.js';

/**
 * The DMA window IOVAs come from. Each CPU allocates top-down in its own slice of each domain, so
 * which operation gets which IOVA does not depend on how the vCPUs interleave. Every domain has the
 * same window, as Linux hands out the same IOVAs in every domain: each endpoint has its own address
 * space in QEMU, its own VFIO container and host domain, so they never collide.
 */
const IOVA_BASE = 0x1_0000_0000;
const IOVA_SLICE = 0x1000_0000;
const IOVA_END = 2 ** 48;
/** ENOSYS, which Linux returns for VIRTIO_IOMMU_S_UNSUPP (not among the errnos the host models use). */
const ENOSYS = 38;

/** A request in flight: where its buffer is and, once the device completed it, its status. */
interface Pending {
  slot: number;
  size: number;
  status: number | undefined;
  /** Whether a caller reads the status (a lazy UNMAP's nobody does, as in Linux). */
  awaited: boolean;
}

interface Deferred {
  cpu: number;
  iova: number;
  pages: number;
}

/** The guest's view of one domain: its id, the IOVAs it handed out and what is mapped. */
class Domain {
  private readonly iovas: CpuIovaSpace;
  /** Mapped ranges by IOVA: pages (viommu_add_mapping's interval tree). */
  readonly mapped = new Map<number, number>();
  /** Lazy mode's flush queue (set by the driver once the domain exists). */
  fq: FlushQueue<Deferred> | undefined;

  constructor(
    readonly id: number,
    window: number,
    slice: number,
  ) {
    this.iovas = new CpuIovaSpace(window, slice);
  }

  iova(cpu: number): IovaAllocator {
    return this.iovas.of(cpu);
  }
}

/** Linux's viommu_get_req_errno. */
function errnoOf(status: number): number {
  switch (status) {
    case Status.OK:
      return 0;
    case Status.UNSUPP:
      return -ENOSYS;
    case Status.INVAL:
      return -Errno.EINVAL;
    case Status.RANGE:
      return -Errno.ERANGE;
    case Status.NOENT:
      return -Errno.ENOENT;
    case Status.FAULT:
      return -Errno.EFAULT;
    case Status.NOMEM:
      return -Errno.ENOMEM;
    default:
      return -Errno.EIO;
  }
}

/**
 * dma-iommu over Linux's virtio-iommu driver (drivers/iommu/virtio-iommu.c). The guest has no I/O
 * page table: every change is a request on the device's request virtqueue.
 *  - map: viommu_map_pages adds a MAP request, iotlb_sync_map kicks the queue and busy-polls the
 *    used ring until everything in flight completed (viommu_sync_req, under the driver's request
 *    lock; the request queue has no interrupt callback);
 *  - strict unmap: viommu_unmap_pages adds an UNMAP, iotlb_sync kicks and polls;
 *  - lazy unmap: the UNMAP is added to the request queue without a kick (viommu_unmap_pages adds
 *    it; iotlb_sync is not called) and the IOVA waits in the domain's flush queue (flush-queue.ts;
 *    the driver sets shadow_on_flush, so Linux picks the single queue by default,
 *    iommu_dma_init_options); the next sync by any CPU (a map's, or the flush: flush_iotlb_all =
 *    viommu_sync_req) kicks and completes it, and a flush frees the IOVAs it covers. The vCPUs take
 *    turns in modeled time in lazy mode (ModeledOrder), so which sync carries which UNMAPs is the
 *    same on every run. (The UNMAPs enter the ring here at that next sync rather than at once: the
 *    same requests and kick, only a full ring would tell them apart.)
 *  - a full queue (256 descriptors, 2 per request) is synced before the next request goes in.
 * A MAP or strict UNMAP the device refuses fails the call with Linux's errno for its status (Linux
 * itself adds MAPs without write-back and never reads their status); a full IOVA window fails a
 * map with ENOMEM. The endpoints were attached at probe: domain `device index + 1` per device
 * (see services/machine/virtio-iommu-device.ts). The same driver runs over QEMU's device
 * (virtio-iommu) and over the in-kernel one (vhost-iommu): only what the kick reaches differs.
 */
class VirtioIommuDma implements DmaApi {
  private readonly vq: VirtqueueDriver<Pending>;
  /** viommu->request_lock: one queue for all CPUs, held across the kick and the poll. */
  private readonly lock: Mutex;
  private readonly domains = new Map<number, Domain>();
  private readonly lazy: boolean;
  /** MAP and UNMAP requests: each makes the host change and invalidate its shadow. */
  private requests = 0;
  /**
   * Of `requests`, those that did not complete: the device answered with an error, or they never
   * reached it (the ring was full or broken, or a request queued before them failed to go in).
   */
  private failed = 0;
  /** UNMAPs in the ring that nobody waits for (lazy mode), until the device completes them. */
  private unawaited = 0;
  /** Lazy mode: UNMAP requests not kicked yet, carried by the next sync, whoever makes it. */
  private pendingUnmaps: Request[] = [];

  constructor(private readonly kernel: GuestKernel) {
    this.lazy = kernel.env.topology.dma === 'lazy';
    // QEMU offers VIRTIO_RING_F_INDIRECT_DESC and Linux takes it: each request is one ring descriptor.
    this.vq = new VirtqueueDriver(kernel.ram, VIOMMU_REQUEST_QUEUE, { tableGpa: indirectTableGpa, maxBuffers: VIOMMU_INDIRECT_DESCS });
    this.lock = new Mutex(`${kernel.env.self.name}.viommu.request_lock`);
    const cpus = Math.max(1, kernel.env.topology.workload?.threads ?? 1);
    // Shrink the slices when many CPUs would not fit the 48-bit IOVA space.
    const fit = Math.floor((IOVA_END - IOVA_BASE) / cpus / 0x20_0000) * 0x20_0000;
    const slice = Math.min(IOVA_SLICE, fit);
    kernel.devices.forEach((d) => {
      const domain = new Domain(d.index + 1, IOVA_BASE, slice);
      if (this.lazy) {
        domain.fq = new FlushQueue<Deferred>(FlushQueue.kindFor(kernel, true), kernel, {
          flush: (ctx) => this.flushAll(ctx),
          release: (ctx, items) => {
            for (const e of items) {
              domain.iova(e.cpu).release(e.iova, e.pages);
              ctx.charge('guest.iova_free');
            }
          },
        });
      }
      this.domains.set(d.index, domain);
    });
  }

  /** MAP and UNMAP requests sent: each is an invalidation of the host's shadow in this design. */
  get guestCommands(): number {
    return this.requests;
  }

  get guestCommandsFailed(): number {
    return this.failed;
  }

  private domain(device: GuestDevice): Domain {
    const d = this.domains.get(device.index);
    if (!d) throw new Error(`device ${device.index} has no domain`);
    return d;
  }

  async map(ctx: OpContext, cpu: number, device: GuestDevice, pa: number, pages: number): Promise<number> {
    const d = this.domain(device);
    await d.fq?.enter(cpu);
    const iova = d.iova(cpu).tryAlloc(pages);
    ctx.charge('guest.iova_alloc');
    if (iova === undefined) return -Errno.ENOMEM;
    const size = pages * PAGE_SIZE;
    this.requests += 1;
    const req: Request = { type: ReqType.MAP, domain: d.id, virtStart: BigInt(iova), virtEnd: BigInt(iova + size - 1), physStart: BigInt(pa), flags: MAP_F_READ | MAP_F_WRITE };
    const status = await this.lock.with(async () => {
      const carried = await this.addPending(ctx);
      if (carried < 0) return carried;
      const p = await this.add(ctx, req, true);
      if (typeof p === 'number') return p;
      await this.sync(ctx);
      return errnoOf(p.status ?? Status.IOERR);
    }, ctx);
    if (status !== 0) {
      this.failed += 1;
      d.iova(cpu).release(iova, pages);
      ctx.charge('guest.iova_free');
      return status;
    }
    d.mapped.set(iova, pages);
    return iova;
  }

  async unmap(ctx: OpContext, cpu: number, device: GuestDevice, iova: number, pages: number): Promise<number> {
    const d = this.domain(device);
    await d.fq?.enter(cpu);
    // viommu_del_mappings finds nothing to unmap: no request leaves the guest.
    if (d.mapped.get(iova) !== pages) return -Errno.EINVAL;
    d.mapped.delete(iova);
    const req: Request = { type: ReqType.UNMAP, domain: d.id, virtStart: BigInt(iova), virtEnd: BigInt(iova + pages * PAGE_SIZE - 1) };
    this.requests += 1;
    if (!d.fq) {
      const status = await this.lock.with(async () => {
        const p = await this.add(ctx, req, true);
        if (typeof p === 'number') return p;
        await this.sync(ctx);
        return errnoOf(p.status ?? Status.IOERR);
      }, ctx);
      if (status !== 0) this.failed += 1;
      d.iova(cpu).release(iova, pages);
      ctx.charge('guest.iova_free');
      return status;
    }
    this.pendingUnmaps.push(req);
    ctx.charge('guest.virtio_req');
    const now = (this.kernel.vcpuNs[cpu] ?? 0) + ctx.modeledNs;
    // A full ring's flush syncs; its status is the flush's, not this unmap's (Linux ignores it).
    await d.fq.queue(ctx, cpu, now, { cpu, iova, pages });
    return 0;
  }

  /**
   * Puts the pending UNMAPs in the ring (lazy mode), oldest first; the caller's sync carries them.
   * Returns 0 or -errno. Caller holds the request lock.
   */
  private async addPending(ctx: OpContext): Promise<number> {
    const list = this.pendingUnmaps;
    this.pendingUnmaps = [];
    for (const [i, req] of list.entries()) {
      // Built and charged when the unmap queued it.
      const p = await this.add(ctx, req, false, false);
      if (typeof p !== 'number') continue;
      // This UNMAP and the ones queued behind it never reach the device.
      this.failed += list.length - i;
      return p;
    }
    return 0;
  }

  /**
   * viommu_add_req: the request goes into the buffer of the chain's head descriptor, as two
   * buffers (readable request, writable tail) in the head's indirect table (__viommu_add_req's
   * virtqueue_add_sgs(vq, sg, 1, 1, ...)). A full queue is synced first. Returns the request in
   * flight, or -errno. Caller holds the request lock.
   */
  private async add(ctx: OpContext, req: Request, awaited: boolean, charge = true): Promise<Pending | number> {
    if (this.vq.broken) return -Errno.EIO;
    const needed = this.vq.descriptorsFor(2);
    if (this.vq.free < needed) await this.sync(ctx);
    const head = this.vq.nextHead();
    if (head === undefined || this.vq.free < needed) return -Errno.ENOSPC;
    const bytes = encodeRequest(req);
    const slot = requestSlotGpa(head);
    this.kernel.ram.write(slot, bytes);
    const p: Pending = { slot, size: bytes.length, status: undefined, awaited };
    const readable = { addr: slot, len: bytes.length - TAIL_SIZE };
    const tail = { addr: slot + bytes.length - TAIL_SIZE, len: TAIL_SIZE };
    if (this.vq.add([readable], [tail], p) === undefined) return -Errno.ENOSPC;
    if (!awaited) this.unawaited += 1;
    if (charge) ctx.charge('guest.virtio_req');
    return p;
  }

  /**
   * viommu_sync_req: kick (a write of the queue index to QueueNotify, which traps), then take
   * every completed request off the used ring. The kick returns once the device served the ring,
   * so the poll finds them all; a request still in flight means the device gave up on the queue,
   * and everything in flight fails with IOERR. Caller holds the request lock.
   */
  private async sync(ctx: OpContext): Promise<void> {
    if (this.vq.kickPrepare()) {
      const notify = encodeMmio({ physAddr: VIOMMU_NOTIFY_GPA, data: VIOMMU_REQUEST_VQ, len: 4, isWrite: true });
      await ctx.call('kvm', 'MMIO_WRITE', notify, undefined, 'writel QueueNotify (vm_notify)');
    }
    for (let b = this.vq.getBuf(); b; b = this.vq.getBuf()) {
      const p = b.token;
      // A used length of 0: the device wrote nothing (__viommu_sync_req sets IOERR).
      p.status = b.len === 0 ? Status.IOERR : this.kernel.ram.view(p.slot + p.size - TAIL_SIZE, 1).readUInt8(0);
      if (p.awaited) continue;
      this.unawaited -= 1;
      if (p.status === Status.OK) continue;
      // Nobody waits for it: counted here, so no failed UNMAP goes unreported.
      this.failed += 1;
      this.kernel.env.log.warn({ status: p.status, slot: p.slot }, 'virtio-iommu request failed with no waiter');
    }
    if (this.vq.inFlight > 0) {
      this.vq.broken = true;
      // Those still in the ring never complete; the awaited ones fail their callers.
      this.failed += this.unawaited;
      this.unawaited = 0;
    }
  }

  /** viommu_flush_iotlb_all = viommu_sync_req: one kick and wait for everything in the ring. */
  private async flushAll(ctx: OpContext): Promise<number> {
    return this.lock.with(async () => {
      const carried = await this.addPending(ctx);
      await this.sync(ctx);
      return carried;
    }, ctx);
  }

  async drain(): Promise<void> {
    for (const d of this.domains.values()) await d.fq?.drain();
  }

  close(): void {}
}

/** Linux's virtio-iommu driver: the same whether QEMU or a vhost worker serves the device. */
export const dmaApi: DmaApiFactory = (kernel) => new VirtioIommuDma(kernel);
