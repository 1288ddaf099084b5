/**
 * Where the compiled worker lives. Worker threads cannot run TypeScript (no loader here), so the
 * pool always starts dist/worker-pool/vcmdq-worker.js. When this module itself runs from source
 * (vitest), the compiled files the worker loads are checked to be newer than their sources: a stale
 * build would silently test old worker code against new main-thread code.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../services/runtime/paths.js';
import { VcmdqError } from './errors.js';

/** Sources compiled into what the worker thread loads (besides worker-pool/ itself). */
const WORKER_DEPENDENCIES = [
  'services/formats/smmu/commands.ts',
  'services/machine/smmu-executor.ts',
  'services/formats/smmu/semantics.ts',
  'services/formats/smmu/queue.ts',
  'services/formats/smmu/registers.ts',
];

export function workerFile(): string {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return join(dirname(here), 'vcmdq-worker.js');
  const root = packageRoot();
  const file = join(root, 'dist', 'worker-pool', 'vcmdq-worker.js');
  if (!existsSync(file)) throw new VcmdqError('E_VCMDQ_BUILD', `${relative(root, file)} does not exist`);
  const sources = [
    ...readdirSync(join(root, 'worker-pool'))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => `worker-pool/${f}`),
    ...WORKER_DEPENDENCIES,
  ];
  for (const src of sources) {
    const built = join(root, 'dist', src.replace(/\.ts$/, '.js'));
    if (!existsSync(built) || statSync(built).mtimeMs < statSync(join(root, src)).mtimeMs) {
      throw new VcmdqError('E_VCMDQ_BUILD', `dist/ is older than ${src}`);
    }
  }
  return file;
}
