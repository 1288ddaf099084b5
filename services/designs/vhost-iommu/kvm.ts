import { GUEST_RAM_SIZE } from '../../machine/board.js';
import { mapGuestRam } from '../../machine/guest-ram.js';
import type { MmioAccess } from '../../formats/kvm-run.js';
import { Mutex } from '../../machine/mutex.js';
import type { OpContext } from '../../runtime/op-context.js';
import { type HandlerResult, type RoleEnv, type Request, type RunTopology } from '../../runtime/role-api.js';
import { IOMMU_READ, IOMMU_WRITE, encodeKernelIommuMap } from '../../formats/vfio-type1.js';
import { VirtioIommuDevice, statusOfErrno, type VirtioIommuBackend } from '../../machine/virtio-iommu-device.js';
import { MAP_F_WRITE, VIOMMU_EVENT_VQ, VIOMMU_NOTIFY_GPA, VIOMMU_REQUEST_QUEUE, VIOMMU_REQUEST_VQ } from '../../formats/virtio-iommu.js';
import type { KvmDevice, KvmDeviceFactory } from '../../kvm/device.js';

/**
 * In the kernel the device calls iommu_map()/iommu_unmap() itself, on the host domain of the
 * endpoint's assigned device (each device has its own, as under virtio-iommu with QEMU).
 */
function kernelBackend(t: RunTopology, vm: number): VirtioIommuBackend {
  const deviceOf = new Map<number, number>();
  t.devices.forEach((d, i) => {
    if (d.vm === vm) deviceOf.set(d.vsid, i);
  });
  const device = (endpoint: number): number => deviceOf.get(endpoint) ?? 0xffff_ffff;
  return {
    async map(ctx, endpoint, iova, gpa, size, flags) {
      const prot = IOMMU_READ | (flags & MAP_F_WRITE ? IOMMU_WRITE : 0);
      const r = await ctx.call('vfio', 'IOMMU_MAP', encodeKernelIommuMap({ vm, prot, iova, gpa, size, device: device(endpoint) }));
      return statusOfErrno(r.status);
    },
    async unmap(ctx, endpoint, iova, size) {
      const r = await ctx.call('vfio', 'IOMMU_UNMAP', encodeKernelIommuMap({ vm, prot: 0, iova, gpa: 0, size, device: device(endpoint) }));
      return statusOfErrno(r.status);
    },
  };
}

interface VmState {
  device: VirtioIommuDevice;
  /** The vhost virtqueue's mutex: one worker serves the ring at a time. */
  vq: Mutex;
}

/**
 * vhost-iommu, as vmmsim extrapolates it: the virtio-iommu device in the host kernel. vhost
 * registered an ioeventfd on the QueueNotify register, so KVM completes the guest's write itself
 * and the vhost worker thread wakes up and serves the queue straight from guest memory, calling
 * iommu_map()/iommu_unmap() on each endpoint's host domain. Nothing reaches the VMM: no user exit,
 * no ioctl. The prototype this follows (jpbrucker/linux drivers/vhost/iommu.c, Tomasz Nowicki and
 * Jean-Philippe Brucker, not upstream) stops short of that: its MAP and UNMAP update a software
 * vhost_iotlb per domain for vhost endpoints (vhost-net...) and it never calls iommu_map, so
 * assigned devices are not covered there. The kick, the worker and the request handling are the
 * prototype's; the host-domain calls are vmmsim's extension.
 */
class VhostIommu implements KvmDevice {
  private readonly vms = new Map<number, VmState>();
  private readonly counters = { notifies: 0, ramMissing: 0 };

  constructor(private readonly env: RoleEnv) {}

  private state(vm: number): VmState | undefined {
    const have = this.vms.get(vm);
    if (have) return have;
    const mem = mapGuestRam(this.env.topology.ramDir, vm);
    if (!mem) return undefined;
    const attachments = this.env.topology.devices.flatMap((d, i) => (d.vm === vm ? [{ endpoint: d.vsid, domain: i + 1 }] : []));
    const device = new VirtioIommuDevice({ mem, layout: VIOMMU_REQUEST_QUEUE, ramBytes: GUEST_RAM_SIZE, attachments, backend: kernelBackend(this.env.topology, vm), requestStep: 'kernel.vhost_req' });
    const s = { device, vq: new Mutex(`kvm.vhost-iommu-${vm}.vq`) };
    this.vms.set(vm, s);
    return s;
  }

  async mmio(access: MmioAccess, req: Request, ctx: OpContext, vm: number): Promise<HandlerResult | undefined> {
    // Only the ioeventfds' writes (one per queue) are the kernel's; anything else goes to the VMM.
    if (!access.isWrite || access.physAddr !== VIOMMU_NOTIFY_GPA) return undefined;
    if (access.data === VIOMMU_EVENT_VQ) return { status: 0, payload: req.payload }; // event buffers: nothing to do
    if (access.data !== VIOMMU_REQUEST_VQ) return undefined;
    this.counters.notifies += 1;
    ctx.charge('host.thread_wakeup');
    const s = this.state(vm);
    if (!s) {
      this.counters.ramMissing += 1;
      return { status: 0, payload: req.payload };
    }
    await s.vq.with(() => s.device.kick(ctx), ctx);
    return { status: 0, payload: req.payload };
  }

  stats(): Record<string, number> {
    const out: Record<string, number> = { ...this.counters };
    for (const s of this.vms.values()) {
      for (const [k, v] of Object.entries(s.device.stats())) out[k] = (out[k] ?? 0) + v;
    }
    return out;
  }
}

export const kvmDevice: KvmDeviceFactory = (env) => new VhostIommu(env);
