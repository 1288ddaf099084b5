/**
 * virtio-mem (virtio spec 1.2, section 5.15): the device through which the host grows and shrinks
 * a VM's memory block by block. The guest's driver asks with requests on its one virtqueue; for an
 * UNPLUG the VMM discards the blocks' RAM, and QEMU's VFIO listener (a RamDiscardListener) then
 * unmaps them from the VM's I/O address space: a host-side stage-2 change that every physical SMMU
 * walking that stage 2 must invalidate. A PLUG maps them back, one IOAS_MAP per block as QEMU's
 * populate notifier does.
 *
 * The device's memory region is the top of guest RAM, plugged whole at boot; no workload buffer,
 * queue or table lives there (board.ts), so the guest gives blocks back without moving anything.
 */
import { GUEST_RAM_SIZE } from './board.js';

/** The device's virtio-mmio window (QEMU's virt board puts virtio-mmio transports in this area). */
export const VIRTIO_MEM_MMIO_BASE = 0x0b10_0000;
/** VIRTIO_MMIO_QUEUE_NOTIFY: the guest's kick, trapped to the VMM (no ioeventfd offload for virtio-mem). */
export const VIRTIO_MEM_NOTIFY_GPA = VIRTIO_MEM_MMIO_BASE + 0x50;
/** Device block size: 2 MiB, the transparent-huge-page size QEMU picks by default on 4 KiB-page hosts. */
export const VIRTIO_MEM_BLOCK_SIZE = 0x20_0000;
/** The device-managed region: the top 1 GiB of guest RAM. */
export const VIRTIO_MEM_REGION_SIZE = 0x4000_0000;
export const VIRTIO_MEM_REGION_BASE = GUEST_RAM_SIZE - VIRTIO_MEM_REGION_SIZE;
export const VIRTIO_MEM_BLOCKS = VIRTIO_MEM_REGION_SIZE / VIRTIO_MEM_BLOCK_SIZE;
/** Where the driver keeps its request and response buffers (guest-physical, below the region). */
export const VIRTIO_MEM_REQ_GPA = 0x7800_0000;
export const VIRTIO_MEM_RESP_GPA = VIRTIO_MEM_REQ_GPA + 0x100;

/** The operations a resize is reported as (not workload operations: throughput leaves them out). */
export type ResizeOp = 'mem-unplug' | 'mem-plug';
export const RESIZE_OPS: readonly ResizeOp[] = ['mem-unplug', 'mem-plug'];

/** True for a resize operation, also with a phase or device-kind suffix (mem-unplug@before). */
export function isResizeOp(op: string): boolean {
  return RESIZE_OPS.some((r) => op === r || op.startsWith(`${r}@`));
}

export const VIRTIO_MEM_REQ = { PLUG: 0, UNPLUG: 1, UNPLUG_ALL: 2, STATE: 3 } as const;
export const VIRTIO_MEM_RESP = { ACK: 0, NACK: 1, BUSY: 2, ERROR: 3 } as const;

/** struct virtio_mem_req: le16 type, le16 padding[3], then { le64 addr; le16 nb_blocks; le16 padding[3]; }. */
export const VIRTIO_MEM_REQ_SIZE = 24;
/** struct virtio_mem_resp: le16 type, le16 padding[3], le16 state (STATE requests only). */
export const VIRTIO_MEM_RESP_SIZE = 10;

export interface VirtioMemReq {
  type: number;
  addr: number;
  nbBlocks: number;
}

export function encodeVirtioMemReq(r: VirtioMemReq): Buffer {
  const b = Buffer.alloc(VIRTIO_MEM_REQ_SIZE);
  b.writeUInt16LE(r.type, 0);
  b.writeBigUInt64LE(BigInt(r.addr), 8);
  b.writeUInt16LE(r.nbBlocks, 16);
  return b;
}

/** Undefined when the buffer is shorter than the struct (the device then answers ERROR). */
export function decodeVirtioMemReq(b: Buffer): VirtioMemReq | undefined {
  if (b.length < VIRTIO_MEM_REQ_SIZE) return undefined;
  return { type: b.readUInt16LE(0), addr: Number(b.readBigUInt64LE(8)), nbBlocks: b.readUInt16LE(16) };
}

export function encodeVirtioMemResp(type: number, state = 0): Buffer {
  const b = Buffer.alloc(VIRTIO_MEM_RESP_SIZE);
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(state, 8);
  return b;
}

export function decodeVirtioMemResp(b: Buffer): number | undefined {
  return b.length < 2 ? undefined : b.readUInt16LE(0);
}

/** The guest-physical address of block k of the region. */
export function virtioMemBlockGpa(k: number): number {
  return VIRTIO_MEM_REGION_BASE + k * VIRTIO_MEM_BLOCK_SIZE;
}

/**
 * Checks a PLUG/UNPLUG range as the spec has the device do: the address block-aligned, at least one
 * block, the whole range inside the region. Gives the first block's index, or undefined (ERROR).
 */
export function virtioMemRange(addr: number, nbBlocks: number): number | undefined {
  if (nbBlocks < 1 || addr % VIRTIO_MEM_BLOCK_SIZE !== 0) return undefined;
  const first = (addr - VIRTIO_MEM_REGION_BASE) / VIRTIO_MEM_BLOCK_SIZE;
  if (first < 0 || first + nbBlocks > VIRTIO_MEM_BLOCKS) return undefined;
  return first;
}
