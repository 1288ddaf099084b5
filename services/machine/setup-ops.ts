/**
 * Operations a guest makes once at boot, before its workload (the DDW of guest.ddw maps all guest
 * RAM; dma=static maps each buffer of an application workload once; a NIC's page_pool maps each RX buffer once): each is reported as its own operation, apart from the steady state, on no vCPU and holding
 * nothing the workload contends for, and the run's throughput does not count it.
 */
export const DDW_BOOT_OP = 'ddw-boot';
/** dma=static under an application workload: each buffer's one map, before the I/Os (workloads/common.ts premap). */
export const STATIC_SETUP_OP = 'static-setup';
/** device.nic.pagePool under packet-stream: each RX buffer's one map into its page_pool, before the packets. */
export const PAGE_POOL_SETUP_OP = 'page-pool-setup';
export const SETUP_OPS: readonly string[] = [DDW_BOOT_OP, STATIC_SETUP_OP, PAGE_POOL_SETUP_OP];

export function isSetupOp(op: string): boolean {
  return SETUP_OPS.some((s) => op === s || op.startsWith(`${s}@`));
}
