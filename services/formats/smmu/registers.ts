/** SMMUv3 register offsets in page 0 of an SMMU's MMIO region (Arm IHI 0070, SMMU_* registers). */
export const SMMU_REG = {
  GERROR: 0x60,
  GERRORN: 0x64,
  CMDQ_BASE: 0x90,
  CMDQ_PROD: 0x98,
  CMDQ_CONS: 0x9c,
} as const;

/** GERROR.CMDQ_ERR: the command queue stopped on an error (see CONS.ERR). */
export const GERROR_CMDQ_ERR = 1 << 0;

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
