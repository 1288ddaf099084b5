import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VmmsimError } from '../../services/runtime/errors.js';
import type { ResultsDoc, RunResult } from '../../services/controller/results.js';
import { answerText, fmtCount, fmtRatio, fmtRate, fmtUs, loadStudy, pointLabel, studyFile, studyNames, studyPoints, wrap, ANSWER_COLUMNS, type StudyRecord } from '../../services/controller/study.js';
import { tempDir } from '../helpers/cli.js';

const SHIPPED = ['dynamic-mappings', 'multi-vsmmu', 'paravirt', 'spapr-tce', 'vcmdq'];

function studyYaml(dir: string, body: string): string {
  const f = join(dir, 'study.yaml');
  writeFileSync(join(dir, 'base.yaml'), 'name: base\n');
  writeFileSync(f, body);
  return f;
}

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(VmmsimError);
    expect((err as VmmsimError).code).toBe('E_STUDY');
    return (err as Error).message;
  }
  throw new Error('expected E_STUDY');
}

const VALID = `name: t
question: Which is faster?
scenario: base.yaml
ops: [unmap]
parts:
  - label: a
    models: [nested-smmuv3, virtio-iommu]
    set: { workload.granulePages: [1, 16], dma: strict }
  - label: b
    models: [nested-smmuv3]
    quick: { workload.ops: 50 }
quick: { workload.ops: 100, workload.granulePages: 1 }
pairs:
  - [virtio-iommu, nested-smmuv3, a]
`;

describe('studies as data (scenarios/studies)', () => {
  it('ships the five studies, each loading with its question, parts and pairs inside its parts', () => {
    expect(studyNames()).toEqual(SHIPPED);
    for (const name of SHIPPED) {
      const s = loadStudy(studyFile(name));
      expect(s.name).toBe(name);
      expect(s.question.length).toBeGreaterThan(40);
      expect(s.parts.length).toBeGreaterThan(0);
      for (const p of s.pairs) expect(s.parts.find((x) => x.label === p.part)?.models).toEqual(expect.arrayContaining([p.a, p.b]));
      // --quick lowers the work, never raises it.
      expect(studyPoints(s, true).length).toBeLessThanOrEqual(studyPoints(s, false).length);
    }
  });

  it('points: each part\'s cross product of its lists, with --quick\'s values over the part\'s own', () => {
    const s = loadStudy(studyYaml(tempDir(), VALID));
    const full = studyPoints(s, false);
    expect(full.map((p) => [p.part, p.swept])).toEqual([
      ['a', ['workload.granulePages=1']],
      ['a', ['workload.granulePages=16']],
      ['b', []],
    ]);
    expect(full[0]?.sets).toEqual(['dma=strict', 'workload.granulePages=1']);
    const quick = studyPoints(s, true);
    expect(quick.map((p) => p.part)).toEqual(['a', 'b']);
    // A part's own quick values go over the study's, for that part only.
    expect(quick[1]?.sets).toEqual(['workload.ops=50', 'workload.granulePages=1']);
    expect(quick[0]?.sets).toEqual(['workload.granulePages=1', 'dma=strict', 'workload.ops=100']);
    expect(pointLabel('a', { part: 'a', 'workload.granulePages': 16 })).toBe('a granulePages=16');
  });

  it('refuses a study file with E_STUDY, naming the key', () => {
    const dir = tempDir();
    expect(refusal(() => studyFile('no-such-study'))).toMatch(/no study named "no-such-study"; studies: dynamic-mappings/);
    expect(refusal(() => studyFile('Bad Name'))).toMatch(/no study named/);
    expect(refusal(() => loadStudy(studyYaml(dir, VALID.replace('question: Which is faster?\n', ''))))).toMatch(/question must be a non-empty string/);
    expect(refusal(() => loadStudy(studyYaml(dir, `${VALID}colour: blue\n`)))).toMatch(/unknown key colour/);
    expect(refusal(() => loadStudy(studyYaml(dir, VALID.replace('[virtio-iommu, nested-smmuv3, a]', '[virtio-iommu, nested-smmuv3, b]'))))).toMatch(/part b does not run virtio-iommu/);
    expect(refusal(() => loadStudy(studyYaml(dir, VALID.replace('[nested-smmuv3, virtio-iommu]', '[nested-smmuv3, vmware]'))))).toMatch(/"vmware" is not a design/);
    expect(refusal(() => loadStudy(studyYaml(dir, VALID.replace('scenario: base.yaml', 'scenario: gone.yaml'))))).toMatch(/gone.yaml does not exist/);
    expect(refusal(() => loadStudy(studyYaml(dir, VALID.replace('label: b', 'label: a'))))).toMatch(/"a" is used twice/);
    expect(refusal(() => loadStudy(studyYaml(dir, VALID.replace('    quick: { workload.ops: 50 }', '    sets: { workload.ops: 50 }'))))).toMatch(/parts\[1\]: unknown key sets/);
    expect(refusal(() => loadStudy(studyYaml(dir, VALID.replace('set: { workload', 'set: { model: none, workload'))))).toMatch(/list the designs in models/);
  });

  it('wraps to the column limit, cutting only a word longer than a line', () => {
    const long = `${'word '.repeat(40)}${'x'.repeat(100)} end`;
    const lines = wrap(long, ANSWER_COLUMNS, '  ');
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(ANSWER_COLUMNS);
    expect(lines.join(' ').replace(/\s+/g, '')).toBe(long.replace(/\s+/g, ''));
  });

  it('formats figures as the answer prints them', () => {
    expect([fmtUs(30), fmtUs(4460), fmtUs(41_040), fmtUs(123_456), fmtUs(4_567_890)]).toEqual(['0.030', '4.460', '41.04', '123.5', '4568']);
    expect([fmtCount(2), fmtCount(1.25), fmtCount(1.5), fmtCount(12.5), fmtCount(0.004), fmtCount(0.0004)]).toEqual(['2', '1.25', '1.5', '12.5', '0.004', '0.0004']);
    expect([fmtRate(224_000), fmtRate(33_300_000), fmtRate(0)]).toEqual(['224k', '33.3M', '-']);
    expect([fmtRatio(0.59), fmtRatio(12.34), fmtRatio(456), fmtRatio(0.0192), fmtRatio(Number.NaN)]).toEqual(['0.59x', '12.3x', '456x', '0.019x', '-']);
  });

  it('keeps every line of the answer within 72 columns: transitions too wide go on a line under their row', () => {
    const study = loadStudy(studyYaml(tempDir(), VALID.replace('ops: [unmap]', 'ops: [map, unmap]\nbaseline: virtio-iommu')));
    const transitions = { exit: 0.004, user: 0.004, ioctl: 0.51, hw: 0.51, direct: 0 };
    const op = (name: string, ns: number): unknown => ({ op: name, count: 10, failed: 0, transitions, modeledNs: { mean: ns }, breakdown: [{ step: 'guest.iova_alloc', perOp: 1, ns, functions: [], confidence: 'U' }] });
    const run = (model: string, ns: number): RunResult =>
      ({ model, point: { part: 'a', 'workload.granulePages': 1 }, ops: [op('map', ns), op('unmap', ns * 2)], throughput: { opsPerSecModeled: 1e9 / ns }, notes: [] }) as unknown as RunResult;
    const doc = {
      scenario: { dma: 'lazy', topology: { vms: 1, psmmus: 1, devicesPerPsmmu: 1, vsmmu: 'single' }, workload: { kind: 'dma-map-benchmark', threads: 1, granulePages: 1, ops: 10 } },
      profile: { name: 'arm64-kunpeng920', arch: 'arm64' },
      seed: 1,
      runs: [run('nested-smmuv3-vcmdq', 110), run('virtio-iommu', 4398)],
    } as unknown as ResultsDoc;
    const record = { name: 't', question: study.question, source: '', quick: false, command: 'vmmsim study t', file: '', parts: [], ops: ['unmap'], verdicts: [], answer: '' } as StudyRecord;
    const lines = answerText(doc, study, record).split('\n');
    for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(ANSWER_COLUMNS);
    const row = lines.findIndex((l) => l.startsWith('  virtio-iommu'));
    expect(lines[row]).toMatch(/^ {2}virtio-iommu\s+4\.398\s+8\.796\s+227k\s+1\.00x$/);
    expect(lines[row + 1]).toBe('    unmap e/u/i/h/d: 0.004/0.004/0.51/0.51/0');
  });
});
