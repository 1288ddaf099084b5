/**
 * The VM_MIGRATE request and reply (guest -> kvm -> qemu). Live migration has no one guest-visible
 * struct: the management plane tells the VMM where to go, and the destination's VMM re-creates the
 * VM's host objects there. These little-endian records carry what this simulation needs of it:
 *
 *   request  { __u32 dest_vcmdqs; }                     VCMDQs the destination has free per vSMMU
 *   reply    { __u32 vsmmus; __u32 hw_queues[vsmmus]; }  HW queues each vSMMU has at the destination
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

/** HW queues per vSMMU, in the guest's vSMMU order. */
export function encodeMigrateReply(hwQueues: readonly number[]): Buffer {
  const b = Buffer.alloc(4 + 4 * hwQueues.length);
  b.writeUInt32LE(hwQueues.length, 0);
  hwQueues.forEach((n, i) => b.writeUInt32LE(n >>> 0, 4 + 4 * i));
  return b;
}

/** Undefined when the record is cut short. */
export function decodeMigrateReply(b: Buffer): number[] | undefined {
  if (b.length < 4) return undefined;
  const n = b.readUInt32LE(0);
  if (b.length < 4 + 4 * n) return undefined;
  return Array.from({ length: n }, (_, i) => b.readUInt32LE(4 + 4 * i));
}
