import { VmmsimError } from '../runtime/errors.js';
import {
  RATE_WORKLOADS, SCENARIO_SCHEMA, WORKLOADS, leafFields, type Field, type ModelName, type NumberField, type ObjectField, type Scenario, type StringField,
} from './schema.js';
import { designOf, designsWhere } from '../designs/registry.js';

/** Edit distance, to suggest the key a user probably meant. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] as number[];
      const prev = d[i - 1] as number[];
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/** Words longer than this get no suggestion: the edit distance is quadratic in their length. */
const MAX_SUGGEST_LENGTH = 64;

export function closest(word: string, candidates: readonly string[]): string | undefined {
  if (word.length > MAX_SUGGEST_LENGTH) return undefined;
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const dd = distance(word.toLowerCase(), c.toLowerCase());
    if (dd < bestD) {
      bestD = dd;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** A value as a message shows it: JSON, cut to a few dozen characters (a value may be megabytes). */
export function preview(v: unknown, max = 60): string {
  if (typeof v === 'string') return v.length > max ? `${JSON.stringify(v.slice(0, max))}... (${v.length} characters)` : JSON.stringify(v);
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    text = String(v);
  }
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

/** A key as a message names it: cut, for a key that is itself megabytes. */
function keyName(key: string): string {
  return key.length > MAX_SUGGEST_LENGTH ? `${key.slice(0, MAX_SUGGEST_LENGTH)}... (${key.length} characters)` : key;
}

function fieldError(path: string, what: string): VmmsimError {
  return new VmmsimError('E_SCENARIO_FIELD', `scenario key ${path}: ${what}`);
}

function describeNumber(f: NumberField): string {
  return `${f.type === 'integer' ? 'an integer' : 'a number'} from ${f.min} to ${f.max}`;
}

function checkString(path: string, f: StringField, v: unknown): string {
  if (typeof v !== 'string' || v.trim() === '') throw fieldError(path, `must be ${f.enum ? `one of ${f.enum.join(', ')}` : 'a non-empty string'}, got ${preview(v)}`);
  // The length first: nothing else (a suggestion, the message) handles a value of megabytes.
  if (v.length > f.maxLength) {
    throw fieldError(path, f.enum ? `unknown value ${preview(v)}; allowed: ${f.enum.join(', ')}` : `at most ${f.maxLength} characters, got ${v.length}`);
  }
  const replaced = f.replaced?.[v];
  if (replaced !== undefined) throw fieldError(path, `"${v}" is no longer a value of this key: ${replaced}`);
  if (f.enum && !f.enum.includes(v)) {
    const hint = closest(v, f.enum);
    throw fieldError(path, `unknown value ${preview(v)}${hint ? ` (did you mean "${hint}"?)` : ''}; allowed: ${f.enum.join(', ')}`);
  }
  if (f.supported && !f.supported.includes(v)) {
    throw new VmmsimError('E_NOT_SUPPORTED', `scenario key ${path}: "${v}" is not supported yet; supported now: ${f.supported.join(', ')}`);
  }
  return v;
}

function checkNumber(path: string, f: NumberField, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (f.type === 'integer' && !Number.isInteger(v))) {
    throw fieldError(path, `must be ${describeNumber(f)}, got ${preview(v)}`);
  }
  if (v < f.min || v > f.max) throw fieldError(path, `must be ${describeNumber(f)}, got ${v}`);
  if (f.supportedMax !== undefined && v > f.supportedMax) {
    throw new VmmsimError('E_NOT_SUPPORTED', `scenario key ${path}: ${v} is not supported yet; this build supports at most ${f.supportedMax}`);
  }
  return v;
}

function resolveObject(path: string, spec: ObjectField, input: unknown): Record<string, unknown> {
  if (input === undefined || input === null) input = {};
  if (typeof input !== 'object' || Array.isArray(input)) throw fieldError(path || '(top level)', `must be a mapping of keys to values, got ${Array.isArray(input) ? 'a list' : preview(input)}`);
  const keys = Object.keys(spec.fields);
  for (const k of Object.keys(input as object)) {
    if (!keys.includes(k)) {
      const full = path ? `${path}.${keyName(k)}` : keyName(k);
      const hint = closest(k, keys);
      throw new VmmsimError('E_SCENARIO_FIELD', `unknown scenario key ${full}${hint ? ` (did you mean ${path ? `${path}.` : ''}${hint}?)` : ''}; allowed here: ${keys.join(', ')}`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(spec.fields)) {
    const p = path ? `${path}.${k}` : k;
    const v = (input as Record<string, unknown>)[k];
    out[k] = resolveField(p, f, v);
  }
  return out;
}

function checkBoolean(path: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw fieldError(path, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function resolveField(path: string, f: Field, v: unknown): unknown {
  if (f.type === 'object') return resolveObject(path, f, v);
  if (v === undefined || v === null) return f.default;
  if (f.type === 'string') return checkString(path, f, v);
  if (f.type === 'boolean') return checkBoolean(path, v);
  return checkNumber(path, f, v);
}

/** Workload keys whose allowed values depend on the workload kind, or on each other. */
function checkWorkload(w: Scenario['workload']): void {
  if (w.rate > 0 && !RATE_WORKLOADS.includes(w.kind)) {
    throw new VmmsimError('E_NOT_SUPPORTED', `scenario key workload.rate: ${w.rate} is not supported yet with workload.kind ${w.kind}; this build runs open loop (rate > 0) for ${RATE_WORKLOADS.join(', ')} only`);
  }
  if (w.rate === 0 && w.arrivals !== 'constant') throw fieldError('workload.arrivals', `${w.arrivals} arrivals are for open loop; set workload.rate > 0 (arrivals per second), or leave arrivals at constant`);
  if (w.rate > 0 && w.gapUs > 0) throw fieldError('workload.gapUs', `think time is for closed loop; with workload.rate ${w.rate} operations arrive at that rate, so gapUs must be 0, got ${w.gapUs}`);
  if (w.kind === 'packet-stream' && w.packetBytes > w.granulePages * 4096) {
    throw fieldError('workload.packetBytes', `${w.packetBytes} bytes do not fit the packet's buffer of workload.granulePages ${w.granulePages} x 4096 bytes; raise granulePages or lower packetBytes`);
  }
  if (w.kind === 'sva-unmap-storm' && w.dwellUs > 0) throw fieldError('workload.dwellUs', `sva-unmap-storm posts nothing to a device, so dwellUs must be 0, got ${w.dwellUs}`);
  if (w.kind !== 'trace-replay' && w.ops === 0 && w.durationSec === 0) throw fieldError('workload.ops', '0 (no limit) needs workload.durationSec > 0, or the run never ends');
  if (w.kind === 'trace-replay' && w.migration.atOp > 0) {
    throw new VmmsimError('E_NOT_SUPPORTED', `scenario key workload.migration.atOp: a migration step is not supported yet with workload.kind trace-replay (the replay has no per-thread shares to stop at); it runs with ${WORKLOADS.filter((k) => k !== 'trace-replay').join(', ')}`);
  }
  if (w.kind === 'trace-replay' && w.virtioMem.everyOps > 0) {
    throw new VmmsimError('E_NOT_SUPPORTED', `scenario key workload.virtioMem.everyOps: virtio-mem resizes are not supported yet with workload.kind trace-replay (they follow thread 0's operations, which a replay does not have); they run with ${WORKLOADS.filter((k) => k !== 'trace-replay').join(', ')}`);
  }
}

/** Topology keys that depend on each other. */
function checkTopology(t: Scenario['topology']): void {
  const devices = t.psmmus * t.devicesPerPsmmu;
  if (devices < t.vms) {
    throw fieldError('topology.vms', `${t.vms} VMs need at least ${t.vms} assigned devices (each VM gets one or more), but psmmus x devicesPerPsmmu is ${devices}; raise topology.devicesPerPsmmu or topology.psmmus`);
  }
}

/**
 * topology.emulatedDevices under one architecture (a scenario runs under other models than its own
 * with `compare`): only designs that put emulated devices behind a separate emulated vSMMU take them.
 */
export function checkEmulatedDevices(t: Scenario['topology'], model: ModelName): void {
  const ok = designOf(model).traits.emulatedDevices;
  if (t.emulatedDevices === 0 || ok === true) return;
  const able = designsWhere((d) => d.traits.emulatedDevices === true);
  throw new VmmsimError(
    'E_NOT_SUPPORTED',
    `scenario key topology.emulatedDevices: ${t.emulatedDevices} is not supported with model ${model}: ${ok.refused}`,
    `set topology.emulatedDevices to 0, or run ${able.join(' or ')}`,
  );
}

/**
 * device.ats under one architecture: ATS (device ATCs, ATC_INV) is modelled where the IOMMU driver
 * is arm-smmu-v3; a design says why not otherwise.
 */
export function checkAts(s: Scenario, model: ModelName): void {
  const ok = designOf(model).traits.ats;
  if (!s.device.ats || ok === true) return;
  const able = designsWhere((d) => d.traits.ats === true);
  const why = ok?.refused ?? 'its IOMMU driver is not arm-smmu-v3, and vmmsim models ATS (device ATCs, ATC_INV) only for the arm-smmu-v3 designs';
  throw new VmmsimError('E_NOT_SUPPORTED', `scenario key device.ats: true is not supported with model ${model}: ${why}`, `set device.ats to false, or run ${able.join(' or ')}`);
}

/**
 * dma under one architecture: dma=swiotlb is dma-iommu's bounce path for untrusted devices
 * (dev_use_swiotlb), so only designs whose guest DMA API is dma-iommu take it.
 */
export function checkDmaMode(dma: Scenario['dma'], model: ModelName): void {
  if (dma !== 'swiotlb' || designOf(model).traits.dmaIommu) return;
  const able = designsWhere((d) => d.traits.dmaIommu);
  throw new VmmsimError(
    'E_NOT_SUPPORTED',
    `scenario key dma: swiotlb is not supported with model ${model}: it is dma-iommu's bounce path for untrusted devices (dev_use_swiotlb), which ${model}'s guest DMA API does not have (none: dma-direct, no IOMMU; sPAPR: powerpc's dma_iommu_ops map every buffer through the TCE table, with no such bounce)`,
    `run ${able.join(', ')} with dma=swiotlb, or use dma=strict or dma=bounce`,
  );
}

/** guest.ddw under one architecture: a dynamic DMA window is sPAPR's (a TCE table per guest PHB). */
export function checkDdw(guest: Scenario['guest'], model: ModelName): void {
  if (!guest.ddw || designOf(model).traits.shadow === 'tce-table') return;
  const able = designsWhere((d) => d.traits.shadow === 'tce-table');
  throw new VmmsimError(
    'E_NOT_SUPPORTED',
    `scenario key guest.ddw: true is not supported with model ${model}: a dynamic DMA window (ibm,create-pe-dma-window) is sPAPR's`,
    `set guest.ddw to false, or run ${able.join(' or ')}`,
  );
}

/** Validates a parsed scenario document and fills in every default. */
export function resolveScenario(doc: unknown): Scenario {
  const s = resolveObject('', SCENARIO_SCHEMA, doc) as unknown as Scenario;
  checkTopology(s.topology);
  checkEmulatedDevices(s.topology, s.model);
  checkAts(s, s.model);
  checkDmaMode(s.dma, s.model);
  checkDdw(s.guest, s.model);
  checkWorkload(s.workload);
  return s;
}

/**
 * Applies one `--set key=value` to a raw scenario document. The value is read as the key's type,
 * so `--set topology.psmmus=4` and `psmmus: 4` in YAML mean the same.
 */
export function applySet(doc: Record<string, unknown>, assignment: string): void {
  const eq = assignment.indexOf('=');
  if (eq <= 0) throw new VmmsimError('E_USAGE', `--set takes key=value, got "${assignment}"`);
  const key = assignment.slice(0, eq).trim();
  const raw = assignment.slice(eq + 1).trim();
  const fields = leafFields();
  const spec = fields.find(([p]) => p === key)?.[1];
  if (!spec) {
    const hint = closest(key, fields.map(([p]) => p));
    throw new VmmsimError('E_SCENARIO_FIELD', `unknown scenario key ${keyName(key)}${hint ? ` (did you mean ${hint}?)` : ''} in --set`);
  }
  let value: unknown;
  if (spec.type === 'string') value = raw;
  else if (spec.type === 'boolean') {
    if (raw !== 'true' && raw !== 'false') throw fieldError(key, `must be true or false, got "${raw}" in --set`);
    value = raw === 'true';
  } else {
    value = raw === '' ? NaN : Number(raw);
    if (Number.isNaN(value)) throw fieldError(key, `must be ${describeNumber(spec)}, got "${raw}" in --set`);
  }
  const parts = key.split('.');
  let node = doc;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts[parts.length - 1] as string] = value;
}
