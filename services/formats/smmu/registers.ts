/** SMMUv3 register offsets in page 0 of an SMMU's MMIO region (Arm IHI 0070, SMMU_* registers). */
export const SMMU_REG = {
  IDR0: 0x0,
  IDR3: 0xc,
  GERROR: 0x60,
  GERRORN: 0x64,
  CMDQ_BASE: 0x90,
  CMDQ_PROD: 0x98,
  CMDQ_CONS: 0x9c,
} as const;

/** GERROR.CMDQ_ERR: the command queue stopped on an error (see CONS.ERR). */
export const GERROR_CMDQ_ERR = 1 << 0;

/** SMMU_IDR0 fields (Linux arm-smmu-v3.h IDR0_*). */
export const IDR0 = {
  S2P: 1 << 0,
  S1P: 1 << 1,
  /** TTF [3:2]: 2 = AArch64 tables. */
  TTF_AARCH64: 2 << 2,
  /** Coherent access to tables and queues (ARM_SMMU_FEAT_COHERENCY). */
  COHACC: 1 << 4,
  HYP: 1 << 9,
  ATS: 1 << 10,
  ASID16: 1 << 12,
  /** CMD_SYNC (and the queues' IRQs) can complete with an MSI write. */
  MSI: 1 << 13,
  /** The SMMU sends events (SEV) a waiter can WFE on. */
  SEV: 1 << 14,
  VMID16: 1 << 18,
  /** TTENDIAN [22:21]: 2 = little-endian. */
  TTENDIAN_LE: 2 << 21,
  /** STALL_MODEL [25:24]: 1 = no stall. */
  STALL_MODEL_NONE: 1 << 24,
  TERM_MODEL: 1 << 26,
  /** ST_LEVEL [28:27]: 1 = two-level stream table. */
  ST_LEVEL_2LVL: 1 << 27,
} as const;

/** SMMU_IDR3 fields (Linux arm-smmu-v3.h IDR3_*). */
export const IDR3 = {
  HAD: 1 << 2,
  /** Range invalidation: TLBI ranges (NUM, SCALE, TG) (ARM_SMMU_FEAT_RANGE_INV). */
  RIL: 1 << 10,
  /** BBML [12:11]: 2 = break-before-make level 2. */
  BBML2: 2 << 11,
} as const;

/**
 * The ID registers QEMU's vSMMUv3 shows the guest. smmuv3_init_regs (hw/arm/smmuv3.c): stage 1,
 * AArch64 tables, COHACC, 16-bit ASIDs and VMIDs, little-endian, no stall, two-level stream table;
 * no MSI, no SEV, no ATS, no PRI, no HYP; IDR3 RIL, HAD, BBML2. The accelerated vSMMU
 * (smmuv3_accel_idr_override, hw/arm/smmuv3-accel.c) changes only what its properties say:
 * IDR3.RIL = `ril` (true unless set off; it must match the host's) and IDR0.ATS = `ats` (false unless
 * set on). No QEMU path sets IDR0.MSI or IDR0.SEV, so a Linux guest polls CMDQ_CONS for every
 * CMD_SYNC (arm_smmu_device_hw_probe sets ARM_SMMU_OPT_MSIPOLL only with IDR0.MSI).
 */
export function qemuVsmmuIdr(accel: { ril: boolean; ats: boolean } | undefined): { idr0: number; idr3: number } {
  const idr0 = IDR0.S1P | IDR0.TTF_AARCH64 | IDR0.COHACC | IDR0.ASID16 | IDR0.VMID16 | IDR0.TTENDIAN_LE | IDR0.STALL_MODEL_NONE | IDR0.TERM_MODEL | IDR0.ST_LEVEL_2LVL;
  const idr3 = IDR3.HAD | IDR3.BBML2;
  if (!accel) return { idr0: idr0 >>> 0, idr3: (idr3 | IDR3.RIL) >>> 0 };
  return { idr0: (idr0 | (accel.ats ? IDR0.ATS : 0)) >>> 0, idr3: (idr3 | (accel.ril ? IDR3.RIL : 0)) >>> 0 };
}

/**
 * The ID registers of the physical SMMUs (an MMU-700-class SMMUv3 as Grace has): both stages,
 * coherent, HYP, ATS, MSI and SEV, two-level stream table; IDR3.RIL as the scenario says (smmu.ril).
 */
export function psmmuIdr(ril: boolean): { idr0: number; idr3: number } {
  const idr0 = IDR0.S2P | IDR0.S1P | IDR0.TTF_AARCH64 | IDR0.COHACC | IDR0.HYP | IDR0.ATS | IDR0.ASID16 | IDR0.MSI | IDR0.SEV | IDR0.VMID16
    | IDR0.TTENDIAN_LE | IDR0.STALL_MODEL_NONE | IDR0.TERM_MODEL | IDR0.ST_LEVEL_2LVL;
  return { idr0: idr0 >>> 0, idr3: (IDR3.HAD | IDR3.BBML2 | (ril ? IDR3.RIL : 0)) >>> 0 };
}

/** What a Linux arm-smmu-v3 driver makes of an SMMU's ID registers (arm_smmu_device_hw_probe). */
export interface SmmuFeatures {
  /** ARM_SMMU_OPT_MSIPOLL: IDR0.MSI on a coherent SMMU; CMD_SYNC then completes by an MSI write into its own slot. */
  msiPoll: boolean;
  /** ARM_SMMU_FEAT_SEV: the CONS poll waits with WFE. */
  sev: boolean;
  /** ARM_SMMU_FEAT_RANGE_INV (IDR3.RIL). */
  ril: boolean;
  /** ARM_SMMU_FEAT_ATS (IDR0.ATS). */
  ats: boolean;
}

export function smmuFeatures(idr0: number, idr3: number): SmmuFeatures {
  const coherent = (idr0 & IDR0.COHACC) !== 0;
  return { msiPoll: (idr0 & IDR0.MSI) !== 0 && coherent, sev: (idr0 & IDR0.SEV) !== 0, ril: (idr3 & IDR3.RIL) !== 0, ats: (idr0 & IDR0.ATS) !== 0 };
}

/**
 * The guest's board layout (as QEMU's virt machine fixes one): where each vSMMU's registers sit in
 * the guest-physical map and where the guest driver puts its command queue. The guest programs
 * CMDQ_BASE with this at probe time; both sides take it from here instead of replaying the probe.
 */
export const VSMMU_MMIO_BASE = 0x0905_0000;
export const VSMMU_MMIO_STRIDE = 0x2_0000;
export const VSMMU_CMDQ_GPA_BASE = 0x4000_0000;
export const VSMMU_CMDQ_LOG2_ENTRIES = 8;

export function vsmmuMmioBase(vsmmu: number): number {
  return VSMMU_MMIO_BASE + vsmmu * VSMMU_MMIO_STRIDE;
}

/** Which vSMMU (and which register) an MMIO address falls on, if any. */
export function vsmmuRegister(physAddr: number, vsmmus: number): { vsmmu: number; offset: number } | undefined {
  const rel = physAddr - VSMMU_MMIO_BASE;
  if (rel < 0) return undefined;
  const vsmmu = Math.floor(rel / VSMMU_MMIO_STRIDE);
  if (vsmmu >= vsmmus) return undefined;
  return { vsmmu, offset: rel % VSMMU_MMIO_STRIDE };
}

export function vsmmuCmdqGpa(vsmmu: number): number {
  return VSMMU_CMDQ_GPA_BASE + vsmmu * 0x1_0000;
}

/**
 * A VM's VINTF page as the VMM maps it into the guest (after Tegra241's layout): the registers of
 * logical VCMDQ i at VINTF_VCMDQ_BASE + i * VINTF_VCMDQ_STRIDE, and its queue memory in guest RAM.
 */
export const VINTF_PAGE_BASE = 0x0a00_0000;
export const VINTF_PAGE_STRIDE = 0x2_0000;
export const VINTF_VCMDQ_BASE = 0x1_0000;
export const VINTF_VCMDQ_STRIDE = 0x80;
export const VCMDQ_REG = { CONS: 0x0, PROD: 0x4, CONFIG: 0x8, STATUS: 0xc, GERROR: 0x10, GERRORN: 0x14 } as const;
export const VCMDQ_GUEST_GPA_BASE = 0x4800_0000;
export const VCMDQ_GUEST_LOG2_ENTRIES = 8;

export function vcmdqRegister(vsmmu: number, queue: number, reg: number): number {
  return VINTF_PAGE_BASE + vsmmu * VINTF_PAGE_STRIDE + VINTF_VCMDQ_BASE + queue * VINTF_VCMDQ_STRIDE + reg;
}

/** Which vSMMU's VINTF, logical queue and register an address is, if any. */
export function decodeVcmdqRegister(physAddr: number): { vsmmu: number; queue: number; reg: number } | undefined {
  const rel = physAddr - VINTF_PAGE_BASE;
  if (rel < 0) return undefined;
  const vsmmu = Math.floor(rel / VINTF_PAGE_STRIDE);
  const inPage = rel % VINTF_PAGE_STRIDE;
  if (inPage < VINTF_VCMDQ_BASE) return undefined;
  const q = inPage - VINTF_VCMDQ_BASE;
  return { vsmmu, queue: Math.floor(q / VINTF_VCMDQ_STRIDE), reg: q % VINTF_VCMDQ_STRIDE };
}

/** Guest RAM of VCMDQ `queue` of vSMMU `vsmmu` (one 64 KiB area each). */
export function vcmdqGuestGpa(vsmmu: number, queue: number): number {
  return VCMDQ_GUEST_GPA_BASE + (vsmmu * 128 + queue) * 0x1_0000;
}
