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

/**
 * vmm.hwptInvalidate=queue: the data of the queue-based uAPI that was proposed and never merged
 * ([PATCH v2 17/17] iommu/arm-smmu-v3: Add arm_smmu_cache_invalidate_user, Nicolin Chen, May 2023):
 *
 * struct iommu_hwpt_invalidate_arm_smmuv3 { __aligned_u64 cmdq_uptr; __aligned_u64 cmdq_cons_uptr;
 *   __u32 cmdq_prod; __u32 cmdq_entry_size; __u32 cmdq_log2size; __u32 __reserved; }  (32 bytes)
 *
 * The VMM hands the kernel where the guest's queue is and its CONS and PROD; the kernel reads the
 * entries in between itself. vmmsim sends it as the one entry of an iommu_hwpt_invalidate whose
 * data_type is IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE (a number of vmmsim's: the proposal
 * predates the vIOMMU data types), with cmdq_uptr the queue's guest-physical address (the VMM's
 * mapping of guest RAM is the same memory) and CONS carried by value. On a refused entry the
 * kernel hands back entry_num = the index of the entry, counted from CONS (the proposal wrote CONS
 * back with CERROR_ILL).
 */
export const IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE = 0x5e1;
export const HWPT_QUEUE_DATA_SIZE = 32;

export interface HwptQueueData {
  cmdqGpa: number;
  cons: number;
  prod: number;
  entrySize: number;
  log2size: number;
}

export function encodeHwptQueueData(d: HwptQueueData): Buffer {
  const b = Buffer.alloc(HWPT_QUEUE_DATA_SIZE);
  b.writeBigUInt64LE(BigInt(d.cmdqGpa), 0);
  b.writeBigUInt64LE(BigInt(d.cons >>> 0), 8);
  b.writeUInt32LE(d.prod >>> 0, 16);
  b.writeUInt32LE(d.entrySize >>> 0, 20);
  b.writeUInt32LE(d.log2size >>> 0, 24);
  return b;
}

/** Undefined when cut short or __reserved is set. */
export function decodeHwptQueueData(b: Buffer): HwptQueueData | undefined {
  if (b.length < HWPT_QUEUE_DATA_SIZE || b.readUInt32LE(28) !== 0) return undefined;
  return {
    cmdqGpa: Number(b.readBigUInt64LE(0)),
    cons: Number(b.readBigUInt64LE(8) & 0xffff_ffffn),
    prod: b.readUInt32LE(16),
    entrySize: b.readUInt32LE(20),
    log2size: b.readUInt32LE(24),
  };
}
