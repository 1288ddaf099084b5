import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isRole } from '../../services/runtime/topology.js';
import { parseServeArgs } from '../../services/controller/commands/serve.js';
import { ROOT } from '../helpers/cli.js';
import { isIgnored, parseDockerfile, type Instruction, type Stage } from '../helpers/dockerfile.js';

/**
 * deploy/Dockerfile, checked without a Docker engine (none runs on the development and CI
 * machines, and this client has no `build --check`): what the build copies exists and reaches the
 * context, the build compiles what the entry point needs, and the runtime stage holds everything
 * the code reads at run time and no dev dependency.
 */
const stages = parseDockerfile(readFileSync(join(ROOT, 'deploy', 'Dockerfile'), 'utf8'));
const dockerignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string>; scripts: Record<string, string> };
const buildConfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8')) as { extends: string; include: string[] };
const baseConfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8')) as { compilerOptions: { outDir: string } };

interface Copy {
  from: string | undefined;
  /** Relative to the context, or absolute in the stage it comes from. */
  source: string;
  /** Absolute path in the image of the copied file or folder. */
  target: string;
}

function stage(name: string): Stage {
  const s = stages.find((x) => x.name === name);
  if (!s) throw new Error(`no stage ${name} in deploy/Dockerfile`);
  return s;
}

const runtime = stages[stages.length - 1] as Stage;

/**
 * What each COPY of a stage puts where, as the builder does it: a folder's contents go to the
 * destination, a file goes into it when it ends with a slash; relative destinations are under the
 * WORKDIR.
 */
function copies(s: Stage): Copy[] {
  let workdir = '/';
  const out: Copy[] = [];
  for (const ins of s.instructions) {
    if (ins.op === 'WORKDIR') workdir = posix.resolve(workdir, ins.args[0] ?? '');
    if (ins.op !== 'COPY') continue;
    const destArg = ins.args[ins.args.length - 1] ?? '';
    const dest = posix.resolve(workdir, destArg);
    const from = ins.flags['from'];
    for (const raw of ins.args.slice(0, -1)) {
      const source = raw.replace(/\/$/, '');
      const folder = raw.endsWith('/') || (from === undefined && existsSync(join(ROOT, source)) && statSync(join(ROOT, source)).isDirectory());
      const target = !folder && destArg.endsWith('/') ? posix.join(dest, posix.basename(source)) : dest;
      out.push({ from, source, target });
    }
  }
  return out;
}

function runs(s: Stage): string[] {
  return s.instructions.filter((i) => i.op === 'RUN').map((i) => i.args.join(' '));
}

function last(s: Stage, op: string): Instruction | undefined {
  return s.instructions.filter((i) => i.op === op).pop();
}

function workdir(s: Stage): string {
  return posix.resolve('/', last(s, 'WORKDIR')?.args[0] ?? '/');
}

describe('deploy/Dockerfile', () => {
  it('builds from Node 20 images, as package.json engines allow, and runs on a slim one', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.image, s.name).toMatch(/^node:20[-.]/);
    expect(runtime.image).toMatch(/slim/);
  });

  it('copies from the build context only files that exist and that .dockerignore lets through', () => {
    const sources = stages.flatMap((s) => copies(s).filter((c) => c.from === undefined).map((c) => c.source));
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      expect(existsSync(join(ROOT, src)), `${src} exists`).toBe(true);
      expect(isIgnored(dockerignore, src), `${src} is not in .dockerignore`).toBe(false);
    }
  });

  it('keeps local build output and dependencies out of the context', () => {
    for (const p of ['node_modules', 'dist/services/controller/bin.js', 'results/x/results.json', 'services/runtime/generated/link.ts', '.git/HEAD']) {
      expect(isIgnored(dockerignore, p), p).toBe(true);
    }
  });

  it('copies between stages only from an earlier stage', () => {
    stages.forEach((s, i) => {
      for (const c of copies(s)) {
        if (c.from === undefined) continue;
        const from = stages.findIndex((x) => x.name === c.from);
        expect(from, `${s.name} copies from ${c.from}`).toBeGreaterThanOrEqual(0);
        expect(from).toBeLessThan(i);
      }
    });
  });

  it('gives the build stage every input of `npm run build` and runs it', () => {
    const build = stage('build');
    const copied = copies(build).filter((c) => c.from === undefined).map((c) => c.source);
    const has = (p: string): boolean => copied.some((c) => p === c || p.startsWith(`${c}/`));
    // tsc -p tsconfig.build.json: the config, the one it extends, and every folder it includes.
    for (const p of ['package.json', 'package-lock.json', 'tsconfig.build.json', buildConfig.extends.replace(/^\.\//, ''), ...buildConfig.include]) {
      expect(has(p), p).toBe(true);
    }
    // npm run gen: its script file and the protos it reads.
    const genFile = (pkg.scripts['gen'] ?? '').split(/\s+/).find((w) => /\.(m?js|cjs)$/.test(w));
    expect(genFile).toBeDefined();
    expect(has(genFile ?? ''), genFile).toBe(true);
    expect(has('proto')).toBe(true);
    expect(pkg.scripts['build']).toContain('npm run gen');
    const r = runs(build);
    const ci = r.findIndex((c) => /^npm ci\b/.test(c));
    const make = r.findIndex((c) => c === 'npm run build');
    expect(ci).toBeGreaterThanOrEqual(0);
    expect(r[ci]).not.toContain('--omit=dev');
    expect(make).toBeGreaterThan(ci);
  });

  it('starts the CLI entry point that package.json names and the build produces', () => {
    const entry = last(runtime, 'ENTRYPOINT');
    expect(entry?.exec).toBe(true);
    expect(entry?.args).toEqual(['node', pkg.bin['vmmsim']]);
    const bin = pkg.bin['vmmsim'] ?? '';
    // tsc writes services/x.ts to <outDir>/services/x.js.
    const outDir = baseConfig.compilerOptions.outDir;
    expect(bin.startsWith(`${outDir}/`)).toBe(true);
    const source = bin.slice(outDir.length + 1).replace(/\.js$/, '.ts');
    expect(existsSync(join(ROOT, source)), source).toBe(true);
    expect(buildConfig.include.some((inc) => source.startsWith(`${inc}/`)), `${source} is compiled`).toBe(true);
    // The runtime has the build stage's output where the entry point looks for it.
    const dist = copies(runtime).find((c) => c.from === 'build' && c.source === posix.join(workdir(stage('build')), outDir));
    expect(dist?.target).toBe(posix.join(workdir(runtime), outDir));
  });

  it('puts in the runtime what the code reads at run time, and production dependencies only', () => {
    const wd = workdir(runtime);
    const targets = copies(runtime).map((c) => c.target);
    // paths.ts finds the package root by package.json; proto.ts, profile.ts and the scenarios
    // read the rest from there.
    for (const p of ['package.json', 'proto', 'profiles', 'scenarios', 'node_modules', 'dist']) {
      expect(targets, p).toContain(posix.join(wd, p));
    }
    const modules = copies(runtime).find((c) => c.target === posix.join(wd, 'node_modules'));
    const from = stage(modules?.from ?? '');
    const install = runs(from).find((c) => /^npm ci\b/.test(c)) ?? '';
    expect(install).toContain('--omit=dev');
    // `prepare` builds with TypeScript, a dev dependency: an install that ran it would fail.
    if (pkg.scripts['prepare']) expect(install).toContain('--ignore-scripts');
    expect(runs(runtime).some((c) => /\bnpm\b/.test(c))).toBe(false);
  });

  it('runs as a fixed non-root uid', () => {
    const user = last(runtime, 'USER')?.args[0] ?? '';
    const uid = user.split(':')[0] ?? '';
    expect(uid).toMatch(/^\d+$/);
    expect(Number(uid)).toBeGreaterThan(0);
  });

  it('serves a role by default, on a reachable address', () => {
    const cmd = last(runtime, 'CMD');
    expect(cmd?.exec).toBe(true);
    const [command, role] = cmd?.args ?? [];
    expect(command).toBe('serve');
    expect(isRole(role ?? '')).toBe(true);
    const at = cmd?.args.indexOf('--listen') ?? -1;
    expect(at).toBeGreaterThan(1);
    const listen = cmd?.args[at + 1] ?? '';
    expect(listen).toMatch(/^0\.0\.0\.0:\d+$/);
    const port = listen.split(':')[1] ?? '';
    expect(last(runtime, 'EXPOSE')?.args).toContain(port);
  });

  it('serves it to callers that hold the run token, never --insecure: `vmmsim serve` on TCP starts with neither', () => {
    const args = last(runtime, 'CMD')?.args ?? [];
    expect(args).not.toContain('--insecure');
    const parsed = parseServeArgs(args.slice(1));
    expect(parsed?.insecure).toBe(false);
    // The path deploy/k8s mounts the Secret at, so the image and the manifests name one file.
    expect(parsed?.tokenFile).toBe('/etc/vmmsim/token/token');
  });
});
