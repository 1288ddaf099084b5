import { Opcode } from './commands.js';

/**
 * Commands IOMMU_HWPT_INVALIDATE accepts for an SMMUv3 vIOMMU (iommufd.md); a VMM forwards exactly
 * these, and the kernel refuses anything else (CMD_SYNC and CFGI_STE included) with EIO.
 */
export const HWPT_INVALIDATE_OPCODES: ReadonlySet<number> = new Set([
  Opcode.TLBI_NSNH_ALL, Opcode.TLBI_NH_VA, Opcode.TLBI_NH_VAA, Opcode.TLBI_NH_ALL, Opcode.TLBI_NH_ASID,
  Opcode.ATC_INV, Opcode.CFGI_CD, Opcode.CFGI_CD_ALL,
]);

/** Commands a guest-owned (HYP_OWN=0) VCMDQ accepts (cmdqv.md); anything else halts the queue. */
export const GUEST_VCMDQ_OPCODES: ReadonlySet<number> = new Set([Opcode.TLBI_NH_ASID, Opcode.TLBI_NH_VA, Opcode.ATC_INV, Opcode.CMD_SYNC]);
