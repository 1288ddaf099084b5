import { VmmsimError } from '../../runtime/errors.js';
import type { Scenario } from '../../scenario/schema.js';

/**
 * vmm.hwptInvalidate=queue hands the kernel one guest queue per call, for one vIOMMU (the v2
 * proposal had one nested domain per queue): a single vSMMU in front of several pSMMUs would need
 * the kernel to route each entry to another vIOMMU, which the proposal never did.
 */
export function checkQueueUapi(s: Scenario, model: string): void {
  if (s.vmm.hwptInvalidate !== 'queue' || s.topology.vsmmu !== 'single' || s.topology.psmmus <= 1) return;
  throw new VmmsimError(
    'E_SCENARIO_FIELD',
    `scenario key vmm.hwptInvalidate: queue with ${model} needs one vIOMMU per vSMMU (the kernel reads one guest queue for one vIOMMU), got topology.vsmmu single over ${s.topology.psmmus} pSMMUs; set topology.vsmmu per-psmmu or topology.psmmus 1`,
  );
}
