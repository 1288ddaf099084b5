/**
 * `vmmsim study list` and `vmmsim study NAME`: a question from a mailing-list thread, answered by
 * the runs its study file (scenarios/studies/NAME.yaml) names. Writes results.json, report.html and
 * answer.txt, the figures as a reply on a kernel list carries them.
 */
import { loadProfile, type CostProfile } from '../../cost/profile.js';
import { asVmmsimError } from '../../runtime/errors.js';
import type { Logger } from '../../runtime/logger.js';
import type { ModelName, Scenario } from '../../scenario/schema.js';
import { Progress, progressMode } from '../progress.js';
import { saveResults } from '../report/write.js';
import { defaultOutDir, writeFileAtomic, type ResultsDoc, type RunResult } from '../results.js';
import { loadScenario } from '../scenario-load.js';
import { processSetKey } from '../sweep.js';
import { processSpecs } from '../session.js';
import { notesBlock } from '../notes.js';
import { RunAbort } from '../cli/abort.js';
import { checkScenario, modelsFor, parse, treeSettings, usageError } from '../cli/options.js';
import { checkOut, finish, resultsDoc, save } from '../cli/outcome.js';
import { controlled, runCapturing, withTree, type TreeSettings } from '../cli/tree.js';
import { MEASURED_HOST } from '../measured-host.js';
import { answerText, loadStudy, pointLabel, pointValues, studyFile, studyNames, studyPoints, type Study, type StudyRecord } from '../study.js';
import { studyVerdicts, type StudyDesign } from '../study-verdicts.js';
import { designOfRecord } from '../cli/sensitivity-input.js';

export const HELP = `usage: vmmsim study list
       vmmsim study NAME|FILE.yaml [--quick] [--profile P] [--out DIR] [--json] [--plan]

A study answers one question engineers argue about (on the IOMMU, KVM and QEMU lists) with the
runs its file names: designs, scenario values, the figures that answer it, and the pairs of designs
whose order matters. The shipped studies are in scenarios/studies/ (docs/studies.md).

Writes DIR/results.json (every run; runs[].point.part names the study's part), DIR/report.html
(the answering figures first) and DIR/answer.txt: the question, the setup, the modeled figures, the
robustness of each pair over the cost ranges, what is not upstream, and the command that reproduces
it, in lines of at most 72 columns. Prints answer.txt on stdout.

options:
  --quick               fewer operations and points (the study's quick values): under two minutes
                        on a 2-core machine
  --profile NAME|PATH   cost profile over the study's scenario's (profiles/NAME.yaml or a file)
  --out DIR             where the three files go (default: results/<time>-study-NAME-<pid>/)
  --json                print results.json on stdout instead of answer.txt
  --samples N           cost samples for the robustness verdicts (default 200; --quick 64)
  --plan                print the runs the study would make (part, values, design) and start nothing
  --transport unix|tcp  how processes talk (default unix)
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent; logs go to stderr
  --start-timeout MS    how long a process may take to report ready (default 20000)
  -h, --help            this text`;

export const OPTIONS = {
  quick: { type: 'boolean' },
  profile: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' },
  samples: { type: 'string' },
  plan: { type: 'boolean' },
  transport: { type: 'string' },
  'log-level': { type: 'string' },
  'start-timeout': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** One run of the study: a point's scenario and one design. */
interface StudyRun {
  point: number;
  part: string;
  scenario: Scenario;
  values: Record<string, string | number>;
  model: ModelName;
}

interface StudyPlan extends TreeSettings {
  study: Study;
  quick: boolean;
  runs: StudyRun[];
  /** Runs grouped by the processes they need, in the order the groups first appear. */
  groups: StudyRun[][];
  profile: CostProfile;
  samples: number;
  out: string;
  json: boolean;
  command: string;
}

export async function command(argv: string[]): Promise<number> {
  if (argv[0] === 'list') {
    if (argv.length > 1) throw usageError(`study list takes no options, got ${argv.slice(1).join(' ')}`);
    process.stdout.write(listText());
    return 0;
  }
  return controlled(plan(argv), execute);
}

/** `vmmsim study list`: each study's name and its question, wrapped. */
function listText(): string {
  const lines: string[] = [];
  for (const name of studyNames()) {
    const s = loadStudy(studyFile(name));
    lines.push(`${name.padEnd(18)} ${s.question.length > 98 ? `${s.question.slice(0, 97)}...` : s.question}`);
  }
  return lines.join('\n') + '\n';
}

/** --plan: the runs in the order they are made, a line each, and how many trees they need. */
function planText(study: Study, runs: readonly StudyRun[], quick: boolean): string {
  const trees = new Set(runs.map((r) => processSetKey(r.scenario))).size;
  const lines = runs.map((r, i) => `${String(i + 1).padStart(3)} ${pointLabel(r.part, r.values)}: ${r.model}`);
  return `study ${study.name}${quick ? ' (quick)' : ''}: ${runs.length} runs in ${trees} process tree${trees === 1 ? '' : 's'}, profile ${runs[0]?.scenario.profile ?? '-'}\n${lines.join('\n')}\n`;
}

/** Every point resolved and checked, the profile loaded, before anything starts. */
function plan(argv: string[]): StudyPlan | undefined {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return undefined;
  }
  if (positionals.length !== 1) throw usageError(`study takes one study name (or \`list\`), got ${positionals.length === 0 ? 'nothing' : positionals.join(' ')}; studies: ${studyNames().join(', ')}`);
  const name = positionals[0] as string;
  const study = loadStudy(studyFile(name));
  const quick = values.quick ?? false;
  if (values.profile === MEASURED_HOST) throw usageError(`--profile ${MEASURED_HOST}: a study answers in modeled time with a published profile; calibrate with \`vmmsim run --profile ${MEASURED_HOST}\``);
  const overrides: Record<string, unknown> = values.profile ? { profile: values.profile } : {};
  const runs: StudyRun[] = [];
  for (const p of studyPoints(study, quick)) {
    let scenario: Scenario;
    let models: ModelName[];
    try {
      scenario = loadScenario(study.scenario, p.sets, overrides);
      checkScenario(scenario);
      models = modelsFor(scenario, p.models.join(','));
    } catch (err) {
      const e = asVmmsimError(err);
      throw usageError(`study ${study.name}, part ${p.part}${p.swept.length ? ` (${p.swept.join(' ')})` : ''}: ${e.message}`);
    }
    const v = pointValues(p.part, scenario, p.swept);
    for (const model of models) runs.push({ point: p.index, part: p.part, scenario, values: v, model });
  }
  const profiles = new Set(runs.map((r) => r.scenario.profile));
  if (profiles.size !== 1) throw usageError(`study ${study.name} uses more than one profile (${[...profiles].join(', ')}): a study answers on one`);
  const byTree = new Map<string, StudyRun[]>();
  for (const r of runs) {
    const key = processSetKey(r.scenario);
    byTree.set(key, [...(byTree.get(key) ?? []), r]);
  }
  const samplesOpt = values.samples === undefined ? undefined : Number(values.samples);
  if (samplesOpt !== undefined && (!Number.isInteger(samplesOpt) || samplesOpt < 10 || samplesOpt > 10_000)) throw usageError(`--samples must be an integer 10..10000, got "${values.samples}"`);
  const out = values.out ?? defaultOutDir(`study-${study.name}`);
  checkOut(out, { measureHost: false });
  if (values.plan) {
    process.stdout.write(planText(study, runs, quick));
    return undefined;
  }
  const cmd = ['vmmsim study', study.name, quick ? '--quick' : '', values.profile ? `--profile ${values.profile}` : '', values.samples ? `--samples ${values.samples}` : ''].filter(Boolean).join(' ');
  return {
    study,
    quick,
    runs,
    groups: [...byTree.values()],
    profile: loadProfile([...profiles][0] as string),
    samples: samplesOpt ?? (quick ? 64 : 200),
    out,
    json: values.json ?? false,
    command: cmd,
    ...treeSettings(values),
  };
}

async function execute(p: StudyPlan, log: Logger): Promise<number> {
  const startedAt = new Date().toISOString();
  const done: { index: number; run: RunResult }[] = [];
  const recorded: StudyDesign[] = [];
  const abort = new RunAbort();
  const progress = new Progress({ title: `study ${p.study.name}`, total: p.runs.length, mode: progressMode({ json: p.json, isTTY: process.stderr.isTTY }), itemSeconds: 0 });
  let started = 0;
  const failure = await runCapturing(progress, abort, async () => {
    for (const group of p.groups) {
      const first = group[0];
      if (!first) continue;
      await withTree(p, processSpecs(first.scenario), abort, log, async (session) => {
        for (const r of group) {
          started += 1;
          const what = `${Object.entries(r.values).map(([k, v]) => `${k}=${v}`).join(' ')} ${r.model}`;
          progress.start(what, `vmmsim: study ${p.study.name} ${started}/${p.runs.length}: ${what}...\n`);
          const rec = await abort.race(session.record(r.scenario, r.model, p.profile));
          done.push({ index: p.runs.indexOf(r), run: { point: r.values, ...rec.result } });
          recorded.push({ point: r.point, part: r.part, values: r.values, design: designOfRecord(r.scenario, rec) });
          progress.finish();
        }
      });
    }
  });
  // The trees ran grouped by their processes; the results follow the study's order.
  const runs = done.sort((a, b) => a.index - b.index).map((d) => d.run);
  const base = (p.runs[0] as StudyRun).scenario;
  const record: StudyRecord = {
    name: p.study.name,
    question: p.study.question,
    source: p.study.source,
    quick: p.quick,
    command: p.command,
    file: p.study.file,
    parts: p.study.parts.map((x) => ({ label: x.label, models: x.models, set: x.set })),
    ops: p.study.ops,
    verdicts: failure ? [] : studyVerdicts(p.study, recorded, p.profile, p.samples, (p.runs[0] as StudyRun).scenario.seed),
    answer: '',
  };
  const keys = ['part', ...new Set(p.runs.flatMap((r) => Object.keys(r.values).filter((k) => k !== 'part')))];
  const doc: ResultsDoc & { study: StudyRecord } = {
    ...resultsDoc(startedAt, base, p.profile, runs, failure, { keys, points: new Set(p.runs.map((r) => r.point)).size }),
    study: record,
  };
  const answer = answerText(doc, p.study, record);
  record.answer = answer;
  const saved = save(() => {
    const { path, where } = saveResults(p.out, doc);
    const txt = writeFileAtomic(p.out, 'answer.txt', answer);
    return { path, where: `answer: ${txt}\n${where}` };
  });
  if (p.json) process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  else if (runs.length > 0) process.stdout.write(`${answer}${notesBlock(runs)}${saved.where ? `\n${saved.where}` : ''}`);
  return finish(failure, p.json, saved);
}
