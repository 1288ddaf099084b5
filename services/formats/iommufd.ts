/**
 * The iommufd uAPI pieces vmmsim puts on the wire (include/uapi/linux/iommufd.h).
 *
 * struct iommu_hwpt_invalidate { __u32 size; __u32 hwpt_id; __aligned_u64 data_uptr;
 *   __u32 data_type; __u32 entry_len; __u32 entry_num; __u32 __reserved; }  (32 bytes)
 * On the wire the struct is followed by the array data_uptr points to.
 */
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1;
export const HWPT_INVALIDATE_SIZE = 32;
/** The kernel refuses more entries than this in one call. */
export const HWPT_INVALIDATE_MAX_ENTRIES = 1 << 19;
/** Entries longer than a page are refused. */
export const KERNEL_PAGE_SIZE = 4096;
/** Commands per chunk the kernel issues to the physical CMDQ, each chunk followed by a CMD_SYNC. */
export const HWPT_INVALIDATE_CHUNK = 63;

export interface HwptInvalidate {
  size: number;
  hwptId: number;
  dataUptr: number;
  dataType: number;
  entryLen: number;
  entryNum: number;
  reserved: number;
}

export function encodeHwptInvalidate(h: HwptInvalidate, entries: Buffer): Buffer {
  const b = Buffer.alloc(HWPT_INVALIDATE_SIZE + entries.length);
  b.writeUInt32LE(h.size, 0);
  b.writeUInt32LE(h.hwptId, 4);
  b.writeBigUInt64LE(BigInt(h.dataUptr), 8);
  b.writeUInt32LE(h.dataType, 16);
  b.writeUInt32LE(h.entryLen, 20);
  b.writeUInt32LE(h.entryNum, 24);
  b.writeUInt32LE(h.reserved, 28);
  entries.copy(b, HWPT_INVALIDATE_SIZE);
  return b;
}

/** Splits a payload into the struct and the user array; undefined if the struct is cut short. */
export function decodeHwptInvalidate(b: Buffer): { head: HwptInvalidate; entries: Buffer } | undefined {
  if (b.length < HWPT_INVALIDATE_SIZE) return undefined;
  return {
    head: {
      size: b.readUInt32LE(0),
      hwptId: b.readUInt32LE(4),
      dataUptr: Number(b.readBigUInt64LE(8)),
      dataType: b.readUInt32LE(16),
      entryLen: b.readUInt32LE(20),
      entryNum: b.readUInt32LE(24),
      reserved: b.readUInt32LE(28),
    },
    entries: b.subarray(HWPT_INVALIDATE_SIZE),
  };
}

/** The struct as the kernel hands it back: only entry_num changes. */
export function withEntryNum(h: HwptInvalidate, entryNum: number): Buffer {
  return encodeHwptInvalidate({ ...h, entryNum }, Buffer.alloc(0));
}
