/**
 * --pin: where the processes of a launched tree run. By default the kernel places them and moves
 * them as it likes. Pinned, each VM's path processes (its guest and VMM) run on one CPU, the host's
 * shared processes (kvm, vfio, every pSMMU) on the first CPU of the list, and the floor's two
 * processes there too, so a same-core figure is compared with a same-core floor. taskset from
 * util-linux sets the affinity before node starts.
 */
import { accessSync, constants } from 'node:fs';
import { cpus } from 'node:os';
import { delimiter, join } from 'node:path';
import { VmmsimError } from '../runtime/errors.js';
import type { ProcessSpec } from './launcher.js';
import { endpointName } from '../runtime/topology.js';
import type { Placement } from './measured.js';

export const PIN_HELP = `  --pin auto|CPU[,CPU..] run each VM's guest and VMM on one CPU (VM v on the v-th CPU of the list,
                        round robin), and kvm, vfio, every psmmu and the floor's processes on the
                        first; auto: CPUs 0..N-1. Needs taskset (util-linux). Default: unpinned`;

/** The CPUs a --pin value names: auto (every CPU of this machine) or a comma list of CPU numbers. */
export function parsePin(spec: string): number[] {
  const n = cpus().length;
  if (spec === 'auto') return Array.from({ length: n }, (_, i) => i);
  const list = spec.split(',').map((x) => x.trim());
  const out: number[] = [];
  for (const x of list) {
    const c = Number(x);
    if (x === '' || !Number.isInteger(c) || c < 0 || c >= n) throw new VmmsimError('E_USAGE', `--pin takes auto or a comma-separated list of CPU numbers 0..${n - 1}, got "${spec}"`);
    if (!out.includes(c)) out.push(c);
  }
  return out;
}

/** Whether an executable is on PATH. */
function onPath(name: string): boolean {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this one
    }
  }
  return false;
}

/** Refuses --pin where taskset cannot be run: bad input, found before anything starts. */
export function checkPinnable(): void {
  if (process.platform !== 'linux' || !onPath('taskset')) {
    throw new VmmsimError('E_USAGE', '--pin needs taskset (util-linux) on PATH, and Linux', 'install util-linux (Debian: apt-get install util-linux), or run without --pin');
  }
}

/**
 * The CPU of every process of a tree: VM v's guest and VMM on cpus[v mod n], the rest on cpus[0];
 * `floor` names the floor's processes (on cpus[0]).
 */
export function placementOf(specs: readonly ProcessSpec[], list: readonly number[], spec: string): Placement {
  const first = list[0] ?? 0;
  const out: Record<string, number> = {};
  for (const s of specs) {
    const perVm = s.role === 'guest' || s.role === 'qemu';
    out[endpointName(s.role, s.index)] = perVm ? (list[s.index % list.length] ?? first) : first;
  }
  out['floor'] = first;
  return { pin: spec, cpus: out };
}
