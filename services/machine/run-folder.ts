import { closeSync, constants, existsSync, fstatSync, lstatSync, mkdtempSync, openSync, readSync, realpathSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VmmsimError } from '../runtime/errors.js';

/**
 * The run's memory folder: where the processes of one host keep the files they share (guest RAM,
 * host tables, TCE tables, a trace to replay). Its path reaches a role in a Configure request, so
 * a role maps files only in a folder that a vmmsim launcher made: a private folder (mode 0700)
 * owned by this user, holding a marker file that only the launcher writes. A folder an attacker
 * names (/etc, a folder with a symlink planted as host.ram) fails the check; files in the folder
 * are opened without following symlinks (memory.ts).
 */
export const RUN_FOLDER_MARKER = '.vmmsim-run-folder';

function writeMarker(dir: string): void {
  const fd = openSync(join(dir, RUN_FOLDER_MARKER), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, `vmmsim run folder, made by pid ${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
}

/** A new private run folder under `parent` (mkdtemp makes it 0700), with its marker. */
export function createRunFolder(parent: string, prefix = 'vmmsim-ram-'): string {
  const dir = mkdtempSync(join(parent, prefix));
  writeMarker(dir);
  return dir;
}

/**
 * The controller takes a folder as its run folder (one it made, or `--connect ... --ram-dir DIR`):
 * it marks it unless a launcher already did. A folder the controller cannot see is left alone: the
 * roles may map their own path of it (--peers ramDir), or say that they cannot see it either.
 */
export function adoptRunFolder(dir: string): void {
  if (!existsSync(dir)) return;
  try {
    writeMarker(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new VmmsimError('E_RAM_DIR', `cannot mark ${dir} as the run's memory folder: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * Why `dir` is not a folder this process may map files in, or undefined if it is. `marked`: the
 * path came in a request, so the folder must carry the launcher's marker; a folder the operator
 * gave the role itself (--peers ramDir) needs only to be a private folder of this user.
 */
export function runFolderProblem(dir: string, marked = true): string | undefined {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (err as Error).message})`;
  }
  // Through a symlink, the files would land wherever the link points.
  if (real !== dir) return `resolves to ${real} (a path through a symbolic link)`;
  const st = lstatSync(dir);
  if (!st.isDirectory()) return 'is not a folder';
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) return `belongs to uid ${st.uid}, not to this user (${uid})`;
  if ((st.mode & 0o022) !== 0) return `can be written by others (mode ${(st.mode & 0o777).toString(8)})`;
  if (!marked) return undefined;
  let marker;
  try {
    marker = lstatSync(join(dir, RUN_FOLDER_MARKER));
  } catch {
    return `has no ${RUN_FOLDER_MARKER} marker: no vmmsim launcher made it`;
  }
  if (!marker.isFile() || (uid !== undefined && marker.uid !== uid)) return `has a ${RUN_FOLDER_MARKER} that is not a regular file of this user`;
  return undefined;
}

export function checkRunFolder(dir: string, marked = true): void {
  const why = runFolderProblem(dir, marked);
  if (why) throw new VmmsimError('E_RAM_DIR', `the memory folder ${dir} ${why}`);
}

/** The largest file a role reads from the run folder (a trace to replay). */
export const MAX_RUN_FILE_BYTES = 256 * 1024 * 1024;

/** Reads a regular file of the run folder without following a symlink at its name. */
export function readRunFile(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new VmmsimError('E_TRACE_FILE', `${path} is not a regular file`);
    if (st.size > MAX_RUN_FILE_BYTES) throw new VmmsimError('E_TRACE_FILE', `${path} is ${st.size} bytes, more than ${MAX_RUN_FILE_BYTES}`);
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < buf.length) {
      const got = readSync(fd, buf, n, buf.length - n, n);
      if (got === 0) break;
      n += got;
    }
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
