/**
 * The mmio part of struct kvm_run (include/uapi/linux/kvm.h) for KVM_EXIT_MMIO:
 * `struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; }`, 24 bytes with padding.
 */
export const KVM_RUN_MMIO_SIZE = 24;

export interface MmioAccess {
  physAddr: number;
  /** Little-endian value of the access (up to 8 bytes; our registers are 32-bit). */
  data: number;
  len: number;
  isWrite: boolean;
}

export function encodeMmio(a: MmioAccess): Buffer {
  const b = Buffer.alloc(KVM_RUN_MMIO_SIZE);
  b.writeBigUInt64LE(BigInt(a.physAddr), 0);
  b.writeUInt32LE(a.data >>> 0, 8);
  b.writeUInt32LE(a.len, 16);
  b.writeUInt8(a.isWrite ? 1 : 0, 20);
  return b;
}

/** Decodes a kvm_run mmio record; undefined when the buffer is too short to hold one. */
export function decodeMmio(b: Buffer): MmioAccess | undefined {
  if (b.length < KVM_RUN_MMIO_SIZE) return undefined;
  return { physAddr: Number(b.readBigUInt64LE(0)), data: b.readUInt32LE(8), len: b.readUInt32LE(16), isWrite: b.readUInt8(20) !== 0 };
}
