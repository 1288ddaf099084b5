import { Errno } from '../runtime/errors.js';
import {
  HWPT_INVALIDATE_CHUNK, HWPT_INVALIDATE_MAX_ENTRIES, IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, KERNEL_PAGE_SIZE,
  type HwptInvalidate,
} from '../formats/iommufd.js';
import type { VdeviceObject, ViommuObject } from '../machine/iommufd-objects.js';
import { CMD_SIZE, cmdSync, encodeCommand, readOpcode, readSid, writeSid, writeVmid } from '../formats/smmu/commands.js';
import { HWPT_OPCODE, SCOPE_BY_OPCODE, Scope } from '../formats/smmu/semantics.js';

/**
 * Result of the core checks of IOMMU_HWPT_INVALIDATE, before any entry is looked at. entry_num 0
 * is a probe of the data type: it succeeds only for a type the object takes.
 */
export function checkHwptInvalidate(h: HwptInvalidate, arrayBytes: number): number {
  if (h.reserved !== 0) return -Errno.EOPNOTSUPP;
  if (h.entryNum > 0 && (h.dataUptr === 0 || h.entryLen === 0 || h.entryLen > KERNEL_PAGE_SIZE || h.entryNum > HWPT_INVALIDATE_MAX_ENTRIES)) return -Errno.EINVAL;
  // The queue data type is the proposal's (vmm.hwptInvalidate=queue): one entry, the queue's location.
  if (h.dataType !== IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 && h.dataType !== IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3_QUEUE) return -Errno.EINVAL;
  // The user array must be readable for entry_num entries of entry_len bytes.
  if (arrayBytes < h.entryNum * h.entryLen) return -Errno.EFAULT;
  return 0;
}

/**
 * Copies entry `i` of the user array as copy_struct_from_user does: a shorter entry is
 * zero-extended to the kernel's 16 bytes; a longer one must have only zeroes past them (E2BIG).
 */
function copyEntry(entries: Buffer, i: number, entryLen: number, out: Buffer, outAt: number): number {
  const at = i * entryLen;
  const n = Math.min(entryLen, CMD_SIZE);
  entries.copy(out, outAt, at, at + n);
  out.fill(0, outAt + n, outAt + CMD_SIZE);
  for (let b = at + CMD_SIZE; b < at + entryLen; b++) if (entries[b] !== 0) return -Errno.E2BIG;
  return 0;
}

/**
 * Converts one guest command as arm_vsmmu_convert_user_cmd does, by the opcode table
 * (common/smmu/semantics.ts): a command the table does not let through HWPT_INVALIDATE, CMD_SYNC
 * included, is refused with EIO; TLBI_NSNH_ALL becomes TLBI_NH_ALL; a VMID-scoped command gets the
 * vIOMMU's VMID and a StreamID-scoped one (ATC_INV, CFGI_CD, CFGI_CD_ALL) the pSID of the vDEVICE
 * with that vSID (EIO when there is none). Works in place in `out`.
 */
export function convertCommand(viommu: ViommuObject, vdevs: ReadonlyMap<number, VdeviceObject>, out: Buffer, outAt: number): number {
  const op = HWPT_OPCODE[readOpcode(out, outAt)] ?? 0;
  if (op === 0) return -Errno.EIO;
  out.writeUInt8(op, outAt);
  const scope = SCOPE_BY_OPCODE[op] ?? 0;
  if ((scope & Scope.VMID) !== 0) writeVmid(out, outAt, viommu.vmid);
  if ((scope & Scope.SID) !== 0) {
    const vdev = vdevs.get(readSid(out, outAt));
    if (!vdev) return -Errno.EIO;
    writeSid(out, outAt, vdev.psid);
  }
  return 0;
}

/** The hooks the conversion loop needs from its caller: costs and the physical CMDQ. */
export interface InvalidateSink {
  /** One command converted (charge its kernel cost). */
  converted(): void;
  /** Issues one chunk (commands + CMD_SYNC) to the physical SMMU and waits; returns 0 or -errno. */
  submit(chunk: Buffer, commands: number): Promise<number>;
}

const SYNC = ((): Buffer => {
  const b = Buffer.alloc(CMD_SIZE);
  encodeCommand(cmdSync(), b, 0);
  return b;
})();

/**
 * The body of IOMMU_HWPT_INVALIDATE on an SMMUv3 vIOMMU after the core checks: converts entry by
 * entry and issues chunks of at most 63 commands, each followed by a CMD_SYNC, waiting for each.
 * Returns the status and entry_num as the kernel sets it: the input count on success; the failing
 * index on a conversion error (commands converted since the last chunk are never sent); the chunk's
 * end minus one when a chunk failed on the hardware.
 */
export async function invalidateEntries(
  head: HwptInvalidate,
  entries: Buffer,
  viommu: ViommuObject,
  vdevs: ReadonlyMap<number, VdeviceObject>,
  sink: InvalidateSink,
): Promise<{ status: number; entryNum: number }> {
  const chunk = Buffer.alloc((HWPT_INVALIDATE_CHUNK + 1) * CMD_SIZE);
  let inChunk = 0;
  for (let i = 0; i < head.entryNum; i++) {
    sink.converted();
    const status = copyEntry(entries, i, head.entryLen, chunk, inChunk * CMD_SIZE) || convertCommand(viommu, vdevs, chunk, inChunk * CMD_SIZE);
    if (status !== 0) return { status, entryNum: i };
    inChunk += 1;
    if (inChunk === HWPT_INVALIDATE_CHUNK || i === head.entryNum - 1) {
      SYNC.copy(chunk, inChunk * CMD_SIZE);
      const hw = await sink.submit(Buffer.from(chunk.subarray(0, (inChunk + 1) * CMD_SIZE)), inChunk);
      inChunk = 0;
      if (hw !== 0) return { status: -Errno.EIO, entryNum: i };
    }
  }
  return { status: 0, entryNum: head.entryNum };
}

/**
 * vmm.hwptInvalidate=queue, the queue-based uAPI proposed in [PATCH v2 17/17] iommu/arm-smmu-v3:
 * Add arm_smmu_cache_invalidate_user (Nicolin Chen, May 2023; never merged): the kernel reads the
 * guest queue's entries from CONS to PROD itself (`readSlot`: one 16-byte slot of guest RAM through
 * the VMM's mapping, by queue index), skips the opcodes it does not convert (the VMM handles
 * those), converts the rest as arm_vsmmu_convert_user_cmd does and issues them all as one command
 * list with one CMD_SYNC (no 63-command chunks). Returns the status and, on a refused entry (a
 * vSID with no vDEVICE: EIO) or a failed submission, the index counted from CONS of the entry to
 * blame; nothing is issued when an entry is refused.
 */
export async function invalidateQueue(
  count: number,
  readSlot: (i: number) => Buffer,
  viommu: ViommuObject,
  vdevs: ReadonlyMap<number, VdeviceObject>,
  sink: InvalidateSink,
): Promise<{ status: number; entryNum: number; converted: number }> {
  const list = Buffer.alloc((count + 1) * CMD_SIZE);
  let n = 0;
  for (let i = 0; i < count; i++) {
    sink.converted();
    readSlot(i).copy(list, n * CMD_SIZE, 0, CMD_SIZE);
    if ((HWPT_OPCODE[readOpcode(list, n * CMD_SIZE)] ?? 0) === 0) continue; // skipped: not the kernel's
    const status = convertCommand(viommu, vdevs, list, n * CMD_SIZE);
    if (status !== 0) return { status, entryNum: i, converted: n };
    n += 1;
  }
  if (n === 0) return { status: 0, entryNum: count, converted: 0 };
  SYNC.copy(list, n * CMD_SIZE);
  const hw = await sink.submit(Buffer.from(list.subarray(0, (n + 1) * CMD_SIZE)), n);
  if (hw !== 0) return { status: -Errno.EIO, entryNum: count - 1, converted: n };
  return { status: 0, entryNum: count, converted: n };
}
