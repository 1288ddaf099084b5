/**
 * The virtio-iommu device itself, shared by QEMU's device model (services/qemu/virtio-iommu.ts)
 * and the in-kernel vhost-iommu handler (services/kvm/vhost-iommu.ts): on a kick it pops every
 * available chain of the request queue, checks each request as the virtio spec (1.2, 5.13.6)
 * says, keeps each domain's mappings, asks its backend to change the host IOMMU for each mapping
 * it adds or removes, and completes the request (tail status, then the used element).
 *
 * Endpoints and domains: the guest's probe-time ATTACHes are taken as done before the run, derived
 * from the topology: each assigned device is endpoint `vsid` in its own domain `device index + 1`.
 * ATTACH and DETACH requests still work as the spec says afterwards.
 */
import { Errno } from '../runtime/errors.js';
import { IovaTree, type IovaRange } from './iova-tree.js';
import type { CostStep } from '../cost/steps.js';
import type { Memory } from './memory.js';
import type { OpContext } from '../runtime/op-context.js';
import {
  HEAD_SIZE, INPUT_RANGE_END, MAP_F_MASK, MAP_F_MMIO, PAGE_SIZE_MASK, PROBE_SIZE, ReqType, Status, TAIL_SIZE,
  decodeRequest, encodeTail, readableSize, statusName, type AttachReq, type DetachReq, type MapReq, type StatusCode, type UnmapReq,
} from '../formats/virtio-iommu.js';
import { VirtqueueDevice, type Chain, type VirtqueueLayout } from './virtqueue.js';

/**
 * What changes the host IOMMU for the device: VFIO ioctls from QEMU, or iommu_map() in the kernel.
 * Called once per endpoint of the domain, as QEMU's virtio_iommu_map/unmap notify each endpoint's
 * IOMMU memory region (virtio_iommu_notify_map/unmap), which reaches that endpoint's own VFIO
 * container: an endpoint is an assigned device, known by its vSID.
 */
export interface VirtioIommuBackend {
  /** Maps [iova, iova + size) to guest-physical `gpa` for `endpoint`; `flags` are the request's MAP flags. */
  map(ctx: OpContext, endpoint: number, iova: number, gpa: number, size: number, flags: number): Promise<StatusCode>;
  unmap(ctx: OpContext, endpoint: number, iova: number, size: number): Promise<StatusCode>;
}

/** A host kernel errno as the status the device reports for the request that caused it. */
export function statusOfErrno(status: number): StatusCode {
  switch (-status) {
    case 0:
      return Status.OK;
    case Errno.EINVAL:
    case Errno.EEXIST:
      return Status.INVAL;
    case Errno.EFAULT:
      return Status.FAULT;
    case Errno.ERANGE:
      return Status.RANGE;
    case Errno.ENOMEM:
    case Errno.ENOSPC:
      return Status.NOMEM;
    case Errno.ENOENT:
    case Errno.ENODEV:
      return Status.NOENT;
    default:
      return Status.DEVERR;
  }
}

/** One mapping of a domain: [iova, iova + size) to guest-physical `phys`, with its MAP flags. */
export interface Mapping extends IovaRange {
  phys: number;
  flags: number;
}

interface Domain {
  endpoints: Set<number>;
  /** Ordered and never overlapping (QEMU keeps a GTree of intervals). */
  mappings: IovaTree<Mapping>;
}

export interface Attachment {
  endpoint: number;
  domain: number;
}

export interface VirtioIommuDeviceOptions {
  mem: Memory;
  layout: VirtqueueLayout;
  /** Bytes of guest RAM: descriptors pointing beyond it are refused. */
  ramBytes: number;
  /** The endpoints this device translates and the domain each is attached to at start. */
  attachments: readonly Attachment[];
  backend: VirtioIommuBackend;
  /** The cost of popping and serving one request where this device runs. */
  requestStep: CostStep;
}

/** The granule: the smallest page size the device offers. */
const GRANULE = PAGE_SIZE_MASK & -PAGE_SIZE_MASK;
/** The longest device-readable part of any request: all the device copies out of a chain. */
const MAX_READABLE = Math.max(...Object.values(ReqType).map((t) => readableSize(t) ?? 0));
/** Guest-physical addresses the device accepts (the guest's 48-bit IPA space). */
const PHYS_END = 2n ** 48n - 1n;

export const DEVICE_COUNTERS = ['kicks', 'requests', 'maps', 'unmaps', 'attaches', 'detaches', 'probes', 'backendCalls', 'failed', 'interrupts', 'ringErrors'] as const;

export class VirtioIommuDevice {
  readonly vq: VirtqueueDevice;
  private readonly domains = new Map<number, Domain>();
  /** Endpoint -> the domain it is attached to (undefined: known but detached). */
  private readonly endpoints = new Map<number, number | undefined>();
  readonly counters = Object.fromEntries(DEVICE_COUNTERS.map((k) => [k, 0])) as Record<(typeof DEVICE_COUNTERS)[number], number>;
  /** Failed requests by status name. */
  readonly failures: Record<string, number> = {};

  constructor(private readonly o: VirtioIommuDeviceOptions) {
    this.vq = new VirtqueueDevice(o.mem, o.layout, o.ramBytes, MAX_READABLE);
    for (const a of o.attachments) {
      this.endpoints.set(a.endpoint, a.domain);
      this.domain(a.domain, true)?.endpoints.add(a.endpoint);
    }
  }

  private domain(id: number, create = false): Domain | undefined {
    let d = this.domains.get(id);
    if (!d && create) {
      d = { endpoints: new Set(), mappings: new IovaTree<Mapping>() };
      this.domains.set(id, d);
    }
    return d;
  }

  /** The mappings of a domain (for tests and checks), or undefined when the domain does not exist. */
  mappings(domain: number): readonly Mapping[] | undefined {
    return this.domains.get(domain)?.mappings.entries();
  }

  /**
   * A kick of the request queue: serve every available request, in ring order, then ask for the
   * next kick (avail_event) and count the interrupt the driver would get (it suppresses them).
   */
  async kick(ctx: OpContext): Promise<void> {
    this.counters.kicks += 1;
    const oldUsed = this.vq.usedIndex;
    for (;;) {
      const chain = this.vq.pop();
      if (!chain) break;
      this.counters.requests += 1;
      ctx.charge(this.o.requestStep);
      if (chain.writableBytes < TAIL_SIZE || chain.readable.length < HEAD_SIZE) {
        // QEMU: "virtio-iommu bad head/tail size", virtio_error(): the device needs a reset.
        this.vq.fail('bad-request');
        break;
      }
      const reply = await this.serve(ctx, chain);
      const status = reply.readUInt8(reply.length - TAIL_SIZE);
      if (status !== Status.OK) this.fail(status);
      this.vq.push(chain.head, this.vq.writeBack(chain, reply));
    }
    if (this.vq.broken) this.counters.ringErrors += 1;
    else this.vq.armKick();
    if (this.vq.usedIndex !== oldUsed && this.vq.wantsInterrupt(oldUsed)) this.counters.interrupts += 1;
  }

  private fail(status: number): void {
    this.counters.failed += 1;
    const name = statusName(status);
    this.failures[name] = (this.failures[name] ?? 0) + 1;
  }

  /** One request; returns what the device writes back (the tail, or PROBE's properties and tail). */
  private async serve(ctx: OpContext, chain: Chain): Promise<Buffer> {
    const type = chain.readable.readUInt8(0);
    if (readableSize(type) === undefined) return encodeTail(Status.UNSUPP);
    const req = decodeRequest(chain.readable);
    if (!req) return encodeTail(Status.INVAL); // shorter than its struct
    switch (req.type) {
      case ReqType.ATTACH:
        this.counters.attaches += 1;
        return encodeTail(await this.attach(ctx, req));
      case ReqType.DETACH:
        this.counters.detaches += 1;
        return encodeTail(await this.detach(ctx, req));
      case ReqType.MAP:
        this.counters.maps += 1;
        return encodeTail(await this.map(ctx, req));
      case ReqType.UNMAP:
        this.counters.unmaps += 1;
        return encodeTail(await this.unmap(ctx, req));
      case ReqType.PROBE: {
        this.counters.probes += 1;
        // The properties must have room for probe_size bytes; this device reports no reserved
        // region, so they are all zeroes (a NONE property ends the list).
        if (chain.writableBytes < PROBE_SIZE + TAIL_SIZE) return encodeTail(Status.INVAL);
        const status = this.endpoints.has(req.endpoint) ? Status.OK : Status.NOENT;
        return Buffer.concat([Buffer.alloc(PROBE_SIZE), encodeTail(status)]);
      }
    }
  }

  private async attach(ctx: OpContext, r: AttachReq): Promise<StatusCode> {
    if (!this.endpoints.has(r.endpoint)) return Status.NOENT;
    // ATTACH_F_BYPASS needs VIRTIO_IOMMU_F_BYPASS_CONFIG, which this device does not offer, so no
    // flag is known here: any flag is INVAL, as is a non-zero reserved field.
    if (r.reserved.some((b) => b !== 0) || r.flags !== 0) return Status.INVAL;
    const current = this.endpoints.get(r.endpoint);
    if (current === r.domain) return Status.OK;
    if (current !== undefined) {
      const s = await this.leave(ctx, r.endpoint, current);
      if (s !== Status.OK) return s;
    }
    const d = this.domain(r.domain, true) as Domain;
    d.endpoints.add(r.endpoint);
    this.endpoints.set(r.endpoint, r.domain);
    // The domain's mappings are replayed onto the endpoint's own container (QEMU replays the
    // endpoint's IOMMU memory region when it joins a domain).
    for (const m of d.mappings.entries()) {
      this.counters.backendCalls += 1;
      const s = await this.o.backend.map(ctx, r.endpoint, m.iova, m.phys, m.size, m.flags);
      if (s !== Status.OK) return s;
    }
    return Status.OK;
  }

  private async detach(ctx: OpContext, r: DetachReq): Promise<StatusCode> {
    if (!this.endpoints.has(r.endpoint) || !this.domains.has(r.domain)) return Status.NOENT;
    if (r.reserved.some((b) => b !== 0) || this.endpoints.get(r.endpoint) !== r.domain) return Status.INVAL;
    return this.leave(ctx, r.endpoint, r.domain);
  }

  /**
   * Takes an endpoint out of its domain: the domain's mappings are removed from the endpoint's own
   * container (QEMU unmaps the endpoint's view), and a domain left with no endpoint is freed with
   * its mappings.
   */
  private async leave(ctx: OpContext, endpoint: number, id: number): Promise<StatusCode> {
    const d = this.domains.get(id) as Domain;
    d.endpoints.delete(endpoint);
    this.endpoints.set(endpoint, undefined);
    for (const m of d.mappings.entries()) {
      const s = await this.backendUnmap(ctx, [endpoint], m);
      if (s !== Status.OK) return s;
    }
    if (d.endpoints.size === 0) this.domains.delete(id);
    return Status.OK;
  }

  private async map(ctx: OpContext, r: MapReq): Promise<StatusCode> {
    if ((r.flags & ~MAP_F_MASK) !== 0) return Status.INVAL;
    const d = this.domains.get(r.domain);
    if (!d) return Status.NOENT;
    if (r.virtEnd < r.virtStart) return Status.INVAL;
    if (r.virtStart % GRANULE !== 0n || r.physStart % GRANULE !== 0n || (r.virtEnd + 1n) % GRANULE !== 0n) return Status.RANGE;
    if (r.virtEnd > INPUT_RANGE_END) return Status.RANGE;
    if (r.physStart + (r.virtEnd - r.virtStart) > PHYS_END) return Status.FAULT;
    if (r.flags & MAP_F_MMIO) return Status.UNSUPP; // VIRTIO_IOMMU_F_MMIO is not offered
    const m: Mapping = { iova: Number(r.virtStart), size: Number(r.virtEnd - r.virtStart) + 1, phys: Number(r.physStart), flags: r.flags };
    if (d.mappings.find(m.iova, m.size)) return Status.INVAL;
    for (const endpoint of [...d.endpoints].sort((a, b) => a - b)) {
      this.counters.backendCalls += 1;
      const s = await this.o.backend.map(ctx, endpoint, m.iova, m.phys, m.size, m.flags);
      if (s !== Status.OK) return s;
    }
    d.mappings.insert(m);
    return Status.OK;
  }

  /**
   * Removes every mapping inside [virt_start, virt_end]. A mapping only partly covered would be
   * split: RANGE, and nothing is removed. A range with no mapping is fine (OK).
   */
  private async unmap(ctx: OpContext, r: UnmapReq): Promise<StatusCode> {
    const d = this.domains.get(r.domain);
    if (!d) return Status.NOENT;
    if (r.virtEnd < r.virtStart) return Status.INVAL;
    if (r.virtStart > INPUT_RANGE_END) return Status.OK;
    const start = Number(r.virtStart);
    const size = Number(r.virtEnd > INPUT_RANGE_END ? INPUT_RANGE_END : r.virtEnd) - start + 1;
    const hits = d.mappings.overlapping(start, size);
    if (hits.some((m) => m.iova < start || m.iova + m.size > start + size)) return Status.RANGE;
    const endpoints = [...d.endpoints].sort((a, b) => a - b);
    for (const m of hits) {
      const s = await this.backendUnmap(ctx, endpoints, m);
      if (s !== Status.OK) return s;
      d.mappings.delete(m);
    }
    return Status.OK;
  }

  /** One mapping removed from the host for each of `endpoints`. */
  private async backendUnmap(ctx: OpContext, endpoints: readonly number[], m: Mapping): Promise<StatusCode> {
    for (const endpoint of endpoints) {
      this.counters.backendCalls += 1;
      const s = await this.o.backend.unmap(ctx, endpoint, m.iova, m.size);
      if (s !== Status.OK) return s;
    }
    return Status.OK;
  }

  stats(): Record<string, number> {
    const failures = Object.fromEntries(Object.entries(this.failures).map(([k, v]) => [`status.${k}`, v]));
    return { ...this.counters, ...failures };
  }
}
