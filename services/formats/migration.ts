/**
 * The VM_MIGRATE request and reply (guest -> kvm -> qemu). Live migration has no one guest-visible
 * struct: the management plane tells the VMM where to go, and the destination's VMM re-creates the
 * VM's host objects there. These little-endian records carry what this simulation needs of it:
 *
 *   request  { __u32 dest_vcmdqs; }                     VCMDQs the destination has free per vSMMU
 *   reply    { __u32 vsmmus; __u32 hw_queues[vsmmus]; double recreate_ns; }
 *            HW queues each vSMMU has at the destination, and the modeled time the VMM spent
 *            re-creating them there (IOMMU_HW_QUEUE_ALLOC and what it does); a reply without
 *            recreate_ns (cut after the array) reads as 0.
 */
export const MIGRATE_REQUEST_SIZE = 4;

export interface MigrateRequest {
  destVcmdqs: number;
}

export function encodeMigrateRequest(r: MigrateRequest): Buffer {
  const b = Buffer.alloc(MIGRATE_REQUEST_SIZE);
  b.writeUInt32LE(r.destVcmdqs >>> 0, 0);
  return b;
}

export function decodeMigrateRequest(b: Buffer): MigrateRequest | undefined {
  if (b.length < MIGRATE_REQUEST_SIZE) return undefined;
  return { destVcmdqs: b.readUInt32LE(0) };
}

/** HW queues per vSMMU, in the guest's vSMMU order, and the modeled ns of re-creating them. */
export function encodeMigrateReply(hwQueues: readonly number[], recreateNs = 0): Buffer {
  const b = Buffer.alloc(4 + 4 * hwQueues.length + 8);
  b.writeUInt32LE(hwQueues.length, 0);
  hwQueues.forEach((n, i) => b.writeUInt32LE(n >>> 0, 4 + 4 * i));
  b.writeDoubleLE(recreateNs, 4 + 4 * hwQueues.length);
  return b;
}

/** The HW queues per vSMMU; undefined when the record is cut short. */
export function decodeMigrateReply(b: Buffer): number[] | undefined {
  return decodeMigrateReplyFull(b)?.hwQueues;
}

/** The whole reply; recreateNs 0 when absent, undefined when the array is cut short. */
export function decodeMigrateReplyFull(b: Buffer): { hwQueues: number[]; recreateNs: number } | undefined {
  if (b.length < 4) return undefined;
  const n = b.readUInt32LE(0);
  if (b.length < 4 + 4 * n) return undefined;
  const hwQueues = Array.from({ length: n }, (_, i) => b.readUInt32LE(4 + 4 * i));
  const at = 4 + 4 * n;
  const recreateNs = b.length >= at + 8 ? b.readDoubleLE(at) : 0;
  return { hwQueues, recreateNs: Number.isFinite(recreateNs) && recreateNs >= 0 ? recreateNs : 0 };
}
