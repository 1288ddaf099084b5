/**
 * The robustness verdict of each pair a study names: the ratio of the two designs' figures over
 * every cost step's range, from the runs already made (re-priced, not re-run).
 */
import type { CostProfile } from '../cost/profile.js';
import type { RunResult } from './results.js';
import type { PairVerdict, Study } from './study.js';

export async function studyVerdicts(_study: Study, _runs: readonly RunResult[], _profile: CostProfile, _samples: number): Promise<PairVerdict[]> {
  return [];
}
