import { Errno } from '../runtime/errors.js';
import { encodeMmio } from '../formats/kvm-run.js';
import type { OpContext } from '../runtime/op-context.js';
import {
  VIRTIO_MEM_BLOCKS, VIRTIO_MEM_NOTIFY_GPA, VIRTIO_MEM_REQ, VIRTIO_MEM_REQ_GPA, VIRTIO_MEM_RESP, VIRTIO_MEM_RESP_GPA, VIRTIO_MEM_RESP_SIZE,
  decodeVirtioMemResp, encodeVirtioMemReq, virtioMemBlockGpa, type ResizeOp,
} from '../machine/virtio-mem.js';
import type { GuestKernel } from './driver.js';


/**
 * The guest's virtio-mem driver, resizing the VM as the host asks (workload.virtioMem): it gives
 * back `blocks` blocks of its region (UNPLUG), and on the next resize takes the same blocks back
 * (PLUG). Each request is written to guest RAM and the queue kicked: a trapped MMIO write that the
 * VMM serves. Successive unplugs walk down the region so each changes other stage-2 entries.
 */
export class VirtioMemDriver {
  private unplugged: number | undefined;
  readonly counters = { memUnplugs: 0, memPlugs: 0, memBlocksUnplugged: 0, memRequestsFailed: 0 };

  constructor(
    private readonly kernel: GuestKernel,
    private readonly blocks: number,
  ) {}

  /** The next resize: unplug when everything is plugged, else plug the unplugged blocks back. */
  next(): ResizeOp {
    return this.unplugged === undefined ? 'mem-unplug' : 'mem-plug';
  }

  /** Sends the next request; gives 0 or the -errno Linux's driver makes of the response. */
  async resize(ctx: OpContext): Promise<number> {
    const op = this.next();
    const slots = Math.floor(VIRTIO_MEM_BLOCKS / this.blocks);
    const first = op === 'mem-unplug' ? VIRTIO_MEM_BLOCKS - (1 + (this.counters.memUnplugs % slots)) * this.blocks : (this.unplugged as number);
    const type = op === 'mem-unplug' ? VIRTIO_MEM_REQ.UNPLUG : VIRTIO_MEM_REQ.PLUG;
    const req = encodeVirtioMemReq({ type, addr: virtioMemBlockGpa(first), nbBlocks: this.blocks });
    this.kernel.ram.write(VIRTIO_MEM_REQ_GPA, req);
    const kick = encodeMmio({ physAddr: VIRTIO_MEM_NOTIFY_GPA, data: 0, len: 4, isWrite: true });
    const reply = await ctx.call('kvm', 'MMIO_WRITE', kick, [{ gpa: VIRTIO_MEM_REQ_GPA, data: req }], 'writel QueueNotify (vm_notify)');
    for (const w of reply.guestMemory) this.kernel.ram.write(Number(w.gpa), w.data);
    const status = reply.status < 0 ? reply.status : responseErrno(decodeVirtioMemResp(this.kernel.ram.read(VIRTIO_MEM_RESP_GPA, VIRTIO_MEM_RESP_SIZE)));
    if (status < 0) {
      this.counters.memRequestsFailed += 1;
      return status;
    }
    if (op === 'mem-unplug') {
      this.unplugged = first;
      this.counters.memUnplugs += 1;
      this.counters.memBlocksUnplugged += this.blocks;
    } else {
      this.unplugged = undefined;
      this.counters.memPlugs += 1;
    }
    return 0;
  }
}

/** virtio_mem_send_{plug,unplug}_request: ACK is success; NACK -EAGAIN, BUSY -ETXTBSY, anything else -EINVAL. */
function responseErrno(type: number | undefined): number {
  switch (type) {
    case VIRTIO_MEM_RESP.ACK:
      return 0;
    case VIRTIO_MEM_RESP.NACK:
      return -Errno.EAGAIN;
    case VIRTIO_MEM_RESP.BUSY:
      return -Errno.ETXTBSY;
    default:
      return -Errno.EINVAL;
  }
}
