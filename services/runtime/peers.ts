import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';
import { VmmsimError } from './errors.js';
import { endpointName, isRole, type Role } from './topology.js';

/** The YAML parser, loaded by the few processes given a --peers file (a role starts without it). */
function parse(text: string): unknown {
  return (createRequire(import.meta.url)('yaml') as typeof Yaml).parse(text);
}

/** One process of a peers file: its name (as endpointName) and the address to dial it at. */
export interface PeerEndpoint {
  name: string;
  role: Role;
  index: number;
  address: string;
}

/**
 * A peers file (YAML or JSON): where each role process listens, as seen from whoever reads the
 * file, and optionally the folder of shared memory files. The controller's --connect reads it to
 * find the processes; a role's --peers reads it to dial its peers by its own network's names.
 */
export interface PeersFile {
  path: string;
  endpoints: PeerEndpoint[];
  ramDir: string | undefined;
}

/** The role and index of a process name (kvm, vfio, guest-0, qemu-1, psmmu-3), or undefined. */
export function parseEndpointName(name: string): { role: Role; index: number } | undefined {
  if (name === 'kvm' || name === 'vfio') return { role: name, index: 0 };
  const m = /^([a-z]+)-(0|[1-9]\d{0,5})$/.exec(name);
  if (!m || !isRole(m[1] as string) || m[1] === 'kvm' || m[1] === 'vfio') return undefined;
  return { role: m[1] as Role, index: Number(m[2]) };
}

/**
 * A gRPC target vmmsim listens on and is dialed at: HOST:PORT (a port 1..65535; 0 only asks a
 * listener for a free one) or unix:/abs/path.sock (also unix:///abs/path.sock).
 */
export function isAddress(address: string): boolean {
  if (address.startsWith('unix:')) return isAbsolute(address.slice('unix:'.length).replace(/^\/\/(?=\/)/, ''));
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):(\d{1,5})$/.exec(address);
  return m !== null && Number(m[2]) >= 1 && Number(m[2]) <= 65535;
}

function bad(path: string, what: string): VmmsimError {
  return new VmmsimError('E_PEERS_FILE', `peers file ${path}: ${what}`);
}

/** Reads and checks a peers file; every problem is an E_PEERS_FILE naming the file and the entry. */
export function loadPeersFile(path: string): PeersFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw bad(path, `cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw bad(path, `not YAML or JSON: ${(err as Error).message.split('\n')[0] ?? ''}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad(path, 'expected a mapping with `endpoints:`');
  const { endpoints, ramDir, ...rest } = doc as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw bad(path, `unknown key ${unknown[0]} (allowed: endpoints, ramDir)`);
  if (!Array.isArray(endpoints) || endpoints.length === 0) throw bad(path, '`endpoints:` must be a non-empty list of {name, address}');
  const out: PeerEndpoint[] = [];
  const seen = new Set<string>();
  endpoints.forEach((e: unknown, i) => {
    if (typeof e !== 'object' || e === null) throw bad(path, `endpoints[${i}] must be {name, address}`);
    const { name, address } = e as Record<string, unknown>;
    if (typeof name !== 'string') throw bad(path, `endpoints[${i}].name must be a process name such as psmmu-0, vfio or guest-1`);
    const parsed = parseEndpointName(name);
    if (!parsed) throw bad(path, `endpoints[${i}].name "${name}" is not a process name (kvm, vfio, guest-N, qemu-N, psmmu-N)`);
    if (seen.has(name)) throw bad(path, `${name} is listed twice`);
    seen.add(name);
    if (typeof address !== 'string' || !isAddress(address)) throw bad(path, `${name}: address must be "HOST:PORT" (a port 1..65535) or "unix:/abs/path.sock", got ${JSON.stringify(address)}`);
    out.push({ name: endpointName(parsed.role, parsed.index), ...parsed, address });
  });
  if (ramDir !== undefined && (typeof ramDir !== 'string' || !isAbsolute(ramDir))) throw bad(path, `ramDir must be an absolute path, got ${JSON.stringify(ramDir)}`);
  return { path, endpoints: out, ramDir: ramDir as string | undefined };
}
