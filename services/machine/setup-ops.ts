/**
 * Operations a guest makes once at boot, before its workload (the DDW of guest.ddw maps all guest
 * RAM; dma=static maps each buffer of an application workload once): each is reported as its own operation, apart from the steady state, on no vCPU and holding
 * nothing the workload contends for, and the run's throughput does not count it.
 */
export const DDW_BOOT_OP = 'ddw-boot';
/** dma=static under an application workload: each buffer's one map, before the I/Os (workloads/common.ts premap). */
export const STATIC_SETUP_OP = 'static-setup';
export const SETUP_OPS: readonly string[] = [DDW_BOOT_OP, STATIC_SETUP_OP];

export function isSetupOp(op: string): boolean {
  return SETUP_OPS.some((s) => op === s || op.startsWith(`${s}@`));
}
