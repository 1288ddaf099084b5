import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { VmmsimError } from '../runtime/errors.js';
import { packageRoot } from '../runtime/paths.js';
import { COST_STEPS, isCostStep } from './steps.js';

/** The profile name that asks for transition costs measured on this machine (controller/measured-host.ts). */
export const MEASURED_HOST = 'measured-host';

/** C: read in the primary source; S: real but partly known conditions; U: an assumption. */
export type Confidence = 'C' | 'S' | 'U';

/** The architectures a profile can describe; a design's traits.arch names one of them. */
export const ARCHES = ['arm64', 'ppc64', 'x86_64'] as const;
export type Arch = (typeof ARCHES)[number];

export interface ProfileStep {
  ns: number;
  source: string;
  confidence: Confidence;
  /**
   * The span of plausible values in ns, [lo, hi], with ns inside it: the spread of the sources for a
   * C or S step, the span a kernel engineer would accept for a U one (sensitivity analysis re-prices
   * across it). Every step has one: the loader refuses a profile that misses one.
   */
  range: [number, number];
  /** Why the range is what it is, in one line. */
  rangeReason: string;
}

export interface CostProfile {
  name: string;
  /** The architecture of the host the profile describes; a design of another says so in its run. */
  arch: Arch;
  description: string;
  /** Where the file came from, for the results document. */
  path: string;
  steps: Record<string, ProfileStep>;
}

export function profilesDir(): string {
  return join(packageRoot(), 'profiles');
}

/** Every profile shipped in profiles/. */
export function profileNames(): string[] {
  return readdirSync(profilesDir())
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.slice(0, -'.yaml'.length))
    .sort();
}

/**
 * Loads a profile by name (profiles/NAME.yaml) or by path, checking it names its architecture and
 * that every step has a cost, a source, a confidence, and a range around the cost with its reason.
 */
export function loadProfile(nameOrPath: string): CostProfile {
  const byName = join(profilesDir(), `${nameOrPath}.yaml`);
  const path = existsSync(byName) ? byName : nameOrPath;
  if (!existsSync(path)) {
    throw new VmmsimError('E_PROFILE', `profile "${nameOrPath}" not found; known profiles: ${[...profileNames(), MEASURED_HOST].join(', ')} (or a path to a profile file)`);
  }
  let doc: unknown;
  try {
    doc = parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new VmmsimError('E_PROFILE', `profile ${path} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const bad = (what: string): never => {
    throw new VmmsimError('E_PROFILE', `profile ${path}: ${what}`);
  };
  if (typeof doc !== 'object' || doc === null) return bad('must be a mapping with name, arch, description and steps');
  const d = doc as Record<string, unknown>;
  if (typeof d['name'] !== 'string') return bad('name must be a string');
  const arch = d['arch'];
  if (typeof arch !== 'string' || !(ARCHES as readonly string[]).includes(arch)) {
    return bad(`arch must be one of ${ARCHES.join(', ')} (the architecture of the host the profile describes)${arch === undefined ? '; it has none' : `, not ${JSON.stringify(arch)}`}`);
  }
  const stepsIn = d['steps'];
  if (typeof stepsIn !== 'object' || stepsIn === null) return bad('steps must be a mapping of step name to {ns, source, confidence}');
  const steps: Record<string, ProfileStep> = {};
  for (const [key, value] of Object.entries(stepsIn as Record<string, unknown>)) {
    if (!isCostStep(key)) return bad(`unknown step "${key}"; steps are ${Object.keys(COST_STEPS).join(', ')}`);
    const v = value as Record<string, unknown>;
    if (typeof v !== 'object' || v === null) return bad(`steps.${key} must be {ns, source, confidence}`);
    const ns = v['ns'];
    if (typeof ns !== 'number' || !Number.isFinite(ns) || ns < 0) return bad(`steps.${key}.ns must be a number >= 0`);
    const source = v['source'];
    if (typeof source !== 'string' || source.trim() === '') return bad(`steps.${key}.source must name where the number comes from`);
    const confidence = v['confidence'];
    if (confidence !== 'C' && confidence !== 'S' && confidence !== 'U') return bad(`steps.${key}.confidence must be C, S or U (U marks an assumption)`);
    const r = v['range'];
    if (r === undefined) return bad(`steps.${key} has no range: give range: [lo, hi] in ns around ns, and rangeReason (one line: the spread of the sources, or for an assumption the span a kernel engineer would accept)`);
    if (!Array.isArray(r) || r.length !== 2 || !r.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0) || (r[0] as number) > (r[1] as number)) {
      return bad(`steps.${key}.range must be [lo, hi] in ns with 0 <= lo <= hi`);
    }
    const range: [number, number] = [r[0] as number, r[1] as number];
    if (ns < range[0] || ns > range[1]) return bad(`steps.${key}.ns ${ns} lies outside its range [${range[0]}, ${range[1]}]`);
    const rangeReason = v['rangeReason'];
    if (rangeReason === undefined) return bad(`steps.${key} has no rangeReason: say in one line why its range is [${range[0]}, ${range[1]}]`);
    if (typeof rangeReason !== 'string' || rangeReason.trim() === '' || /[\r\n]/.test(rangeReason.trim())) return bad(`steps.${key}.rangeReason must say in one line why the range is what it is`);
    steps[key] = { ns, source, confidence, range, rangeReason: rangeReason.trim() };
  }
  const missing = Object.keys(COST_STEPS).filter((k) => !(k in steps));
  if (missing.length > 0) return bad(`missing steps: ${missing.join(', ')}`);
  return { name: d['name'], arch: arch as Arch, description: typeof d['description'] === 'string' ? d['description'] : '', path, steps };
}

/** Step costs as integer nanoseconds: integer sums keep modeled means exact and order-independent. */
export function profileCosts(profile: CostProfile): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, s] of Object.entries(profile.steps)) out[k] = Math.round(s.ns);
  return out;
}
