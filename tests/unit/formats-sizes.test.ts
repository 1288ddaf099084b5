/**
 * Every struct of services/formats has the byte size of the kernel's or the specification's
 * definition. Each expected size is worked out here from the C declaration (natural alignment, tail
 * padding to the largest member), written out field by field from the header it cites, so a wrong
 * constant and a wrong encoder are both caught.
 */
import { describe, expect, it } from 'vitest';
import { HW_QUEUE_ALLOC_SIZE, DESTROY_SIZE, encodeDestroy, encodeHwQueueAlloc } from '../../services/formats/iommufd-hw-queue.js';
import { IOAS_MAP_SIZE, IOAS_UNMAP_SIZE, encodeIoasMap, encodeIoasUnmap } from '../../services/formats/iommufd-ioas.js';
import { HWPT_INVALIDATE_SIZE, encodeHwptInvalidate } from '../../services/formats/iommufd.js';
import { KVM_RUN_MMIO_SIZE, encodeMmio } from '../../services/formats/kvm-run.js';
import { CMD_SIZE } from '../../services/formats/smmu/commands.js';
import { encodeCd, encodeSte } from '../../services/formats/smmu/structures.js';
import { TCE_ENTRY_SIZE, TCE_KILL_SIZE, encodeTceKill, encodeTceList } from '../../services/formats/spapr-tce.js';
import {
  CONTAINER_IOCTL_HEADER, DMA_MAP_SIZE, DMA_UNMAP_SIZE, KERNEL_IOMMU_MAP_SIZE, encodeContainerIoctl, encodeDmaMap, encodeDmaUnmap, encodeKernelIommuMap,
} from '../../services/formats/vfio-type1.js';
import { ATTACH_SIZE, DETACH_SIZE, FAULT_SIZE, HEAD_SIZE, MAP_SIZE, PROBE_HEAD_SIZE, PROBE_RESV_MEM_SIZE, TAIL_SIZE, UNMAP_SIZE } from '../../services/formats/virtio-iommu.js';
import { CONTEXT_ENTRY_SIZE, DESC_SIZE, ENTRY_SIZE, ROOT_ENTRY_SIZE } from '../../services/formats/vtd.js';

/** A C struct's size from its members' [size, alignment] in order: offsets aligned, the end padded. */
function cSize(members: readonly (readonly [number, number])[]): number {
  let offset = 0;
  let align = 1;
  for (const [size, a] of members) {
    offset = Math.ceil(offset / a) * a + size;
    align = Math.max(align, a);
  }
  return Math.ceil(offset / align) * align;
}

const u8 = [1, 1] as const;
const u16 = [2, 2] as const;
const u32 = [4, 4] as const;
const u64 = [8, 8] as const;
const bytes = (n: number): readonly [number, number] => [n, 1];

describe('struct sizes of services/formats against their C definitions', () => {
  it('iommufd uAPI (include/uapi/linux/iommufd.h)', () => {
    // struct iommu_hwpt_invalidate { __u32 size, hwpt_id; __aligned_u64 data_uptr; __u32 data_type, entry_len, entry_num, __reserved; }
    expect(HWPT_INVALIDATE_SIZE).toBe(cSize([u32, u32, u64, u32, u32, u32, u32]));
    expect(encodeHwptInvalidate({ size: HWPT_INVALIDATE_SIZE, hwptId: 1, dataUptr: 0n, dataType: 1, entryLen: 16, entryNum: 0 } as never, Buffer.alloc(0)).length).toBe(HWPT_INVALIDATE_SIZE);
    // struct iommu_ioas_map { __u32 size, flags, ioas_id, __reserved; __aligned_u64 user_va, length, iova; }
    expect(IOAS_MAP_SIZE).toBe(cSize([u32, u32, u32, u32, u64, u64, u64]));
    expect(encodeIoasMap({ ioasId: 1, flags: 0, userVa: 0, length: 4096, iova: 0 } as never).length).toBe(IOAS_MAP_SIZE);
    // struct iommu_ioas_unmap { __u32 size, ioas_id; __aligned_u64 iova, length; }
    expect(IOAS_UNMAP_SIZE).toBe(cSize([u32, u32, u64, u64]));
    expect(encodeIoasUnmap({ ioasId: 1, iova: 0, length: 4096 } as never).length).toBe(IOAS_UNMAP_SIZE);
    // struct iommu_hw_queue_alloc { __u32 size, flags, viommu_id, type, index, out_hw_queue_id; __aligned_u64 nesting_parent_iova, length; }
    expect(HW_QUEUE_ALLOC_SIZE).toBe(cSize([u32, u32, u32, u32, u32, u32, u64, u64]));
    expect(encodeHwQueueAlloc({ flags: 0, viommuId: 1, type: 1, index: 0, outHwQueueId: 0, nestingParentIova: 0, length: 4096 } as never).length).toBe(HW_QUEUE_ALLOC_SIZE);
    // struct iommu_destroy { __u32 size, id; }
    expect(DESTROY_SIZE).toBe(cSize([u32, u32]));
    expect(encodeDestroy(1).length).toBe(DESTROY_SIZE);
  });

  it('VFIO type1 (include/uapi/linux/vfio.h)', () => {
    // struct vfio_iommu_type1_dma_map { __u32 argsz, flags; __u64 vaddr, iova, size; }
    expect(DMA_MAP_SIZE).toBe(cSize([u32, u32, u64, u64, u64]));
    expect(encodeDmaMap({ flags: 3, vaddr: 0, iova: 0, size: 4096 } as never).length).toBe(DMA_MAP_SIZE);
    // struct vfio_iommu_type1_dma_unmap { __u32 argsz, flags; __u64 iova, size; __u8 data[]; }
    expect(DMA_UNMAP_SIZE).toBe(cSize([u32, u32, u64, u64]));
    expect(encodeDmaUnmap({ flags: 0, iova: 0, size: 4096 } as never).length).toBe(DMA_UNMAP_SIZE);
  });

  it('vmmsim\'s own kernel-side requests, laid out as C structs would be', () => {
    // The container fd of an ioctl: { __u32 fd, pad; } before the uapi struct.
    expect(CONTAINER_IOCTL_HEADER).toBe(cSize([u32, u32]));
    expect(encodeContainerIoctl(10, Buffer.alloc(DMA_MAP_SIZE)).length).toBe(CONTAINER_IOCTL_HEADER + DMA_MAP_SIZE);
    // KernelIommuMap { __u32 vm, prot; __u64 iova, gpa, size; __u32 device, pad; }
    expect(KERNEL_IOMMU_MAP_SIZE).toBe(cSize([u32, u32, u64, u64, u64, u32, u32]));
    expect(encodeKernelIommuMap({ vm: 0, prot: 3, iova: 0, gpa: 0, size: 4096, device: 1 }).length).toBe(KERNEL_IOMMU_MAP_SIZE);
    // TceKill { __u32 pe, npages; __u64 ioba; __u32 page_shift, pad; }
    expect(TCE_KILL_SIZE).toBe(cSize([u32, u32, u64, u32, u32]));
    expect(encodeTceKill({ pe: 1, ioba: 0, npages: 1, pageShift: 12 }).length).toBe(TCE_KILL_SIZE);
  });

  it('the mmio part of struct kvm_run (include/uapi/linux/kvm.h)', () => {
    // struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; }
    expect(KVM_RUN_MMIO_SIZE).toBe(cSize([u64, bytes(8), u32, u8]));
    expect(encodeMmio({ physAddr: 0, data: 0, len: 4, isWrite: true }).length).toBe(KVM_RUN_MMIO_SIZE);
  });

  it('virtio-iommu requests (include/uapi/linux/virtio_iommu.h)', () => {
    // struct virtio_iommu_req_head { __u8 type; __u8 reserved[3]; }, and the tail likewise (status)
    expect(HEAD_SIZE).toBe(cSize([u8, bytes(3)]));
    expect(TAIL_SIZE).toBe(cSize([u8, bytes(3)]));
    const h = bytes(HEAD_SIZE);
    // attach { head; __le32 domain, endpoint, flags; __u8 reserved[4]; tail; }
    expect(ATTACH_SIZE).toBe(cSize([h, u32, u32, u32, bytes(4), bytes(4)]));
    // detach { head; __le32 domain, endpoint; __u8 reserved[8]; tail; }
    expect(DETACH_SIZE).toBe(cSize([h, u32, u32, bytes(8), bytes(4)]));
    // map { head; __le32 domain; __le64 virt_start, virt_end, phys_start; __le32 flags; tail; }
    expect(MAP_SIZE).toBe(cSize([h, u32, u64, u64, u64, u32, bytes(TAIL_SIZE)]));
    // unmap { head; __le32 domain; __le64 virt_start, virt_end; __u8 reserved[4]; tail; }
    expect(UNMAP_SIZE).toBe(cSize([h, u32, u64, u64, bytes(4), bytes(4)]));
    // probe { head; __le32 endpoint; __u8 reserved[64]; ... } up to the properties
    expect(PROBE_HEAD_SIZE).toBe(4 + 4 + 64);
    // probe_resv_mem { struct virtio_iommu_probe_property { __le16 type, length; } head; __u8 subtype; __u8 reserved[3]; __le64 start, end; }
    expect(PROBE_RESV_MEM_SIZE).toBe(cSize([u16, u16, u8, bytes(3), u64, u64]));
    // fault { __u8 reason; __u8 reserved[3]; __le32 flags, endpoint; __u8 reserved2[4]; __le64 address; }
    expect(FAULT_SIZE).toBe(cSize([u8, bytes(3), u32, u32, bytes(4), u64]));
  });

  it('VT-d (Intel VT-d specification, 6.5.2 and 9.1-9.3)', () => {
    expect(DESC_SIZE).toBe(16); // a 128-bit invalidation descriptor
    expect(ROOT_ENTRY_SIZE).toBe(16); // a 128-bit root entry
    expect(CONTEXT_ENTRY_SIZE).toBe(16); // a 128-bit (legacy) context entry
    expect(ENTRY_SIZE).toBe(8); // a 64-bit second-level paging entry
  });

  it('SMMUv3 (Arm IHI 0070: 4.1 commands, 5.2 STE, 5.4 CD) and sPAPR TCEs (PAPR 14.5.4)', () => {
    expect(CMD_SIZE).toBe(cSize([u64, u64]));
    expect(encodeSte({ valid: true, config: 6, s1ContextPtr: 0, vmid: 1, s2ttb: 0 } as never).length).toBe(64);
    expect(encodeCd({ valid: true, asid: 1, ttb0: 0 } as never).length).toBe(64);
    expect(TCE_ENTRY_SIZE).toBe(8);
    expect(encodeTceList([1n, 2n]).length).toBe(2 * TCE_ENTRY_SIZE);
  });
});
