import { Errno } from '../common/errors.js';
import {
  HWPT_INVALIDATE_CHUNK, HWPT_INVALIDATE_MAX_ENTRIES, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, KERNEL_PAGE_SIZE,
  type HwptInvalidate,
} from '../common/iommufd.js';
import type { VdeviceObject, ViommuObject } from '../common/iommufd-objects.js';
import { CMD_SIZE, Opcode, readOpcode, readSid, writeSid, writeVmid } from '../common/smmu/commands.js';

/** Result of the core checks of IOMMU_HWPT_INVALIDATE, before any entry is looked at. */
export function checkHwptInvalidate(h: HwptInvalidate, arrayBytes: number): number {
  if (h.reserved !== 0) return -Errno.EOPNOTSUPP;
  if (h.entryNum === 0) return 0; // a probe of the data type
  if (h.dataUptr === 0 || h.entryLen === 0 || h.entryLen > KERNEL_PAGE_SIZE || h.entryNum > HWPT_INVALIDATE_MAX_ENTRIES) return -Errno.EINVAL;
  if (h.dataType !== IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3) return -Errno.EINVAL;
  // The user array must be readable for entry_num entries of entry_len bytes.
  if (arrayBytes < h.entryNum * h.entryLen) return -Errno.EFAULT;
  return 0;
}

/**
 * Converts one guest command as arm_vsmmu_convert_user_cmd does: TLBIs get the vIOMMU's VMID
 * (TLBI_NSNH_ALL becomes TLBI_NH_ALL), ATC_INV / CFGI_CD / CFGI_CD_ALL get the pSID of the vDEVICE
 * with that vSID; anything else, CMD_SYNC included, is refused with EIO. Writes into `out`.
 */
export function convertCommand(cmd: Buffer, at: number, viommu: ViommuObject, vdevs: ReadonlyMap<number, VdeviceObject>, out: Buffer, outAt: number): number {
  cmd.copy(out, outAt, at, at + CMD_SIZE);
  const op = readOpcode(out, outAt);
  switch (op) {
    case Opcode.TLBI_NSNH_ALL:
      out.writeUInt8(Opcode.TLBI_NH_ALL, outAt);
      writeVmid(out, outAt, viommu.vmid);
      return 0;
    case Opcode.TLBI_NH_VA:
    case Opcode.TLBI_NH_VAA:
    case Opcode.TLBI_NH_ALL:
    case Opcode.TLBI_NH_ASID:
      writeVmid(out, outAt, viommu.vmid);
      return 0;
    case Opcode.ATC_INV:
    case Opcode.CFGI_CD:
    case Opcode.CFGI_CD_ALL: {
      const vdev = vdevs.get(readSid(out, outAt));
      if (!vdev) return -Errno.EIO;
      writeSid(out, outAt, vdev.psid);
      return 0;
    }
    default:
      return -Errno.EIO;
  }
}

export { HWPT_INVALIDATE_CHUNK };
