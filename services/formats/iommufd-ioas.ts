/**
 * IOMMU_IOAS_MAP (0x85) and IOMMU_IOAS_UNMAP (0x86): the VMM changes an I/O address space, and so
 * every paging HWPT over it, the stage-2 parent of a nested VM included (include/uapi/linux/iommufd.h).
 *
 *   struct iommu_ioas_map   { __u32 size; __u32 flags; __u32 ioas_id; __u32 __reserved;
 *                             __aligned_u64 user_va; __aligned_u64 length; __aligned_u64 iova; }
 *   struct iommu_ioas_unmap { __u32 size; __u32 ioas_id; __aligned_u64 iova; __aligned_u64 length; }
 *
 * The unmap's reply carries the struct back with `length` set to the bytes unmapped.
 */
export const IOAS_MAP_SIZE = 40;
export const IOAS_UNMAP_SIZE = 24;

export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;

export interface IoasMap {
  size: number;
  flags: number;
  ioasId: number;
  reserved: number;
  userVa: number;
  length: number;
  iova: number;
}

export interface IoasUnmap {
  size: number;
  ioasId: number;
  iova: number;
  length: number;
}

export function encodeIoasMap(m: IoasMap): Buffer {
  const b = Buffer.alloc(IOAS_MAP_SIZE);
  b.writeUInt32LE(m.size >>> 0, 0);
  b.writeUInt32LE(m.flags >>> 0, 4);
  b.writeUInt32LE(m.ioasId >>> 0, 8);
  b.writeUInt32LE(m.reserved >>> 0, 12);
  b.writeBigUInt64LE(BigInt(m.userVa), 16);
  b.writeBigUInt64LE(BigInt(m.length), 24);
  b.writeBigUInt64LE(BigInt(m.iova), 32);
  return b;
}

/** Undefined when the buffer is shorter than the struct (copy_from_user of `size` fails: EFAULT). */
export function decodeIoasMap(b: Buffer): IoasMap | undefined {
  if (b.length < IOAS_MAP_SIZE) return undefined;
  return {
    size: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    ioasId: b.readUInt32LE(8),
    reserved: b.readUInt32LE(12),
    userVa: Number(b.readBigUInt64LE(16)),
    length: Number(b.readBigUInt64LE(24)),
    iova: Number(b.readBigUInt64LE(32)),
  };
}

export function encodeIoasUnmap(u: IoasUnmap): Buffer {
  const b = Buffer.alloc(IOAS_UNMAP_SIZE);
  b.writeUInt32LE(u.size >>> 0, 0);
  b.writeUInt32LE(u.ioasId >>> 0, 4);
  b.writeBigUInt64LE(BigInt(u.iova), 8);
  b.writeBigUInt64LE(BigInt(u.length), 16);
  return b;
}

export function decodeIoasUnmap(b: Buffer): IoasUnmap | undefined {
  if (b.length < IOAS_UNMAP_SIZE) return undefined;
  return { size: b.readUInt32LE(0), ioasId: b.readUInt32LE(4), iova: Number(b.readBigUInt64LE(8)), length: Number(b.readBigUInt64LE(16)) };
}
