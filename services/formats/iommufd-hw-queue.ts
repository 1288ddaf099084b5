/**
 * iommufd's HW queue uAPI (include/uapi/linux/iommufd.h):
 *
 * struct iommu_hw_queue_alloc { __u32 size; __u32 flags; __u32 viommu_id; __u32 type; __u32 index;
 *   __u32 out_hw_queue_id; __aligned_u64 nesting_parent_iova; __aligned_u64 length; }  (40 bytes)
 * struct iommu_destroy { __u32 size; __u32 id; }  (8 bytes)
 */
export const HW_QUEUE_ALLOC_SIZE = 40;
export const DESTROY_SIZE = 8;
/** enum iommu_hw_queue_type: DEFAULT (0) is refused; Tegra241's VCMDQ is 1. */
export const IOMMU_HW_QUEUE_TYPE_DEFAULT = 0;
export const IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV = 1;

export interface HwQueueAlloc {
  size: number;
  flags: number;
  viommuId: number;
  type: number;
  /** Logical index of the queue in its vIOMMU (a VINTF's LVCMDQ). */
  index: number;
  outHwQueueId: number;
  /** Base of the queue memory in guest-physical space (the stage-2 input). */
  nestingParentIova: number;
  length: number;
}

export function encodeHwQueueAlloc(a: HwQueueAlloc): Buffer {
  const b = Buffer.alloc(HW_QUEUE_ALLOC_SIZE);
  b.writeUInt32LE(a.size >>> 0, 0);
  b.writeUInt32LE(a.flags >>> 0, 4);
  b.writeUInt32LE(a.viommuId >>> 0, 8);
  b.writeUInt32LE(a.type >>> 0, 12);
  b.writeUInt32LE(a.index >>> 0, 16);
  b.writeUInt32LE(a.outHwQueueId >>> 0, 20);
  b.writeBigUInt64LE(BigInt(a.nestingParentIova), 24);
  b.writeBigUInt64LE(BigInt(a.length), 32);
  return b;
}

/** Undefined when the struct is cut short (the kernel's copy from user space would fault). */
export function decodeHwQueueAlloc(b: Buffer): HwQueueAlloc | undefined {
  if (b.length < HW_QUEUE_ALLOC_SIZE) return undefined;
  return {
    size: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    viommuId: b.readUInt32LE(8),
    type: b.readUInt32LE(12),
    index: b.readUInt32LE(16),
    outHwQueueId: b.readUInt32LE(20),
    nestingParentIova: Number(b.readBigUInt64LE(24)),
    length: Number(b.readBigUInt64LE(32)),
  };
}

export function encodeDestroy(id: number): Buffer {
  const b = Buffer.alloc(DESTROY_SIZE);
  b.writeUInt32LE(DESTROY_SIZE, 0);
  b.writeUInt32LE(id >>> 0, 4);
  return b;
}

export function decodeDestroy(b: Buffer): { size: number; id: number } | undefined {
  if (b.length < DESTROY_SIZE) return undefined;
  return { size: b.readUInt32LE(0), id: b.readUInt32LE(4) };
}
