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
export const VCMDQ_GPA_BASE = 0x4000_0000;
export const VCMDQ_LOG2_ENTRIES = 8;

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

export function vcmdqGpa(vsmmu: number): number {
  return VCMDQ_GPA_BASE + vsmmu * 0x1_0000;
}
