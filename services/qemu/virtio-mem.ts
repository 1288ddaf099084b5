import { IOAS_MAP_SIZE, IOAS_UNMAP_SIZE, IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE, encodeIoasMap, encodeIoasUnmap } from '../formats/iommufd-ioas.js';

import type { MmioAccess } from '../formats/kvm-run.js';
import { Mutex } from '../machine/mutex.js';
import type { OpContext } from '../runtime/op-context.js';
import { type HandlerResult, type RoleEnv, type Request } from '../runtime/role-api.js';
import { VMM_RAM_VADDR } from '../formats/vfio-type1.js';
import {
  VIRTIO_MEM_BLOCKS, VIRTIO_MEM_BLOCK_SIZE, VIRTIO_MEM_MMIO_BASE, VIRTIO_MEM_NOTIFY_GPA, VIRTIO_MEM_REQ, VIRTIO_MEM_REQ_GPA,
  VIRTIO_MEM_RESP, VIRTIO_MEM_RESP_GPA, decodeVirtioMemReq, encodeVirtioMemResp, virtioMemBlockGpa, virtioMemRange,
} from '../machine/virtio-mem.js';
import { iommufdLayoutOf } from '../designs/registry.js';
import { designOf } from '../designs/registry.js';

/** The device's virtio-mmio window: accesses in it are the virtio-mem device's, not the vIOMMU's. */
export function isVirtioMemMmio(physAddr: number): boolean {
  return physAddr >= VIRTIO_MEM_MMIO_BASE && physAddr < VIRTIO_MEM_MMIO_BASE + 0x200;
}


/**
 * QEMU's virtio-mem device of one VM: the plugged state of each block of its region, and the RAM
 * discard notifications to VFIO (IOMMU_IOAS_UNMAP of an unplugged range, IOMMU_IOAS_MAP of each
 * block plugged back, as vfio_ram_discard_notify_{discard,populate} do). Requests that break the
 * spec's rules get VIRTIO_MEM_RESP_ERROR, as virtio_mem_handle_request answers them.
 */
export class VirtioMemDevice {
  private readonly plugged = new Uint8Array(VIRTIO_MEM_BLOCKS).fill(1);
  private readonly ioasId: number;
  private readonly notifyVfio: boolean;
  readonly counters = { memRequests: 0, memUnplugged: 0, memPlugged: 0, memErrors: 0 };

  /**
   * The VMM's big lock as this device takes it: the vIOMMU models hold their own instance of the
   * same name, and modeled time queues every hold of one name as one resource.
   */
  private readonly bql: Mutex;

  constructor(env: RoleEnv) {
    this.bql = new Mutex(`${env.self.name}.bql`);
    this.ioasId = iommufdLayoutOf(env.topology).ioasId;
    // When VFIO's listener maps all guest RAM into the VM's IOAS (no vIOMMU, or the stage-2 parent of
    // a nested design), a discard must reach it. With a shadowing vIOMMU only the guest's DMA mappings
    // are in the host table, and emulated devices have no host table at all.
    const host = designOf(env.topology.model).traits.hostTables;
    this.notifyVfio = (host === 'stage2' || host === 'nested') && env.topology.devices.some((d) => d.vm === env.self.index);
  }

  /** A trapped access to the device's window: a queue kick serves the request in guest RAM. */
  async mmioExit(access: MmioAccess, req: Request, ctx: OpContext): Promise<HandlerResult> {
    if (!access.isWrite || access.physAddr !== VIRTIO_MEM_NOTIFY_GPA) return { status: 0, payload: req.payload };
    const buf = req.guestMemory.find((m) => Number(m.gpa) === VIRTIO_MEM_REQ_GPA)?.data;
    this.counters.memRequests += 1;
    // QEMU serves the queue from its main loop, under the big lock, discard notifications included.
    const resp = await this.bql.with(async () => {
      ctx.charge('vmm.virtio_req');
      return buf ? this.serve(buf, ctx) : VIRTIO_MEM_RESP.ERROR;
    }, ctx);
    if (resp !== VIRTIO_MEM_RESP.ACK) this.counters.memErrors += 1;
    return { status: 0, payload: req.payload, guestMemory: [{ gpa: VIRTIO_MEM_RESP_GPA, data: encodeVirtioMemResp(resp) }] };
  }

  private async serve(buf: Buffer, ctx: OpContext): Promise<number> {
    const r = decodeVirtioMemReq(buf);
    if (!r) return VIRTIO_MEM_RESP.ERROR;
    if (r.type === VIRTIO_MEM_REQ.UNPLUG_ALL) return this.unplug(ctx, 0, VIRTIO_MEM_BLOCKS, true);
    if (r.type !== VIRTIO_MEM_REQ.PLUG && r.type !== VIRTIO_MEM_REQ.UNPLUG) return VIRTIO_MEM_RESP.ERROR;
    const first = virtioMemRange(r.addr, r.nbBlocks);
    if (first === undefined) return VIRTIO_MEM_RESP.ERROR;
    return r.type === VIRTIO_MEM_REQ.UNPLUG ? this.unplug(ctx, first, r.nbBlocks, false) : this.plug(ctx, first, r.nbBlocks);
  }

  /**
   * UNPLUG: every block must be plugged; the RAM is discarded and VFIO unmaps it in one call.
   * UNPLUG_ALL discards each run of plugged blocks, one notification (one ioctl) per run, as
   * QEMU walks the plugged ranges.
   */
  private async unplug(ctx: OpContext, first: number, n: number, all: boolean): Promise<number> {
    const range = this.plugged.subarray(first, first + n);
    if (!all && range.some((b) => b === 0)) return VIRTIO_MEM_RESP.ERROR;
    for (const [start, blocks] of pluggedRuns(range, first)) {
      if (this.notifyVfio) {
        const unmap = encodeIoasUnmap({ size: IOAS_UNMAP_SIZE, ioasId: this.ioasId, iova: virtioMemBlockGpa(start), length: blocks * VIRTIO_MEM_BLOCK_SIZE });
        const r = await ctx.call('vfio', 'IOAS_UNMAP', unmap);
        if (r.status < 0) return VIRTIO_MEM_RESP.ERROR;
      }
      this.plugged.fill(0, start, start + blocks);
      this.counters.memUnplugged += blocks;
    }
    return VIRTIO_MEM_RESP.ACK;
  }

  /** PLUG: every block must be unplugged; VFIO maps them back one block (one ioctl) at a time. */
  private async plug(ctx: OpContext, first: number, n: number): Promise<number> {
    if (this.plugged.subarray(first, first + n).some((b) => b === 1)) return VIRTIO_MEM_RESP.ERROR;
    if (this.notifyVfio) {
      for (let k = first; k < first + n; k++) {
        const gpa = virtioMemBlockGpa(k);
        const map = encodeIoasMap({
          size: IOAS_MAP_SIZE, flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, ioasId: this.ioasId, reserved: 0,
          userVa: VMM_RAM_VADDR + gpa, length: VIRTIO_MEM_BLOCK_SIZE, iova: gpa,
        });
        const r = await ctx.call('vfio', 'IOAS_MAP', map);
        if (r.status < 0) {
          // A listener refused: QEMU notifies the blocks already populated as discarded again and the
          // request fails whole.
          if (k > first) await ctx.call('vfio', 'IOAS_UNMAP', encodeIoasUnmap({ size: IOAS_UNMAP_SIZE, ioasId: this.ioasId, iova: virtioMemBlockGpa(first), length: (k - first) * VIRTIO_MEM_BLOCK_SIZE }));
          return VIRTIO_MEM_RESP.ERROR;
        }
      }
    }
    this.plugged.fill(1, first, first + n);
    this.counters.memPlugged += n;
    return VIRTIO_MEM_RESP.ACK;
  }
}

/** The runs of plugged blocks in `range` (block `first` onwards), as [first block, blocks]. */
function pluggedRuns(range: Uint8Array, first: number): [number, number][] {
  const runs: [number, number][] = [];
  let start = -1;
  for (let i = 0; i <= range.length; i++) {
    const on = i < range.length && range[i] === 1;
    if (on && start < 0) start = i;
    if (!on && start >= 0) {
      runs.push([first + start, i - start]);
      start = -1;
    }
  }
  return runs;
}
