/**
 * `vmmsim explain`: one operation of a design printed as a call graph across the processes, the way
 * ftrace's function_graph tracer prints a call (../explain.ts). It runs a short workload on a process
 * tree and has guest-0 trace the first operation of the kind asked after a warm-up; only that
 * operation's requests carry the explain flag.
 */
import { loadProfile } from '../../cost/profile.js';
import { VmmsimError } from '../../runtime/errors.js';
import type { Logger } from '../../runtime/logger.js';
import { CONNECT_HELP, requireEndpoints } from '../connect.js';
import { explanation, renderExplanation, type Explanation } from '../explain.js';
import { MEASURED_HOST } from '../measured-host.js';
import { loadScenario } from '../scenario-load.js';
import { processSpecs, type ExplainedRun } from '../session.js';
import { RunAbort } from '../cli/abort.js';
import { RUN_OPTIONS, checkScenario, intOption, modelsFor, optionOverrides, parse, treeSettings, usageError } from '../cli/options.js';
import { controlled, withTree, type RunPlan } from '../cli/tree.js';

/** Operations that complete before the traced one may be: caches warm, queues in their steady state. */
const DEFAULT_WARMUP = 16;
/** The workload's length when --ops is not given: the warm-up and room for the operation after it. */
const DEFAULT_OPS = 32;

export const HELP = `usage: vmmsim explain --model NAME [--op map|unmap] [scenario.yaml] [options]

Prints one operation of a design as a call graph across the processes (guest -> kvm -> qemu ->
vfio -> psmmu and back), the way ftrace's function_graph tracer prints a call: a line per cost step
charged, naming the functions it models in the pinned Linux and QEMU and the confidence of its cost;
a line per call to the next process with the transition it pays (exit, user, ioctl, hw, direct),
closed by its own and its total modeled time. It runs a short workload (--ops, the scenario's keys)
and traces guest-0's first operation of the kind asked once --warmup operations have completed.
The total is the operation's modeled time, as results.json counts it before queueing.

  vmmsim explain --model nested-smmuv3 --op unmap
  vmmsim explain --model virtio-iommu --op map --set dma=lazy --json

options:
  --model NAME          architecture; default: the scenario's model
  --op NAME             the operation to trace: unmap (default), map, or any other the workload
                        reports (flush in lazy mode, unmap@emulated...)
  --warmup N            operations that complete before the traced one (default ${DEFAULT_WARMUP})
  --ops N               workload.ops (default ${DEFAULT_OPS})
  --seed N              seed (same seed, same modeled results)
  --set key=value       any scenario key, dotted (repeatable): --set dma=lazy
  --profile NAME|PATH   cost profile (profiles/NAME.yaml or a file; not measured-host)
  --json                print the explanation as JSON (the tree, every line's times) and nothing else
  --transport unix|tcp  how processes talk: Unix sockets in a private folder (default) or loopback TCP
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (or VMMSIM_LOG_LEVEL); logs go to stderr
  --start-timeout MS    how long a process may take to report ready (default 20000)
${CONNECT_HELP}
  -h, --help            this text`;

export const OPTIONS = {
  ...RUN_OPTIONS,
  op: { type: 'string' },
  warmup: { type: 'string' },
} as const;

interface ExplainPlan extends RunPlan {
  op: string;
  warmup: number;
}

export async function command(argv: string[]): Promise<number> {
  return controlled(plan(argv), execute);
}

function plan(argv: string[]): ExplainPlan | undefined {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return undefined;
  }
  if (positionals.length > 1) throw usageError(`explain takes at most one scenario file, got ${positionals.length}: ${positionals.join(' ')}`);
  for (const o of ['models', 'out', 'duration'] as const) {
    if (values[o] !== undefined) throw usageError(`--${o} is not an option of \`vmmsim explain\`: it traces one operation of one model and writes no files`);
  }
  const op = values.op ?? 'unmap';
  if (op === '' || op.length > 64) throw usageError('--op must name an operation (map, unmap...)');
  const warmup = intOption('warmup', values.warmup, 0) ?? DEFAULT_WARMUP;
  const overrides = optionOverrides(values);
  if (overrides['workload.ops'] === undefined) overrides['workload.ops'] = DEFAULT_OPS;
  const scenario = loadScenario(positionals[0], values.set ?? [], overrides);
  if (scenario.profile === MEASURED_HOST) throw usageError(`explain prices with a profile's costs; --profile ${MEASURED_HOST} measures this machine first (use it with \`vmmsim run\`)`);
  checkScenario(scenario);
  const settings = treeSettings(values);
  if (settings.connect) requireEndpoints(settings.connect, processSpecs(scenario));
  const models = modelsFor(scenario, undefined);
  return { scenario, models, profile: loadProfile(scenario.profile), measureHost: false, out: '', json: values.json ?? false, op, warmup, ...settings };
}

async function execute(p: ExplainPlan, log: Logger): Promise<number> {
  const abort = new RunAbort();
  const model = p.models[0] as ExplainPlan['models'][number];
  let traced: ExplainedRun | undefined;
  try {
    if (!p.json) process.stderr.write(`vmmsim: running ${model} (${p.scenario.workload.kind}, ${p.scenario.dma}) to trace one ${p.op}...\n`);
    await withTree(p, processSpecs(p.scenario), abort, log, async (session) => {
      traced = await abort.race(session.explain(p.scenario, model, p.profile, p.op, p.warmup));
    });
  } finally {
    abort.dispose();
  }
  const r = traced as ExplainedRun;
  if (!r.explained) {
    const ran = r.result.ops.filter((o) => o.count > 0).map((o) => `${o.op} (${o.count})`);
    throw new VmmsimError('E_EXPLAIN', `no ${p.op} completed on guest-0 after ${p.warmup} operations under ${model}; the run's operations: ${ran.join(', ') || 'nothing ran'}`);
  }
  const e: Explanation = explanation(r.explained, {
    model,
    dma: p.scenario.dma,
    workload: p.scenario.workload.kind,
    profile: p.profile,
    process: 'guest-0',
    latencyNs: r.latencyNs ?? r.explained.ns,
    waits: r.waits ?? [],
    backlogNs: r.backlogNs ?? 0,
  });
  process.stdout.write((p.json ? JSON.stringify(e, null, 2) : renderExplanation(e)) + '\n');
  return 0;
}
