/**
 * What the sensitivity analysis (../sensitivity.ts) takes of a recorded run: its operations with
 * their vectors, and what of its scenario decides whether re-pricing it is exact. Shared by
 * `vmmsim sensitivity` and `vmmsim compare --sensitivity`.
 */
import { isResizeOp } from '../../machine/virtio-mem.js';
import type { Scenario } from '../../scenario/schema.js';
import type { RecordedResult } from '../session.js';
import type { SensitivityDesign } from '../sensitivity.js';

/**
 * A recorded run as the analysis sees it. A run that carries `application` (issue 14, runs[].application)
 * gets its throughput compared too; without that field (a build without applications) nothing changes.
 */
export function designOfRecord(s: Scenario, r: RecordedResult): SensitivityDesign {
  const application = (r.result as unknown as Record<string, unknown>)['application'];
  return {
    model: r.result.model,
    run: r.combined.replay.run,
    dma: s.dma,
    workload: s.workload.kind,
    application: application !== undefined && application !== null,
    notWorkload: isResizeOp,
  };
}
