import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The package root (the folder holding package.json, proto/ and profiles/), found by walking up
 * from this file, so the same code works from services/ under vitest and from dist/services/.
 */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'vmmsim') {
      cached = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('vmmsim package root not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** The compiled entry point of a role process (always under dist/, children run compiled code). */
export function roleEntry(): string {
  return join(packageRoot(), 'dist', 'services', 'runtime', 'role-main.js');
}
