/**
 * The robustness verdict of each pair a study names, per point of its part: the two designs' runs
 * as recorded, re-priced across every cost step's range by the sensitivity analysis
 * (./sensitivity.ts), not run again.
 */
import type { CostProfile } from '../cost/profile.js';
import { analyse, type SensitivityDesign } from './sensitivity.js';
import { pointLabel, type PairVerdict, type Study } from './study.js';

/** One recorded run of a study: which point of which part, and what the analysis takes of it. */
export interface StudyDesign {
  point: number;
  part: string;
  values: Readonly<Record<string, string | number>>;
  design: SensitivityDesign;
}

/**
 * For each pair [a, b, part] and each point of that part that ran both: the ratio b / a of every
 * operation the study answers with (and of application throughput where both runs have one).
 */
export function studyVerdicts(study: Study, recorded: readonly StudyDesign[], profile: CostProfile, samples: number, seed: number): PairVerdict[] {
  const out: PairVerdict[] = [];
  for (const pair of study.pairs) {
    const points = [...new Set(recorded.filter((r) => r.part === pair.part).map((r) => r.point))];
    for (const point of points) {
      const at = recorded.filter((r) => r.point === point);
      const a = at.find((r) => r.design.model === pair.a);
      const b = at.find((r) => r.design.model === pair.b);
      if (!a || !b) continue;
      const section = analyse([a.design, b.design], profile, { samples, seed });
      const why = section.designs.flatMap((d) => d.approximate.map((x) => x.code));
      // Where both runs have an application, its throughput answers; else the operations' latency.
      const app = section.comparisons.some((c) => c.a === pair.a && c.b === pair.b && c.metric === 'application');
      for (const c of section.comparisons) {
        if (c.a !== pair.a || c.b !== pair.b) continue;
        if (app ? c.metric !== 'application' : !study.ops.includes(c.metric)) continue;
        out.push({
          a: c.a,
          b: c.b,
          part: pointLabel(pair.part, a.values),
          figure: c.metric === 'application' ? 'app/s' : c.metric,
          base: c.base,
          p5: c.p5,
          p50: c.p50,
          p95: c.p95,
          verdict: c.verdict === 'robust' ? 'robust' : 'depends on',
          steps: c.dependsOn,
          ...(c.approximate ? { approximate: [...new Set(why)].join(', ') } : {}),
        });
      }
    }
  }
  return out;
}
