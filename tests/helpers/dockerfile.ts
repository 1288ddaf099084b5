/**
 * Reads a Dockerfile and a .dockerignore as the Docker builder does, for the parts the image test
 * checks (no Docker engine runs here): instructions with their flags and arguments, grouped into
 * build stages, with ARG defaults substituted; and the context filter.
 */

export interface Instruction {
  /** Upper case: FROM, COPY, RUN... */
  op: string;
  /** `--from=build` becomes { from: 'build' }. */
  flags: Record<string, string>;
  /** Exec form (a JSON array) as given; shell form split on whitespace. */
  args: string[];
  /** True for the JSON-array form. */
  exec: boolean;
  line: number;
}

export interface Stage {
  /** The `AS` name, or the stage's position as a string. */
  name: string;
  image: string;
  instructions: Instruction[];
}

function substitute(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (whole, a: string | undefined, b: string | undefined) => vars.get(a ?? b ?? '') ?? whole);
}

/** Logical lines: comments and blank lines dropped, backslash continuations joined. */
function logicalLines(text: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let current: { line: number; text: string } | undefined;
  text.split('\n').forEach((raw, i) => {
    const trimmed = raw.trim();
    if (trimmed.startsWith('#') || (trimmed === '' && !current)) return;
    const continued = trimmed.endsWith('\\');
    const part = continued ? trimmed.slice(0, -1) : trimmed;
    if (current) current.text += ` ${part}`;
    else current = { line: i + 1, text: part };
    if (!continued) {
      out.push(current);
      current = undefined;
    }
  });
  if (current) out.push(current);
  return out;
}

export function parseDockerfile(text: string): Stage[] {
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const { line, text: l } of logicalLines(text)) {
    const m = /^(\S+)\s*(.*)$/.exec(l);
    if (!m || m[1] === undefined) continue;
    const op = m[1].toUpperCase();
    let rest = m[2] ?? '';
    const flags: Record<string, string> = {};
    for (;;) {
      const f = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest);
      if (!f || f[1] === undefined) break;
      flags[f[1]] = f[2] ?? 'true';
      rest = rest.slice(f[0].length);
    }
    const stage = stages[stages.length - 1];
    let args: string[];
    let exec = false;
    if (rest.startsWith('[')) {
      args = JSON.parse(rest) as string[];
      exec = true;
    } else {
      args = substitute(rest, globalArgs).split(/\s+/).filter((s) => s !== '');
    }
    if (op === 'ARG' && !stage) {
      const [name, value] = (args[0] ?? '').split('=');
      if (name) globalArgs.set(name, value ?? '');
      continue;
    }
    if (op === 'FROM') {
      const image = args[0] ?? '';
      const as = args[1]?.toUpperCase() === 'AS' ? args[2] : undefined;
      stages.push({ name: as ?? String(stages.length), image, instructions: [] });
      continue;
    }
    if (!stage) throw new Error(`line ${line}: ${op} before FROM`);
    stage.instructions.push({ op, flags, args, exec, line });
  }
  return stages;
}

/** A .dockerignore pattern as a regular expression over slash-separated context paths. */
function patternRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] ?? '';
    if (c === '*' && pattern[i + 1] === '*') {
      // `**/` matches any number of folders, including none.
      if (pattern[i + 2] === '/') {
        re += '(?:.*/)?';
        i += 2;
      } else {
        re += '.*';
        i += 1;
      }
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * Whether the builder leaves `path` (relative to the context root) out of the context: the last
 * matching rule wins, `!` re-includes, and a rule that matches a folder excludes what is under it.
 */
export function isIgnored(dockerignore: string, path: string): boolean {
  const rules = dockerignore
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const body = (negate ? l.slice(1) : l).trim().replace(/^\/+/, '').replace(/\/+$/, '');
      return { negate, re: patternRegex(body) };
    });
  const clean = path.replace(/^\.\//, '').replace(/\/+$/, '');
  const parts = clean.split('/');
  let ignored = false;
  for (const rule of rules) {
    for (let n = 1; n <= parts.length; n++) {
      if (rule.re.test(parts.slice(0, n).join('/'))) {
        ignored = !rule.negate;
        break;
      }
    }
  }
  return ignored;
}
