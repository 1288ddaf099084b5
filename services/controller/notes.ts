/**
 * What a reader of a run should know about its results (runs[].notes[], and under the terminal
 * tables): how far to trust them (a profile of another architecture), which parts of the modeled
 * path no upstream code runs, and which options the user set had no effect on the run (no-effect.*,
 * with the condition under which they would). Each note is a rule over the scenario, the design, the
 * profile and the run's results: a new note is one more entry in NOTE_RULES. The measured clock's
 * notes (a busy machine, trials that disagree) come from measured-notes.ts; every note prints
 * through notesBlock.
 */
import { loadProfile, profileNames, type Arch, type CostProfile } from '../cost/profile.js';
import { COST_STEPS, PINNED } from '../cost/steps.js';
import { designOf } from '../designs/registry.js';
import type { DesignDescriptor } from '../designs/types.js';
import type { Device } from '../runtime/generated/vmmsim/v1/Device.js';
import { SCENARIO_SCHEMA, leafFields, type ModelName, type Scenario } from '../scenario/schema.js';
import type { RunNote } from './results.js';
import { GATHERED_NOTE_CODES, MACHINE_NOTE_CODES } from './measured-notes.js';
import { wrap } from './wrap.js';

export type { RunNote };

/** What a rule sees of a run. */
export interface NoteContext {
  scenario: Scenario;
  model: ModelName;
  design: DesignDescriptor;
  profile: CostProfile;
  /** The run's assigned devices (which VM, behind which pSMMU). */
  devices: readonly Pick<Device, 'vm' | 'psmmu'>[];
  /** The run's operations, when it ran (their breakdowns name the steps it charged). */
  ops?: readonly { op: string; breakdown: readonly { step: string; perOp: number }[] }[];
  /** Every counter of every process, by process name, when it ran. */
  counters?: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** The host's own stage-2 unmaps (IOMMU_IOAS_UNMAP from virtio-mem unplugs), when it ran. */
  hostStage2Unmaps?: number;
}

interface NoteRule {
  code: string;
  /** The note's text when the rule applies to the run, else undefined. */
  note(c: NoteContext): string | undefined;
}

/** A shipped profile of each architecture to name in a note, the default one first (read once). */
let shippedByArch: Map<Arch, string> | undefined;
function shippedProfileFor(arch: Arch): string | undefined {
  if (!shippedByArch) {
    shippedByArch = new Map();
    const byDefault = String((SCENARIO_SCHEMA.fields['profile'] as { default?: unknown } | undefined)?.default ?? '');
    const names = profileNames();
    for (const name of [...names.filter((n) => n === byDefault), ...names.filter((n) => n !== byDefault)]) {
      try {
        const a = loadProfile(name).arch;
        if (!shippedByArch.has(a)) shippedByArch.set(a, name);
      } catch {
        // A broken file in profiles/ is reported when it is used, not here.
      }
    }
  }
  return shippedByArch.get(arch);
}

/** Each VM's pSMMUs that have an assigned device of it, for the VMs that have more than one. */
function vmsOverSeveralPsmmus(devices: NoteContext['devices']): Map<number, number[]> {
  const by = new Map<number, Set<number>>();
  for (const d of devices) {
    const vm = d.vm ?? 0;
    const s = by.get(vm) ?? new Set<number>();
    s.add(d.psmmu ?? 0);
    by.set(vm, s);
  }
  return new Map([...by].filter(([, s]) => s.size > 1).map(([vm, s]) => [vm, [...s].sort((a, b) => a - b)]));
}

function spanText(spans: Map<number, number[]>): string {
  const [vm, ps] = [...spans][0] as [number, number[]];
  const more = spans.size > 1 ? ` (and ${spans.size - 1} more VM${spans.size > 2 ? 's' : ''})` : '';
  return `VM ${vm} has devices behind ${ps.length} pSMMUs${more}`;
}

/** The function a step stands for when no upstream code runs it (`exploration: ...`, `prototype ...`). */
function notUpstream(step: string): string | undefined {
  const info = (COST_STEPS as Record<string, { functions: readonly string[] } | undefined>)[step];
  return info?.functions.find((f) => f.startsWith('exploration:') || f.startsWith('prototype '));
}

/** What a design is when it is not upstream, with its article: "a prototype", "an extrapolation". */
export function designStatusText(d: Pick<DesignDescriptor, 'status'>): string {
  return `${/^[aeiou]/.test(d.status) ? 'an' : 'a'} ${d.status}`;
}

/** Each scenario key's schema default, by dotted key (read once). */
let defaults: Map<string, unknown> | undefined;

/** The value of a dotted key in the scenario as loaded, when it differs from the schema default (the user set it). */
function userSet(s: Scenario, key: string): string | number | boolean | undefined {
  defaults ??= new Map(leafFields().map(([k, f]) => [k, f.default]));
  let node: unknown = s;
  for (const part of key.split('.')) node = (node as Record<string, unknown> | undefined)?.[part];
  if (typeof node !== 'string' && typeof node !== 'number' && typeof node !== 'boolean') return undefined;
  return node === defaults.get(key) ? undefined : node;
}

/** The sum of one counter over the processes of a role (vfio, qemu-0, qemu-1...). */
function roleCounter(counters: NoteContext['counters'], role: string, counter: string): number {
  let n = 0;
  for (const [name, c] of Object.entries(counters ?? {})) if (name === role || name.startsWith(`${role}-`)) n += c[counter] ?? 0;
  return n;
}

/** A no-effect note: the option as set, why it did nothing in this run, and when it would matter. */
function noEffect(key: string, value: string | number | boolean, why: string, matters: string): string {
  return `${key}=${String(value)} had no effect on this run: ${why}. It matters only ${matters}.`;
}

export const NOTE_RULES: readonly NoteRule[] = [
  {
    // The design models another architecture than the profile's host: its steps are then priced
    // with the costs of a machine it does not run on.
    code: 'arch-mismatch',
    note: ({ model, design, profile }) => {
      const arch = design.traits.arch;
      if (arch === profile.arch) return undefined;
      const other = shippedProfileFor(arch);
      return `${model} models ${arch} hardware but profile ${profile.name} prices ${profile.arch}: its modeled figures use another architecture's costs${other ? ` (for ${arch}: --profile ${other})` : ''}`;
    },
  },
  {
    code: 'exploration.single-vsmmu',
    note: ({ scenario: s, design, devices }) => {
      if (design.traits.hostTables !== 'nested' || s.topology.vsmmu !== 'single') return undefined;
      const spans = vmsOverSeveralPsmmus(devices);
      if (spans.size === 0) return undefined;
      return (
        `topology.vsmmu=single (dispatch ${s.topology.dispatch}) and ${spanText(spans)}: one vSMMU in front of several pSMMUs is a VMM design no ` +
        `upstream code runs. QEMU ${PINNED.qemu}'s accelerated vSMMU holds one vIOMMU object, for the pSMMU of its first device (hw/arm/smmuv3-accel.c), ` +
        `and Linux ${PINNED.linux} refuses a vDEVICE behind another pSMMU (drivers/iommu/iommufd/viommu.c: iommufd_vdevice_alloc_ioctl, -EINVAL). ` +
        'What upstream runs is topology.vsmmu=per-psmmu.'
      );
    },
  },
  {
    code: 'exploration.shared-vmid',
    note: ({ scenario: s, design, devices }) => {
      if (design.traits.hostTables !== 'nested' || s.topology.vmid !== 'per-s2-parent') return undefined;
      const spans = vmsOverSeveralPsmmus(devices);
      if (spans.size === 0) return undefined;
      return (
        `topology.vmid=per-s2-parent and ${spanText(spans)}: one VMID and one stage-2 table shared by several pSMMUs needs code that is not upstream. ` +
        `In Linux ${PINNED.linux} a stage-2 domain and its VMID belong to one SMMU instance (drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c: ` +
        'arm_vsmmu_init takes the VMID of its stage-2 parent), so each pSMMU gets a stage-2 domain and a VMID of its own: topology.vmid=per-vsmmu ' +
        'with topology.vsmmu=per-psmmu.'
      );
    },
  },
  {
    code: 'design.not-upstream',
    note: ({ design }) => (design.status === 'upstream' ? undefined : `${design.name} is ${designStatusText(design)}, not upstream Linux and QEMU: ${design.summary}.`),
  },
  {
    code: 'exploration.step',
    note: ({ ops }) => {
      const steps = [...new Set((ops ?? []).flatMap((o) => o.breakdown.filter((e) => e.perOp > 0 && notUpstream(e.step)).map((e) => e.step)))];
      if (steps.length === 0) return undefined;
      return `The modeled path charges ${steps.map((st) => `${st} (${notUpstream(st)})`).join('; ')}.`;
    },
  },
  {
    // One IOMMU_HWPT_INVALIDATE per guest batch is per-command's ioctl when each batch holds one command.
    code: 'no-effect.vmm.hwptInvalidate',
    note: ({ scenario: s, counters }) => {
      const v = userSet(s, 'vmm.hwptInvalidate');
      if ((v !== 'per-batch' && v !== 'queue') || counters === undefined) return undefined;
      const ioctls = roleCounter(counters, 'vfio', 'hwptInvalidate');
      const commands = roleCounter(counters, 'vfio', 'commands');
      const matters = 'when the guest\'s invalidations trap to the VMM (a nested design) and a guest batch (the commands of one CMDQ_PROD write) holds more than one command, as a multi-page unmap with smmu.ril=false does';
      if (ioctls === 0) return noEffect('vmm.hwptInvalidate', v, 'no IOMMU_HWPT_INVALIDATE ran', matters);
      // The queue mode reads each entry from guest memory, whatever a batch holds: it always did something.
      if (v === 'queue' || ioctls !== commands) return undefined;
      return noEffect('vmm.hwptInvalidate', v, `every guest batch held one command (${ioctls} IOMMU_HWPT_INVALIDATE ioctls for ${commands} commands), so each batch was one ioctl as per-command makes it`, matters);
    },
  },
  {
    // A vSMMU routes by ASID only when it fronts several vIOMMUs (vsmmu-route.ts: routeCommand).
    code: 'no-effect.topology.dispatch',
    note: ({ scenario: s, design, devices }) => {
      const v = userSet(s, 'topology.dispatch');
      if (v === undefined) return undefined;
      const matters = 'under a nested design with topology.vsmmu=single when a VM has devices behind more than one pSMMU (topology.psmmus > 1): then one vSMMU routes each invalidation to several pSMMUs';
      if (design.traits.hostTables !== 'nested') return noEffect('topology.dispatch', v, `${design.name} has no vSMMU in front of physical SMMUs`, matters);
      if (s.topology.vsmmu !== 'single') return noEffect('topology.dispatch', v, 'each vSMMU fronts one pSMMU (topology.vsmmu=per-psmmu), so there is nothing to route', matters);
      if (vmsOverSeveralPsmmus(devices).size === 0) {
        const why = s.topology.psmmus === 1 ? 'there is a single pSMMU, so every invalidation goes to it' : 'no VM has devices behind more than one pSMMU, so every invalidation goes to its one pSMMU';
        return noEffect('topology.dispatch', v, why, matters);
      }
      return undefined;
    },
  },
  {
    code: 'no-effect.topology.vcmdqsPerVsmmu',
    note: ({ scenario: s, design }) => {
      const v = userSet(s, 'topology.vcmdqsPerVsmmu');
      if (v === undefined || design.traits.vcmdq) return undefined;
      return noEffect('topology.vcmdqsPerVsmmu', v, `${design.name} has no VCMDQs`, 'under a design whose guest invalidations go to hardware queues (VCMDQs)');
    },
  },
  {
    // A page_pool keeps RX buffers mapped only where the driver maps per packet at all.
    code: 'no-effect.device.nic.pagePool',
    note: ({ scenario: s }) => {
      const v = userSet(s, 'device.nic.pagePool');
      if (v !== true) return undefined;
      const matters = 'with workload.kind packet-stream and dma strict or lazy, where the driver would otherwise map every RX buffer per packet';
      if (s.workload.kind !== 'packet-stream') return noEffect('device.nic.pagePool', v, `workload.kind is ${s.workload.kind}, which has no NIC`, matters);
      if (s.dma !== 'strict' && s.dma !== 'lazy') return noEffect('device.nic.pagePool', v, `dma is ${s.dma}, which ${s.dma === 'static' ? 'maps every buffer once already' : 'copies every packet through its own mapped pool'}`, matters);
      return undefined;
    },
  },
  {
    code: 'no-effect.guest.flushQueue',
    note: ({ scenario: s }) => {
      const v = userSet(s, 'guest.flushQueue');
      if (v === undefined || s.dma === 'lazy') return undefined;
      return noEffect('guest.flushQueue', v, `dma is ${s.dma}, which has no flush queue`, 'with dma=lazy');
    },
  },
  {
    // One H_PUT_TCE per page and one H_PUT_TCE_INDIRECT of one TCE are the same hypercall count.
    code: 'no-effect.guest.tceHcalls',
    note: ({ scenario: s, design }) => {
      const v = userSet(s, 'guest.tceHcalls');
      if (v === undefined) return undefined;
      const matters = 'under an sPAPR design (ppc64) with workload.granulePages > 1, where indirect puts up to 512 TCEs in one hypercall';
      if (design.traits.arch !== 'ppc64') return noEffect('guest.tceHcalls', v, `${design.name} makes no TCE hypercalls (it is not an sPAPR design)`, matters);
      if (s.workload.granulePages === 1) return noEffect('guest.tceHcalls', v, 'every map and unmap covers one page (workload.granulePages 1), so per-entry and indirect make the same one hypercall', matters);
      return undefined;
    },
  },
  {
    // Without RIL only an invalidation of more than one page becomes several TLBIs.
    code: 'no-effect.smmu.ril',
    note: ({ scenario: s, design, hostStage2Unmaps }) => {
      const v = userSet(s, 'smmu.ril');
      if (v !== false) return undefined;
      const matters = 'under an SMMUv3 design (arm64) when an invalidation covers more than one page: workload.granulePages > 1, or the host\'s stage-2 unmaps of virtio-mem';
      if (design.traits.arch !== 'arm64') return noEffect('smmu.ril', v, `${design.name} models ${design.traits.arch}, which has no SMMUv3`, matters);
      if (s.workload.granulePages === 1 && (hostStage2Unmaps ?? 0) === 0) {
        return noEffect('smmu.ril', v, 'no invalidation covered more than one page (workload.granulePages 1, no host stage-2 unmap), and a one-page invalidation is one TLBI with or without range invalidation', matters);
      }
      return undefined;
    },
  },
];

/** The notes of a run of `scenario` under `model`: every rule that applies, in NOTE_RULES order. */
export function runNotes(c: Omit<NoteContext, 'design' | 'model'> & { model: string }): RunNote[] {
  const design = designOf(c.model);
  const ctx: NoteContext = { ...c, model: design.name, design };
  const out: RunNote[] = [];
  for (const r of NOTE_RULES) {
    const text = r.note(ctx);
    if (text !== undefined) out.push({ code: r.code, text });
  }
  return out;
}

/** 'arch-mismatch' when the design models another architecture than the profile's host. */
export function archNotes(model: ModelName, profile: CostProfile): RunNote[] {
  const design = designOf(model);
  const text = (NOTE_RULES[0] as NoteRule).note({ model, design, profile } as NoteContext);
  return text === undefined ? [] : [{ code: 'arch-mismatch', text }];
}

/** Runs a gathered note names by their subject before it says how many more. */
const GATHERED_SHOWN = 8;

/**
 * The notes of a set of runs as lines for the terminal, each distinct note once, wrapped to the
 * tables' 120 columns (continuation lines indented); '' when none. A note whose text does not name
 * the models whose runs carry it names them after its code, when not every run carries it. A note
 * about the machine (measured-notes.ts MACHINE_NOTE_CODES) is said once for a command, with the
 * first run's text, and names no model. A gathered note (GATHERED_NOTE_CODES: the same finding
 * with each run's own figures) is said once: in full for the first run that has it, then the
 * others by model and subject.
 */
export function notesBlock(runs: readonly { model: string; notes?: readonly RunNote[] | undefined; point?: Record<string, string | number> | undefined }[]): string {
  const by = new Map<string, { note: RunNote; models: string[]; machine: boolean; others: string[] }>();
  // A run as a gathered note names it: its model, and in a sweep its point.
  const runName = (run: (typeof runs)[number]): string => (run.point ? `${run.model} at ${Object.entries(run.point).map(([k, v]) => `${k}=${v}`).join(' ')}` : run.model);
  for (const run of runs) {
    for (const n of run.notes ?? []) {
      const machine = MACHINE_NOTE_CODES.has(n.code);
      const gathered = GATHERED_NOTE_CODES.has(n.code) && n.subject !== undefined;
      const key = machine || gathered ? n.code : `${n.code}\u0000${n.text}`;
      const e = by.get(key);
      if (!e) {
        by.set(key, { note: n, models: [gathered ? runName(run) : run.model], machine, others: [] });
        continue;
      }
      // A gathered note: the first run's in full, the others' by their subject.
      if (gathered) e.others.push(`${runName(run)} ${n.subject ?? ''}`);
      else if (!e.models.includes(run.model)) e.models.push(run.model);
    }
  }
  const all = new Set(runs.map((r) => r.model));
  const lines = [...by.values()].map(({ note, models, machine, others }) => {
    const named = machine || (others.length === 0 && (models.length === all.size || models.every((m) => note.text.includes(m)))) ? '' : ` (${models.join(', ')})`;
    const shown = others.slice(0, GATHERED_SHOWN);
    const also = others.length > 0 ? `; the same in ${others.length} more run${others.length > 1 ? 's' : ''}: ${shown.join('; ')}${others.length > shown.length ? `; and ${others.length - shown.length} more` : ''}` : '';
    return wrap(`${note.code}${named}: ${note.text}${also}`, 116).split('\n').map((l, i) => (i === 0 ? `  ${l}` : `    ${l}`)).join('\n');
  });
  return lines.length > 0 ? `\nnotes:\n${lines.join('\n')}\n` : '';
}
