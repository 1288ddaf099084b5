/**
 * The VFIO type1 interface a VMM uses to shadow guest mappings into the host IOMMU
 * (include/uapi/linux/vfio.h), and the in-kernel iommu_map()/iommu_unmap() request an in-kernel
 * device (vhost-iommu) makes. Little-endian, as on the hosts simulated.
 */
import { PAGE_SIZE } from './page.js';

/** struct vfio_iommu_type1_dma_map: argsz, flags, vaddr, iova, size. */
export const DMA_MAP_SIZE = 32;
/** struct vfio_iommu_type1_dma_unmap: argsz, flags, iova, size (no dirty bitmap). */
export const DMA_UNMAP_SIZE = 24;
export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
/** IOMMU_READ / IOMMU_WRITE of iommu_map(). */
export const IOMMU_READ = 1 << 0;
export const IOMMU_WRITE = 1 << 1;
/** Where a VMM maps its guest's RAM in its own address space: vaddr = this + guest-physical. */
export const VMM_RAM_VADDR = 0x4000_0000_0000;

export interface DmaMap {
  argsz: number;
  flags: number;
  vaddr: number;
  iova: number;
  size: number;
}

export interface DmaUnmap {
  argsz: number;
  flags: number;
  iova: number;
  size: number;
}

export function encodeDmaMap(m: Omit<DmaMap, 'argsz'> & { argsz?: number }): Buffer {
  const b = Buffer.alloc(DMA_MAP_SIZE);
  b.writeUInt32LE(m.argsz ?? DMA_MAP_SIZE, 0);
  b.writeUInt32LE(m.flags >>> 0, 4);
  b.writeBigUInt64LE(BigInt(m.vaddr), 8);
  b.writeBigUInt64LE(BigInt(m.iova), 16);
  b.writeBigUInt64LE(BigInt(m.size), 24);
  return b;
}

/** undefined when the buffer is shorter than the struct (the kernel's copy_from_user would fault). */
export function decodeDmaMap(b: Buffer): DmaMap | undefined {
  if (b.length < DMA_MAP_SIZE) return undefined;
  return {
    argsz: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    vaddr: Number(b.readBigUInt64LE(8)),
    iova: Number(b.readBigUInt64LE(16)),
    size: Number(b.readBigUInt64LE(24)),
  };
}

export function encodeDmaUnmap(m: Omit<DmaUnmap, 'argsz'> & { argsz?: number }): Buffer {
  const b = Buffer.alloc(DMA_UNMAP_SIZE);
  b.writeUInt32LE(m.argsz ?? DMA_UNMAP_SIZE, 0);
  b.writeUInt32LE(m.flags >>> 0, 4);
  b.writeBigUInt64LE(BigInt(m.iova), 8);
  b.writeBigUInt64LE(BigInt(m.size), 16);
  return b;
}

export function decodeDmaUnmap(b: Buffer): DmaUnmap | undefined {
  if (b.length < DMA_UNMAP_SIZE) return undefined;
  return { argsz: b.readUInt32LE(0), flags: b.readUInt32LE(4), iova: Number(b.readBigUInt64LE(8)), size: Number(b.readBigUInt64LE(16)) };
}

/**
 * An ioctl on a VFIO container as it crosses from the VMM to the host kernel: the container's file
 * descriptor (the VMM holds one per container: one per device address space behind VT-d or
 * virtio-iommu, one per PHB under sPAPR), 4 bytes of padding, then the ioctl's argument struct.
 */
export const CONTAINER_IOCTL_HEADER = 8;

export function encodeContainerIoctl(fd: number, arg: Buffer): Buffer {
  const head = Buffer.alloc(CONTAINER_IOCTL_HEADER);
  head.writeUInt32LE(fd >>> 0, 0);
  return Buffer.concat([head, arg]);
}

/** undefined when the buffer is shorter than the header. */
export function decodeContainerIoctl(b: Buffer): { fd: number; arg: Buffer } | undefined {
  if (b.length < CONTAINER_IOCTL_HEADER) return undefined;
  return { fd: b.readUInt32LE(0), arg: b.subarray(CONTAINER_IOCTL_HEADER) };
}

/**
 * An in-kernel iommu_map()/iommu_unmap() on a host domain (vhost-iommu's extrapolation): the
 * domain of assigned device `device` (its topology index) of VM `vm`; paddr is guest-physical here.
 */
export interface KernelIommuMap {
  vm: number;
  prot: number;
  iova: number;
  /** Guest-physical address of the memory (the caller works in the guest's terms; vfio pins it). */
  gpa: number;
  size: number;
  /** The assigned device whose domain it is (each device has its own). */
  device: number;
}

/** vm, prot (u32 each), iova, gpa, size (u64 each), device (u32), 4 bytes of padding. */
export const KERNEL_IOMMU_MAP_SIZE = 40;

export function encodeKernelIommuMap(m: KernelIommuMap): Buffer {
  const b = Buffer.alloc(KERNEL_IOMMU_MAP_SIZE);
  b.writeUInt32LE(m.vm >>> 0, 0);
  b.writeUInt32LE(m.prot >>> 0, 4);
  b.writeBigUInt64LE(BigInt(m.iova), 8);
  b.writeBigUInt64LE(BigInt(m.gpa), 16);
  b.writeBigUInt64LE(BigInt(m.size), 24);
  b.writeUInt32LE(m.device >>> 0, 32);
  return b;
}

export function decodeKernelIommuMap(b: Buffer): KernelIommuMap | undefined {
  if (b.length < KERNEL_IOMMU_MAP_SIZE) return undefined;
  return {
    vm: b.readUInt32LE(0), prot: b.readUInt32LE(4), iova: Number(b.readBigUInt64LE(8)), gpa: Number(b.readBigUInt64LE(16)), size: Number(b.readBigUInt64LE(24)),
    device: b.readUInt32LE(32),
  };
}

/** True when [addr, addr + size) is a non-empty whole number of pages. */
export function pageAligned(addr: number, size: number): boolean {
  return size > 0 && addr % PAGE_SIZE === 0 && size % PAGE_SIZE === 0;
}
