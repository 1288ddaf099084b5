/**
 * The host's registers of a Tegra241 CMDQV (Linux tegra241-cmdqv.c): the config page, which the
 * host kernel alone programs. CMDQ_ALLOC(q) maps global VCMDQ q onto logical VCMDQ LVCMDQ of VINTF
 * VINTF; the kernel pre-assigns the fields and sets or clears ALLOCATED to map or unmap it.
 *
 *   CMDQ_ALLOC(q) = 0x200 + 4q:  VINTF [20:15], LVCMDQ [7:1], ALLOCATED [0]
 *
 * The CMDQV has its own MMIO region beside its SMMU; in the HOST_MMIO addresses a psmmu process
 * takes (its SMMU's registers from 0) the simulator places that region at CMDQV_MMIO_BASE.
 */
export const CMDQV_MMIO_BASE = 0x20_0000;
const CMDQ_ALLOC_OFFSET = 0x200;
/** The 128 CMDQ_ALLOC registers a CMDQV can have. */
const CMDQ_ALLOC_COUNT = 128;

export interface CmdqAlloc {
  vintf: number;
  lidx: number;
  allocated: boolean;
}

export function cmdqAllocRegister(queue: number): number {
  return CMDQV_MMIO_BASE + CMDQ_ALLOC_OFFSET + 4 * queue;
}

/** The global VCMDQ whose CMDQ_ALLOC register this address is, if it is one. */
export function decodeCmdqAllocRegister(physAddr: number): number | undefined {
  const rel = physAddr - CMDQV_MMIO_BASE - CMDQ_ALLOC_OFFSET;
  if (rel < 0 || rel % 4 !== 0 || rel / 4 >= CMDQ_ALLOC_COUNT) return undefined;
  return rel / 4;
}

export function encodeCmdqAlloc(a: CmdqAlloc): number {
  return (((a.vintf & 0x3f) << 15) | ((a.lidx & 0x7f) << 1) | (a.allocated ? 1 : 0)) >>> 0;
}

export function decodeCmdqAlloc(value: number): CmdqAlloc {
  return { vintf: (value >>> 15) & 0x3f, lidx: (value >>> 1) & 0x7f, allocated: (value & 1) !== 0 };
}
