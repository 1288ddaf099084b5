/**
 * `npm run bench -- reprice [--json] [--ops N] [--variants N] [--reruns N] [--models a,b]`: what
 * re-pricing a recorded run saves over running it again. A compare (by default every design, 1000
 * map+unmap iterations each: 2000 operations per design) runs once through the real processes and
 * is recorded; then it is re-priced under --variants profile variants (Latin-hypercube samples of
 * every step across its range, as `vmmsim sensitivity` draws them), each through the queueing
 * replay, and, in the same run, --reruns of those variants are run again through the processes.
 * repriceSpeedup = wall time per variant re-run / wall time per variant re-priced. The re-runs also
 * check re-pricing: each design's modeled means re-run and re-priced (maxRelDiff; 0 when exact).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { benchArgs } from './args.js';
import { loadProfile, type CostProfile } from '../services/cost/profile.js';
import { createLogger } from '../services/runtime/logger.js';
import { resolveScenario } from '../services/scenario/validate.js';
import { MODELS, type ModelName } from '../services/scenario/schema.js';
import { ProcessTree } from '../services/controller/launcher.js';
import { Session, processSpecs } from '../services/controller/session.js';
import { designOfRecord } from '../services/controller/cli/sensitivity-input.js';
import { figuresOf, sampleCosts, stepRanges, type SensitivityDesign } from '../services/controller/sensitivity.js';

const USAGE = `usage: npm run bench -- reprice [--json] [--ops N] [--variants N] [--reruns N] [--models a,b,...] [--profile NAME]

Runs a compare once through the processes and records it, then re-prices it under --variants cost
variants (default 100) and re-runs --reruns of them (default 3) through the processes; prints
repriceSpeedup = wall per variant re-run / wall per variant re-priced (target: at least 100).
  --ops N        map+unmap iterations per design (default 1000: 2000 operations)
  --models LIST  designs of the compare (default: all)
`;

function round(x: number, d = 3): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

/** The profile with each step's cost replaced (ns by step name): what a re-run of a variant runs under. */
function variantProfile(base: CostProfile, costs: Readonly<Record<string, number>>, k: number): CostProfile {
  const steps = Object.fromEntries(Object.entries(base.steps).map(([n, s]) => [n, { ...s, ns: costs[n] ?? s.ns }]));
  return { ...base, name: `${base.name}-variant-${k}`, steps };
}

export async function repriceBench(argv: string[]): Promise<void> {
  const a = benchArgs('reprice', USAGE, argv, {
    json: { type: 'boolean', default: false },
    ops: { type: 'string', default: '1000' },
    variants: { type: 'string', default: '100' },
    reruns: { type: 'string', default: '3' },
    models: { type: 'string', default: 'all' },
    profile: { type: 'string', default: 'arm64-kunpeng920' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (!a) return;
  const { values } = a;
  const ops = a.number('ops', values.ops, 1);
  const variants = a.number('variants', values.variants, 1);
  const reruns = a.number('reruns', values.reruns, 1, variants);
  const models = (values.models === 'all' ? [...MODELS] : values.models.split(',')) as ModelName[];
  const profile = loadProfile(values.profile);
  const scenario = resolveScenario({ name: 'reprice-bench', seed: 1, profile: profile.name, device: { dmaRate: 0 }, workload: { ops } });
  const log = createLogger({ role: 'bench' }, 'warn');

  // The variants: Latin-hypercube samples of every step with a range, as vmmsim sensitivity draws them.
  const steps = stepRanges(profile);
  const costsOf = sampleCosts(steps, variants, scenario.seed).map((c) => Object.fromEntries(steps.map((s, i) => [s.step, c[i] as number])));

  const socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-bench-'));
  const ramDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmmsim-bench-ram-'));
  const tree = new ProcessTree({ socketDir, transport: 'unix', logLevel: 'warn', startTimeoutMs: 60_000, log });
  let session: Session | undefined;
  try {
    await tree.start(processSpecs(scenario));
    session = new Session(tree, log, ramDir);
    const designs: SensitivityDesign[] = [];
    const t0 = performance.now();
    for (const model of models) designs.push(designOfRecord(scenario, await session.record(scenario, model, profile)));
    const recordMs = performance.now() - t0;
    const operations = designs.reduce((n, d) => n + d.run.ops.length, 0);

    const localCosts = (d: SensitivityDesign, c: Readonly<Record<string, number>>): Float64Array => Float64Array.from(d.run.stepNames, (n) => c[n] ?? 0);
    const repriced: Map<string, number>[][] = [];
    const t1 = performance.now();
    for (const c of costsOf) repriced.push(designs.map((d) => figuresOf(d, localCosts(d, c)).means));
    const repriceMs = (performance.now() - t1) / variants;

    // Re-runs of the first variants through the processes, checked against their re-pricing.
    let maxRelDiff = 0;
    const t2 = performance.now();
    for (let k = 0; k < reruns; k++) {
      const p = variantProfile(profile, costsOf[k] as Record<string, number>, k);
      for (const [i, model] of models.entries()) {
        const r = await session.run(scenario, model, p);
        const means = repriced[k]?.[i] as Map<string, number>;
        for (const o of r.ops.filter((x) => x.count > 0)) {
          const want = o.modeledNs.mean;
          const got = means.get(o.op) ?? NaN;
          maxRelDiff = Math.max(maxRelDiff, want === 0 ? Math.abs(got) : Math.abs(got - want) / want);
        }
      }
    }
    const rerunMs = (performance.now() - t2) / reruns;
    const out = {
      bench: 'reprice',
      profile: profile.name,
      designs: models.length,
      operations,
      variants,
      reruns,
      recordMs: round(recordMs, 1),
      perVariantRepricedMs: round(repriceMs),
      perVariantRerunMs: round(rerunMs, 1),
      repriceSpeedup: round(rerunMs / repriceMs, 1),
      maxRelDiff: round(maxRelDiff, 9),
    };
    if (values.json) {
      process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    } else {
      process.stdout.write(
        `reprice: a compare of ${models.length} designs, ${operations} operations, recorded in ${out.recordMs} ms\n` +
          `  re-priced under ${variants} variants: ${out.perVariantRepricedMs} ms per variant (queueing replay included)\n` +
          `  re-run ${reruns} of them through the processes: ${out.perVariantRerunMs} ms per variant\n` +
          `  repriceSpeedup ${out.repriceSpeedup} (target >= 100); re-run vs re-priced modeled means: max relative difference ${out.maxRelDiff}\n`,
      );
    }
  } finally {
    session?.close();
    await tree.stop().catch(() => tree.killAll());
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(ramDir, { recursive: true, force: true });
  }
}
