/**
 * The virtio-iommu device interface (virtio spec 1.2 section 5.13; Linux
 * include/uapi/linux/virtio_iommu.h, "definition v0.12"), byte for byte and little-endian, and
 * where this board puts the device: its virtio-mmio window and its request virtqueue in guest RAM.
 *
 * Every request is one buffer the driver splits in two descriptors: the device-readable part (the
 * struct up to the tail) and the device-writable tail (for PROBE: the properties, then the tail),
 * both in an indirect table that one ring descriptor points at (INDIRECT_DESC, as Linux queues a
 * request of two sgs). The sizes below are those of the whole structs, tail included.
 */
import { PAGE_SIZE } from './page.js';
import type { VirtqueueLayout } from './virtio-ring.js';

// Feature bits
export const VIRTIO_IOMMU_F_INPUT_RANGE = 0;
export const VIRTIO_IOMMU_F_DOMAIN_RANGE = 1;
export const VIRTIO_IOMMU_F_MAP_UNMAP = 2;
export const VIRTIO_IOMMU_F_BYPASS = 3;
export const VIRTIO_IOMMU_F_PROBE = 4;
export const VIRTIO_IOMMU_F_MMIO = 5;
export const VIRTIO_IOMMU_F_BYPASS_CONFIG = 6;

export const ReqType = { ATTACH: 1, DETACH: 2, MAP: 3, UNMAP: 4, PROBE: 5 } as const;

export const Status = { OK: 0, IOERR: 1, UNSUPP: 2, DEVERR: 3, INVAL: 4, RANGE: 5, NOENT: 6, FAULT: 7, NOMEM: 8 } as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

/** A status by its name in the spec (OK, NOENT, ...), or `status N` for a value it does not define. */
export function statusName(status: number): string {
  return Object.entries(Status).find(([, v]) => v === status)?.[0] ?? `status ${status}`;
}

export const ATTACH_F_BYPASS = 1 << 0;
/** MAP flags of the v0.12 header and spec 1.2 (the older v0.9 draft had EXEC at bit 2, MMIO at 3). */
export const MAP_F_READ = 1 << 0;
export const MAP_F_WRITE = 1 << 1;
export const MAP_F_MMIO = 1 << 2;
export const MAP_F_MASK = MAP_F_READ | MAP_F_WRITE | MAP_F_MMIO;

export const PROBE_T_NONE = 0;
export const PROBE_T_RESV_MEM = 1;
export const PROBE_T_MASK = 0xfff;
export const RESV_MEM_T_RESERVED = 0;
export const RESV_MEM_T_MSI = 1;

export const FAULT_R_UNKNOWN = 0;
export const FAULT_R_DOMAIN = 1;
export const FAULT_R_MAPPING = 2;
export const FAULT_F_READ = 1 << 0;
export const FAULT_F_WRITE = 1 << 1;
export const FAULT_F_EXEC = 1 << 2;
export const FAULT_F_ADDRESS = 1 << 8;

export const HEAD_SIZE = 4;
export const TAIL_SIZE = 4;
/** head, le32 domain, le32 endpoint, le32 flags, u8 reserved[4], tail. */
export const ATTACH_SIZE = 24;
/** head, le32 domain, le32 endpoint, u8 reserved[8], tail. */
export const DETACH_SIZE = 24;
/** head, le32 domain, le64 virt_start, le64 virt_end, le64 phys_start, le32 flags, tail. */
export const MAP_SIZE = 40;
/** head, le32 domain, le64 virt_start, le64 virt_end, u8 reserved[4], tail. */
export const UNMAP_SIZE = 32;
/** head, le32 endpoint, u8 reserved[64]; then probe_size bytes of properties and the tail. */
export const PROBE_HEAD_SIZE = 72;
/** struct virtio_iommu_probe_resv_mem: le16 type, le16 length, u8 subtype, u8 reserved[3], le64 start, le64 end. */
export const PROBE_RESV_MEM_SIZE = 24;
/** struct virtio_iommu_fault (event queue). */
export const FAULT_SIZE = 24;

export interface AttachReq {
  type: typeof ReqType.ATTACH;
  domain: number;
  endpoint: number;
  flags: number;
  reserved: Buffer;
}
export interface DetachReq {
  type: typeof ReqType.DETACH;
  domain: number;
  endpoint: number;
  reserved: Buffer;
}
/** 64-bit fields stay bigint: a guest may write any value, and the device checks it as written. */
export interface MapReq {
  type: typeof ReqType.MAP;
  domain: number;
  virtStart: bigint;
  /** Inclusive. */
  virtEnd: bigint;
  physStart: bigint;
  flags: number;
}
export interface UnmapReq {
  type: typeof ReqType.UNMAP;
  domain: number;
  virtStart: bigint;
  virtEnd: bigint;
}
export interface ProbeReq {
  type: typeof ReqType.PROBE;
  endpoint: number;
}
export type Request = AttachReq | DetachReq | MapReq | UnmapReq | ProbeReq;

/** Size of the device-readable part of each request type (the struct without its tail). */
export function readableSize(type: number): number | undefined {
  switch (type) {
    case ReqType.ATTACH:
      return ATTACH_SIZE - TAIL_SIZE;
    case ReqType.DETACH:
      return DETACH_SIZE - TAIL_SIZE;
    case ReqType.MAP:
      return MAP_SIZE - TAIL_SIZE;
    case ReqType.UNMAP:
      return UNMAP_SIZE - TAIL_SIZE;
    case ReqType.PROBE:
      return PROBE_HEAD_SIZE;
    default:
      return undefined;
  }
}

/**
 * The whole request struct as the driver builds it, tail included (zeroed: the device writes it).
 * For PROBE, `probeSize` bytes of properties sit between the request and the tail.
 */
export function encodeRequest(r: Request, probeSize = 0): Buffer {
  switch (r.type) {
    case ReqType.ATTACH: {
      const b = Buffer.alloc(ATTACH_SIZE);
      b.writeUInt8(r.type, 0);
      b.writeUInt32LE(r.domain >>> 0, 4);
      b.writeUInt32LE(r.endpoint >>> 0, 8);
      b.writeUInt32LE(r.flags >>> 0, 12);
      r.reserved.copy(b, 16, 0, 4);
      return b;
    }
    case ReqType.DETACH: {
      const b = Buffer.alloc(DETACH_SIZE);
      b.writeUInt8(r.type, 0);
      b.writeUInt32LE(r.domain >>> 0, 4);
      b.writeUInt32LE(r.endpoint >>> 0, 8);
      r.reserved.copy(b, 12, 0, 8);
      return b;
    }
    case ReqType.MAP: {
      const b = Buffer.alloc(MAP_SIZE);
      b.writeUInt8(r.type, 0);
      b.writeUInt32LE(r.domain >>> 0, 4);
      b.writeBigUInt64LE(r.virtStart, 8);
      b.writeBigUInt64LE(r.virtEnd, 16);
      b.writeBigUInt64LE(r.physStart, 24);
      b.writeUInt32LE(r.flags >>> 0, 32);
      return b;
    }
    case ReqType.UNMAP: {
      const b = Buffer.alloc(UNMAP_SIZE);
      b.writeUInt8(r.type, 0);
      b.writeUInt32LE(r.domain >>> 0, 4);
      b.writeBigUInt64LE(r.virtStart, 8);
      b.writeBigUInt64LE(r.virtEnd, 16);
      return b;
    }
    case ReqType.PROBE: {
      const b = Buffer.alloc(PROBE_HEAD_SIZE + probeSize + TAIL_SIZE);
      b.writeUInt8(r.type, 0);
      b.writeUInt32LE(r.endpoint >>> 0, 4);
      return b;
    }
  }
}

/**
 * Decodes the device-readable part of a request. `type` is the head's type byte; undefined when
 * the part is shorter than its struct (the device answers INVAL) or the type is unknown (UNSUPP).
 */
export function decodeRequest(b: Buffer): Request | undefined {
  if (b.length < HEAD_SIZE) return undefined;
  const type = b.readUInt8(0);
  const need = readableSize(type);
  if (need === undefined || b.length < need) return undefined;
  switch (type) {
    case ReqType.ATTACH:
      return { type, domain: b.readUInt32LE(4), endpoint: b.readUInt32LE(8), flags: b.readUInt32LE(12), reserved: Buffer.from(b.subarray(16, 20)) };
    case ReqType.DETACH:
      return { type, domain: b.readUInt32LE(4), endpoint: b.readUInt32LE(8), reserved: Buffer.from(b.subarray(12, 20)) };
    case ReqType.MAP:
      return { type, domain: b.readUInt32LE(4), virtStart: b.readBigUInt64LE(8), virtEnd: b.readBigUInt64LE(16), physStart: b.readBigUInt64LE(24), flags: b.readUInt32LE(32) };
    case ReqType.UNMAP:
      return { type, domain: b.readUInt32LE(4), virtStart: b.readBigUInt64LE(8), virtEnd: b.readBigUInt64LE(16) };
    case ReqType.PROBE:
      return { type, endpoint: b.readUInt32LE(4) };
    default:
      return undefined;
  }
}

/** The tail's status byte of a whole request buffer (the last 4 bytes). */
export function tailStatus(req: Buffer): number {
  return req.readUInt8(req.length - TAIL_SIZE);
}

export function encodeTail(status: number): Buffer {
  const b = Buffer.alloc(TAIL_SIZE);
  b.writeUInt8(status & 0xff, 0);
  return b;
}

export interface ResvMem {
  subtype: number;
  start: bigint;
  /** Inclusive. */
  end: bigint;
}

/** A RESV_MEM probe property; `length` counts the bytes after the 4-byte property header. */
export function encodeResvMem(p: ResvMem): Buffer {
  const b = Buffer.alloc(PROBE_RESV_MEM_SIZE);
  b.writeUInt16LE(PROBE_T_RESV_MEM, 0);
  b.writeUInt16LE(PROBE_RESV_MEM_SIZE - 4, 2);
  b.writeUInt8(p.subtype, 4);
  b.writeBigUInt64LE(p.start, 8);
  b.writeBigUInt64LE(p.end, 16);
  return b;
}

/** The properties of a probe reply, up to the first NONE (as viommu_probe_endpoint parses them). */
export function decodeProbeProperties(props: Buffer): ResvMem[] {
  const out: ResvMem[] = [];
  let cur = 0;
  while (cur + 4 <= props.length) {
    const type = props.readUInt16LE(cur) & PROBE_T_MASK;
    if (type === PROBE_T_NONE) break;
    const len = props.readUInt16LE(cur + 2) + 4;
    if (type === PROBE_T_RESV_MEM && cur + PROBE_RESV_MEM_SIZE <= props.length) {
      out.push({ subtype: props.readUInt8(cur + 4), start: props.readBigUInt64LE(cur + 8), end: props.readBigUInt64LE(cur + 16) });
    }
    cur += len;
  }
  return out;
}

export interface Fault {
  reason: number;
  flags: number;
  endpoint: number;
  address: bigint;
}

export function encodeFault(f: Fault): Buffer {
  const b = Buffer.alloc(FAULT_SIZE);
  b.writeUInt8(f.reason, 0);
  b.writeUInt32LE(f.flags >>> 0, 4);
  b.writeUInt32LE(f.endpoint >>> 0, 8);
  b.writeBigUInt64LE(f.address, 16);
  return b;
}

export function decodeFault(b: Buffer): Fault {
  return { reason: b.readUInt8(0), flags: b.readUInt32LE(4), endpoint: b.readUInt32LE(8), address: b.readBigUInt64LE(16) };
}

/**
 * struct virtio_iommu_config, the device-specific configuration: le64 page_size_mask,
 * {le64 start, le64 end} input_range, {le32 start, le32 end} domain_range, le32 probe_size,
 * u8 bypass, u8 reserved[3]. The ranges are inclusive; a field is meaningful only with its
 * feature (INPUT_RANGE, DOMAIN_RANGE, PROBE, BYPASS_CONFIG).
 */
export const CONFIG_SIZE = 40;

export interface DeviceConfig {
  pageSizeMask: bigint;
  inputStart: bigint;
  inputEnd: bigint;
  domainStart: number;
  domainEnd: number;
  probeSize: number;
  bypass: number;
}

export function decodeConfig(b: Buffer): DeviceConfig {
  return {
    pageSizeMask: b.readBigUInt64LE(0),
    inputStart: b.readBigUInt64LE(8),
    inputEnd: b.readBigUInt64LE(16),
    domainStart: b.readUInt32LE(24),
    domainEnd: b.readUInt32LE(28),
    probeSize: b.readUInt32LE(32),
    bypass: b.readUInt8(36),
  };
}

/** page_size_mask: every size from the host's 4 KiB granule up, as QEMU sets it (qemu_target_page_mask). */
export const PAGE_SIZE_MASK = ~(BigInt(PAGE_SIZE) - 1n) & 0xffff_ffff_ffff_ffffn;
/** input_range: the 48-bit input of the host's shadow table. */
export const INPUT_RANGE_END = 2n ** 48n - 1n;
/** probe_size, as QEMU's VIOMMU_PROBE_SIZE. */
export const PROBE_SIZE = 512;

// Where the device is on this board (guest-physical).
/** The virtio-mmio window of the virtio-iommu (clear of the vSMMU and VINTF pages). */
export const VIOMMU_MMIO_BASE = 0x0b00_0000;
/** virtio-mmio QueueNotify: the driver writes the queue index here to kick it. */
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x50;
export const VIOMMU_NOTIFY_GPA = VIOMMU_MMIO_BASE + VIRTIO_MMIO_QUEUE_NOTIFY;
export const VIOMMU_REQUEST_VQ = 0;
export const VIOMMU_EVENT_VQ = 1;
/** Request queue size: QEMU's VIOMMU_DEFAULT_QUEUE_SIZE. */
export const VIOMMU_QUEUE_SIZE = 256;
/** The request queue's descriptor table, available and used rings, one page each. */
export const VIOMMU_VQ_GPA = 0x7000_0000;
export const VIOMMU_REQUEST_QUEUE: VirtqueueLayout = {
  size: VIOMMU_QUEUE_SIZE,
  desc: VIOMMU_VQ_GPA,
  avail: VIOMMU_VQ_GPA + 0x1000,
  used: VIOMMU_VQ_GPA + 0x2000,
};
/** The driver's request buffers: one slot per descriptor index that can head a chain. */
export const VIOMMU_REQ_BUF_GPA = VIOMMU_VQ_GPA + 0x3000;
export const VIOMMU_REQ_SLOT = 64;

export function requestSlotGpa(head: number): number {
  return VIOMMU_REQ_BUF_GPA + head * VIOMMU_REQ_SLOT;
}
/**
 * The driver's indirect tables, after the request buffers: one per head, room for a request's
 * two descriptors (readable request, writable tail), 16 bytes each.
 */
export const VIOMMU_INDIRECT_GPA = VIOMMU_REQ_BUF_GPA + VIOMMU_QUEUE_SIZE * VIOMMU_REQ_SLOT;
/** Buffers one indirect table slot holds. */
export const VIOMMU_INDIRECT_DESCS = 2;
export const VIOMMU_INDIRECT_SLOT = VIOMMU_INDIRECT_DESCS * 16;

export function indirectTableGpa(head: number): number {
  return VIOMMU_INDIRECT_GPA + head * VIOMMU_INDIRECT_SLOT;
}
