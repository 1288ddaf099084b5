import { isAbsolute, normalize, relative, sep } from 'node:path';
import { HOST_STRTAB_SIDS } from '../machine/board.js';
import { isCostStep, COST_STEPS } from '../cost/steps.js';
import { VmmsimError } from '../runtime/errors.js';
import type { Topology__Output } from '../runtime/generated/vmmsim/v1/Topology.js';
import { ROLES, endpointName, isRole } from '../runtime/topology.js';
import { MODELS } from '../designs/names.js';
import { DMA_MODES, SCENARIO_SCHEMA, leafFields, type NumberField, type StringField } from './schema.js';

/**
 * Configure is validated like a scenario: every field of the control message against the same
 * bounds as the scenario key it carries (scenario-keys), and every index below its count, before a
 * role does any work or allocates anything for it. A controller resolves its scenario through the
 * schema first, so a request that fails here did not come from `vmmsim run`: the role answers with
 * E_CONFIGURE naming the field and keeps serving.
 *
 * proto3 sends an unset field as its zero value: a zero (or an empty string) where the scenario
 * key has no zero means "the role's default", as the roles read it.
 */

/** Endpoints of one topology: at most 64 VMs (a guest and a VMM each), 64 pSMMUs, kvm and vfio. */
export const MAX_ENDPOINTS = 2 * 64 + 64 + 2;
const MAX_VMS = 64;
const MAX_PSMMUS = 64;
const MAX_DEVICES = MAX_PSMMUS * 256;
/** A guest's RIDs (bus 0..255, device, function): 16 bits. */
const MAX_VSID = 1 << 16;
const MAX_VMID = 0xffff;
const MAX_TEXT = 1024;
const MAX_PATH = 4096;
/** One second of modeled time: no single step costs more. */
const MAX_STEP_NS = 1e9;
const MAX_DEADLINE_MS = 3_600_000;
/** The longest operation name vmmsim explain asks a guest to trace. */
const MAX_OP_NAME = 64;

function bad(field: string, what: string): VmmsimError {
  return new VmmsimError('E_CONFIGURE', `Configure: ${field}: ${what}`);
}

const LEAVES = new Map(leafFields(SCENARIO_SCHEMA));

function spec<T extends StringField | NumberField>(key: string): T {
  const f = LEAVES.get(key);
  if (!f) throw new Error(`no scenario key ${key}`);
  return f as T;
}

function checkEnum(field: string, v: string, allowed: readonly string[]): void {
  if (v === '') return;
  if (v.length > MAX_TEXT || !allowed.includes(v)) throw bad(field, `${JSON.stringify(v.slice(0, 64))} is not one of ${allowed.join(', ')}`);
}

function checkKeyString(field: string, v: string, key: string): void {
  const f = spec<StringField>(key);
  checkEnum(field, v, f.supported ?? f.enum ?? []);
}

function checkKeyNumber(field: string, v: number, key: string): void {
  const f = spec<NumberField>(key);
  if (!Number.isFinite(v)) throw bad(field, `${v} is not a finite number`);
  if (v === 0) return;
  if (f.type === 'integer' && !Number.isInteger(v)) throw bad(field, `${v} is not an integer`);
  const max = f.supportedMax ?? f.max;
  if (v < f.min || v > max) throw bad(field, `${v} is outside ${f.min}..${max} (scenario key ${key})`);
}

function checkCount(field: string, n: number, max: number): void {
  if (n > max) throw bad(field, `${n} entries, at most ${max}`);
}

function checkIndex(field: string, v: number, count: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v >= count) throw bad(field, `${v} is not below the ${what} (${count})`);
}

/** The run folder path and a trace path inside it: absolute, normalised, no `..`. */
function checkPath(field: string, p: string): void {
  if (p.length > MAX_PATH) throw bad(field, `${p.length} characters, at most ${MAX_PATH}`);
  if (!isAbsolute(p) || normalize(p) !== p || p.includes('\0')) throw bad(field, `${JSON.stringify(p.slice(0, 256))} is not an absolute, normalised path`);
}

/**
 * Checks a Configure request for the process `self` names. Throws E_CONFIGURE at the first field
 * out of bounds.
 */
export function checkConfigure(t: Topology__Output, self: string): void {
  if (t.runId.length > MAX_TEXT) throw bad('runId', `${t.runId.length} characters, at most ${MAX_TEXT}`);
  checkEnum('model', t.model, MODELS);
  if (t.model === '') throw bad('model', 'missing');
  checkEnum('dma', t.dma, DMA_MODES);

  checkCount('endpoints', t.endpoints.length, MAX_ENDPOINTS);
  const ids = new Set<number>();
  const names = new Set<string>();
  const perRole = new Map<string, number>();
  t.endpoints.forEach((e, i) => {
    const f = `endpoints[${i}]`;
    if (!isRole(e.role)) throw bad(`${f}.role`, `${JSON.stringify(e.role.slice(0, 64))} is not one of ${ROLES.join(', ')}`);
    const singleton = e.role === 'kvm' || e.role === 'vfio';
    checkIndex(`${f}.index`, e.index, singleton ? 1 : e.role === 'psmmu' ? MAX_PSMMUS : MAX_VMS, singleton ? `one ${e.role} per host` : `most ${e.role} processes`);
    if (e.name !== endpointName(e.role, e.index)) throw bad(`${f}.name`, `${JSON.stringify(e.name.slice(0, 64))} is not ${endpointName(e.role, e.index)}`);
    if (e.id === 0 || ids.has(e.id)) throw bad(`${f}.id`, `${e.id} is zero or used twice`);
    if (names.has(e.name)) throw bad(`${f}.name`, `${e.name} is listed twice`);
    if (e.address.length > MAX_TEXT || e.host.length > MAX_TEXT) throw bad(f, `address or host longer than ${MAX_TEXT} characters`);
    ids.add(e.id);
    names.add(e.name);
    perRole.set(e.role, (perRole.get(e.role) ?? 0) + 1);
  });
  if (!names.has(self)) throw bad('endpoints', `${self} (this process) is not listed`);
  if (t.floorPeer !== '' && !names.has(t.floorPeer)) throw bad('floorPeer', `${JSON.stringify(t.floorPeer.slice(0, 64))} is not an endpoint of the topology`);

  const vms = t.vmids.length;
  if (vms < 1 || vms > MAX_VMS) throw bad('vmids', `${vms} VMs, allowed 1..${MAX_VMS}`);
  t.vmids.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 1 || v > MAX_VMID) throw bad(`vmids[${i}]`, `${v} is not a VMID (1..${MAX_VMID})`);
  });
  const psmmus = perRole.get('psmmu') ?? 0;
  checkCount('devices', t.devices.length, MAX_DEVICES);
  t.devices.forEach((d, i) => {
    checkIndex(`devices[${i}].vm`, d.vm, vms, 'VM count');
    checkIndex(`devices[${i}].psmmu`, d.psmmu, psmmus, 'pSMMU count');
    checkIndex(`devices[${i}].vsid`, d.vsid, MAX_VSID, 'guest RID space');
    checkIndex(`devices[${i}].psid`, d.psid, HOST_STRTAB_SIDS, 'stream table size');
  });
  checkCount('emulatedDevices', t.emulatedDevices.length, MAX_VMS * 31);
  t.emulatedDevices.forEach((d, i) => {
    checkIndex(`emulatedDevices[${i}].vm`, d.vm, vms, 'VM count');
    checkIndex(`emulatedDevices[${i}].vsid`, d.vsid, MAX_VSID, 'guest RID space');
  });

  const steps = Object.entries(t.costsNs);
  checkCount('costsNs', steps.length, Object.keys(COST_STEPS).length);
  for (const [k, v] of steps) {
    if (!isCostStep(k)) throw bad('costsNs', `unknown step ${JSON.stringify(k.slice(0, 64))}`);
    if (!Number.isFinite(v) || v < 0 || v > MAX_STEP_NS) throw bad(`costsNs.${k}`, `${v} ns is outside 0..${MAX_STEP_NS}`);
  }
  const missing = Object.keys(COST_STEPS).filter((k) => !(k in t.costsNs));
  if (missing.length > 0) throw bad('costsNs', `lacks ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}`);

  if (t.deadlineMs > MAX_DEADLINE_MS) throw bad('deadlineMs', `${t.deadlineMs}, at most ${MAX_DEADLINE_MS}`);
  checkKeyString('vsmmu', t.vsmmu, 'topology.vsmmu');
  checkKeyString('dispatch', t.dispatch, 'topology.dispatch');
  checkKeyString('vmidPolicy', t.vmidPolicy, 'topology.vmid');
  checkKeyNumber('vcmdqsPerVsmmu', t.vcmdqsPerVsmmu, 'topology.vcmdqsPerVsmmu');

  checkPath('ramDir', t.ramDir);

  const w = t.workload;
  if (w) {
    checkKeyString('workload.kind', w.kind, 'workload.kind');
    checkKeyString('workload.arrivals', w.arrivals, 'workload.arrivals');
    const numbers: [keyof typeof w, string][] = [
      ['threads', 'workload.threads'], ['granulePages', 'workload.granulePages'], ['ops', 'workload.ops'], ['durationSec', 'workload.durationSec'],
      ['rate', 'workload.rate'], ['dwellUs', 'workload.dwellUs'], ['gapUs', 'workload.gapUs'], ['timeScale', 'workload.timeScale'], ['queueDepth', 'workload.queueDepth'],
      ['packetBytes', 'workload.packetBytes'],
    ];
    for (const [k, key] of numbers) checkKeyNumber(`workload.${k}`, w[k] as number, key);
    if (w.migration) {
      checkKeyNumber('workload.migration.atOp', w.migration.atOp, 'workload.migration.atOp');
      checkKeyNumber('workload.migration.destVcmdqs', w.migration.destVcmdqs, 'workload.migration.destVcmdqs');
      // An older controller sends none: today's behaviour.
      if (w.migration.fallback !== '') checkKeyString('workload.migration.fallback', w.migration.fallback, 'workload.migration.fallback');
    }
    if (w.virtioMem) {
      checkKeyNumber('workload.virtioMem.everyOps', w.virtioMem.everyOps, 'workload.virtioMem.everyOps');
      checkKeyNumber('workload.virtioMem.blocks', w.virtioMem.blocks, 'workload.virtioMem.blocks');
    }
    if (w.trace !== '') {
      checkPath('workload.trace', w.trace);
      const rel = relative(t.ramDir, w.trace);
      if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || rel.includes(sep)) throw bad('workload.trace', 'a trace must be a file directly in the run folder (ramDir), where the controller copies it');
    }
  }
  const d = t.device;
  if (d) {
    const numbers: [Exclude<keyof typeof d, 'ats' | 'nic' | 'nvme'>, string][] = [['dmaRate', 'device.dmaRate'], ['lingerMs', 'device.lingerMs'], ['lingerShare', 'device.lingerShare'], ['iotlbEntries', 'device.iotlbEntries'], ['ringBuffers', 'device.ringBuffers']];
    for (const [k, key] of numbers) checkKeyNumber(`device.${k}`, d[k], key);
    if (d.nic) {
      checkKeyNumber('device.nic.mpps', d.nic.mpps, 'device.nic.mpps');
      checkKeyNumber('device.nic.lineGbps', d.nic.lineGbps, 'device.nic.lineGbps');
    }
    if (d.nvme) {
      checkKeyNumber('device.nvme.serviceUs', d.nvme.serviceUs, 'device.nvme.serviceUs');
      checkKeyNumber('device.nvme.parallelism', d.nvme.parallelism, 'device.nvme.parallelism');
      checkKeyNumber('device.nvme.linkGBps', d.nvme.linkGBps, 'device.nvme.linkGBps');
    }
  }
  if (t.guest) {
    checkKeyString('guest.flushQueue', t.guest.flushQueue, 'guest.flushQueue');
    checkKeyString('guest.tceHcalls', t.guest.tceHcalls, 'guest.tceHcalls');
  }
  if (t.vmm) checkKeyString('vmm.hwptInvalidate', t.vmm.hwptInvalidate, 'vmm.hwptInvalidate');
  // vmmsim explain's operation: a name as the guest reports operations (map, unmap@emulated...).
  if (t.explain && t.explain.op.length > MAX_OP_NAME) throw bad('explain.op', `${t.explain.op.length} characters, at most ${MAX_OP_NAME}`);
}
