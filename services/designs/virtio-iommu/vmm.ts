import { GUEST_RAM_SIZE } from '../../machine/board.js';
import { mapGuestRam } from '../../machine/guest-ram.js';
import { encodeMmio, type MmioAccess } from '../../formats/kvm-run.js';
import { Mutex } from '../../machine/mutex.js';
import type { OpContext } from '../../runtime/op-context.js';
import { type HandlerResult, type RoleEnv, type Request, type RunTopology } from '../../runtime/role-api.js';
import { VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VMM_RAM_VADDR, encodeContainerIoctl, encodeDmaMap, encodeDmaUnmap } from '../../formats/vfio-type1.js';
import { vfioContainers } from '../../machine/vfio-containers.js';
import { VirtioIommuDevice, statusOfErrno, type VirtioIommuBackend } from '../../machine/virtio-iommu-device.js';
import { MAP_F_WRITE, VIOMMU_NOTIFY_GPA, VIOMMU_REQUEST_QUEUE, VIOMMU_REQUEST_VQ } from '../../formats/virtio-iommu.js';
import type { VmmDevice, VmmDeviceFactory } from '../../qemu/device.js';

/**
 * What QEMU's IOMMU notifier does for a VFIO device behind virtio-iommu (vfio_iommu_map_notify):
 * one VFIO_IOMMU_MAP_DMA or UNMAP_DMA ioctl per mapping added or removed, on the container of the
 * endpoint's own address space (virtio_iommu_find_add_as gives each endpoint one, and
 * vfio_address_space_get one container per address space), with the VMM's address of the guest
 * memory. READ is always asked, WRITE when the mapping allows it.
 */
function vfioBackend(t: RunTopology, vm: number): VirtioIommuBackend {
  // Endpoint (vSID) -> the fd of its device's container.
  const fds = new Map<number, number>();
  for (const c of vfioContainers(t, true)) {
    if (c.vm !== vm) continue;
    for (const d of c.devices) fds.set(t.devices[d]?.vsid ?? -1, c.fd);
  }
  const fdOf = (endpoint: number): number => fds.get(endpoint) ?? -1;
  return {
    async map(ctx, endpoint, iova, gpa, size, flags) {
      const vfioFlags = VFIO_DMA_MAP_FLAG_READ | (flags & MAP_F_WRITE ? VFIO_DMA_MAP_FLAG_WRITE : 0);
      const r = await ctx.call('vfio', 'VFIO_DMA_MAP', encodeContainerIoctl(fdOf(endpoint), encodeDmaMap({ flags: vfioFlags, vaddr: VMM_RAM_VADDR + gpa, iova, size })));
      return statusOfErrno(r.status);
    },
    async unmap(ctx, endpoint, iova, size) {
      const r = await ctx.call('vfio', 'VFIO_DMA_UNMAP', encodeContainerIoctl(fdOf(endpoint), encodeDmaUnmap({ flags: 0, iova, size })));
      return statusOfErrno(r.status);
    },
  };
}

/**
 * QEMU's virtio-iommu device (hw/virtio/virtio-iommu.c). The guest's kick is a write to the
 * QueueNotify register that KVM turns into an ioeventfd signal: the vCPU goes straight back to the
 * guest (no KVM_EXIT_MMIO, so no exit.to_user), and QEMU's main loop thread wakes up, takes the
 * big lock and runs virtio_iommu_handle_command over the queue in guest RAM, which QEMU maps.
 */
class VirtioIommuVmm implements VmmDevice {
  private readonly bql: Mutex;
  private device: VirtioIommuDevice | undefined;
  private readonly counters = { notifies: 0, otherMmio: 0, ramMissing: 0 };

  constructor(private readonly env: RoleEnv) {
    this.bql = new Mutex(`${env.self.name}.bql`);
  }

  /** The device, once the guest's RAM exists to map (the guest creates it when it starts). */
  private ensureDevice(): VirtioIommuDevice | undefined {
    if (this.device) return this.device;
    const vm = this.env.self.index;
    const mem = mapGuestRam(this.env.topology.ramDir, vm);
    if (!mem) return undefined;
    const attachments = this.env.topology.devices.flatMap((d, i) => (d.vm === vm ? [{ endpoint: d.vsid, domain: i + 1 }] : []));
    this.device = new VirtioIommuDevice({ mem, layout: VIOMMU_REQUEST_QUEUE, ramBytes: GUEST_RAM_SIZE, attachments, backend: vfioBackend(this.env.topology, vm), requestStep: 'vmm.virtio_req' });
    return this.device;
  }

  async mmioExit(access: MmioAccess, req: Request, ctx: OpContext): Promise<HandlerResult> {
    // Other virtio-mmio registers (and the event queue's kicks) change nothing this model tracks.
    // Only QueueNotify writes have an ioeventfd: anything else is a real KVM_EXIT_MMIO to here.
    if (!access.isWrite || access.physAddr !== VIOMMU_NOTIFY_GPA || access.data !== VIOMMU_REQUEST_VQ) {
      this.counters.otherMmio += 1;
      if (!(access.isWrite && access.physAddr === VIOMMU_NOTIFY_GPA)) ctx.charge('exit.to_user');
      return { status: 0, payload: access.isWrite ? req.payload : encodeMmio({ ...access, data: 0 }) };
    }
    this.counters.notifies += 1;
    ctx.charge('host.thread_wakeup');
    const device = this.ensureDevice();
    if (!device) {
      this.counters.ramMissing += 1;
      return { status: 0, payload: req.payload };
    }
    await this.bql.with(() => device.kick(ctx), ctx);
    return { status: 0, payload: req.payload };
  }

  stats(): Record<string, number> {
    return { ...this.counters, ...(this.device?.stats() ?? {}), bqlContended: this.bql.contended };
  }
}

export const vmmDevice: VmmDeviceFactory = (env) => new VirtioIommuVmm(env);
