/** The 4 KiB page every interface here counts in (PAGE_SHIFT of the kernels and of the SMMU's TG 4K). */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
