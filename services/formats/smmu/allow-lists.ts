import { ConfigDrop, opcodesWhere } from './semantics.js';

/**
 * Commands IOMMU_HWPT_INVALIDATE accepts for an SMMUv3 vIOMMU (iommufd.md); a VMM forwards exactly
 * these, and the kernel refuses anything else (CMD_SYNC and CFGI_STE included) with EIO. Read from
 * the opcode table (semantics.ts), as the kernel's conversion (vfio/hwpt-invalidate.ts) is.
 */
export const HWPT_INVALIDATE_OPCODES: ReadonlySet<number> = opcodesWhere((s) => s.hwptAs !== undefined);

/**
 * Commands a guest-owned (HYP_OWN=0) VCMDQ accepts (cmdqv.md); anything else halts the queue. Read
 * from the opcode table, as the VCMDQ workers' executor is.
 */
export const GUEST_VCMDQ_OPCODES: ReadonlySet<number> = opcodesWhere((s) => s.guestVcmdq);

/**
 * Commands an in-kernel vSMMU queue (nested-smmuv3-kvm, exploration) takes from the guest's queue
 * itself: the invalidations IOMMU_HWPT_INVALIDATE takes that change no configuration (TLBIs and
 * ATC_INV), read from the opcode table. CMD_SYNC completes there too; a CFGI (the VMM re-reads
 * STEs and CDs on it) and anything else go on to the VMM.
 */
export const KVM_CMDQ_OPCODES: ReadonlySet<number> = opcodesWhere((s) => s.hwptAs !== undefined && s.config === ConfigDrop.NONE);
