/**
 * Every file vmmsim writes (results.json, results.csv, saturation.csv, report.html, the measured-host
 * profile, `report --html FILE`) goes through here: it lands only on a regular file, through a
 * temporary file in the same folder and a rename, and never replaces a device node, a FIFO, a
 * socket, a symbolic link or a folder. As root, writing "/dev/null" by rename would replace the
 * system's /dev/null: the target is checked with lstat before anything is created, and again just
 * before the rename. A target vmmsim may not use is E_OUTPUT_PATH (exit 2); a write that fails on
 * the way (ENOSPC, EIO) is E_WRITE (exit 1).
 */
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, lstatSync, mkdirSync, openSync, renameSync, statSync, unlinkSync, writeSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { VmmsimError } from '../runtime/errors.js';

/** What a file system entry is, for messages: "a character device", "a folder"... */
export function kindOf(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a folder';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/** Errors that say the place cannot be written at all (E_OUTPUT_PATH), as opposed to a write that failed on the way (E_WRITE). */
const PLACE_ERRORS = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EEXIST', 'EISDIR', 'ELOOP', 'ENAMETOOLONG', 'ENXIO', 'EINVAL']);

function outputError(path: string, why: string, fix?: string): VmmsimError {
  return new VmmsimError('E_OUTPUT_PATH', `cannot write ${path}: ${why}`, fix);
}

/** A failure while writing `path`: E_OUTPUT_PATH for a place vmmsim may not write, E_WRITE for the rest. */
function writeFailure(path: string, err: unknown): unknown {
  if (err instanceof VmmsimError) return err;
  // Only a system call's failure is about the file; anything else (a bug building the text) goes up as it is.
  if (typeof (err as NodeJS.ErrnoException).syscall !== 'string') return err;
  const code = errnoOf(err);
  if (PLACE_ERRORS.has(code)) return outputError(path, code);
  return writeError(path, err);
}

/** E_WRITE naming the file (or stdout) and the errno. */
export function writeError(what: string, err: unknown): VmmsimError {
  const code = errnoOf(err);
  const why = code === 'ENOSPC' ? 'ENOSPC (no space left on the device)' : code === 'EPIPE' ? 'EPIPE (the reader closed the pipe)' : code;
  return new VmmsimError('E_WRITE', `cannot write ${what}: ${why}`);
}

/**
 * Refuses `path` as a file to write unless it is absent or a regular file (lstat: a symbolic link
 * is refused too, wherever it points).
 */
export function checkOutputFile(path: string, what = path): void {
  let st: Stats | undefined;
  try {
    st = lstatSync(path, { throwIfNoEntry: false });
  } catch (err) {
    throw outputError(what, errnoOf(err));
  }
  if (st && !st.isFile()) throw outputError(what, `it is ${kindOf(st)}; vmmsim writes regular files only and never replaces anything else`);
}

/** The nearest folder of `path` that exists (itself included), and what it is. */
function nearestExisting(path: string): { path: string; st: Stats } {
  let p = resolve(path);
  for (;;) {
    let st: Stats | undefined;
    try {
      st = statSync(p, { throwIfNoEntry: false });
    } catch (err) {
      // ENOTDIR: a part above is a file; going up finds it and names it.
      if ((err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw err;
    }
    if (st) return { path: p, st };
    const up = dirname(p);
    if (up === p) throw outputError(path, 'no part of it exists');
    p = up;
  }
}

/**
 * Checks an output folder before anything starts: `dir` is a folder (or can be created: its nearest
 * existing ancestor is a folder this process may write), and each of `files` in it is absent or a
 * regular file. `option` names where the folder came from in messages (--out).
 */
export function checkOutDir(dir: string, files: readonly string[], option = '--out'): void {
  const fix = `give ${option} a folder (existing or to be created) where ${files.join(', ')} may be written as regular files`;
  let existing: { path: string; st: Stats };
  try {
    existing = nearestExisting(dir);
  } catch (err) {
    if (err instanceof VmmsimError) throw err;
    throw new VmmsimError('E_OUTPUT_PATH', `${option} ${dir}: ${errnoOf(err)}`, fix);
  }
  if (!existing.st.isDirectory()) {
    const which = existing.path === resolve(dir) ? 'it' : existing.path;
    throw new VmmsimError('E_OUTPUT_PATH', `${option} ${dir} is not a folder: ${which} is ${kindOf(existing.st)}`, fix);
  }
  try {
    accessSync(existing.path, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new VmmsimError('E_OUTPUT_PATH', `${option} ${dir}: cannot write in ${existing.path}: ${errnoOf(err)}`, fix);
  }
  if (existing.path !== resolve(dir)) return;
  for (const name of files) {
    const st = lstatSync(join(dir, name), { throwIfNoEntry: false });
    if (st && !st.isFile()) throw new VmmsimError('E_OUTPUT_PATH', `${option} ${dir} holds ${name}, which is ${kindOf(st)}: vmmsim writes ${name} there and replaces regular files only`, fix);
  }
}

/** Texts written to a file descriptor in chunks of about this many characters (a report is built in many small pieces). */
const CHUNK_CHARS = 1 << 20;

/** Writes a whole buffer, looping over short writes. */
function writeAll(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
}

/** The text of a file: a string, or a function that hands its pieces to `write` in order. */
export type FileText = string | ((write: (piece: string) => void) => void);

/**
 * Writes `text` to the regular file `path`, atomically: a temporary file created exclusively in
 * the same folder (never following a link), then a rename over the target. The folder is created
 * when missing. The target must be absent or a regular file, checked before and just before the
 * rename. Returns the path.
 */
export function writeRegularFile(path: string, text: FileText): string {
  const dir = dirname(path);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw writeFailure(path, err);
  }
  checkOutputFile(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number;
  try {
    fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o666);
  } catch (err) {
    throw writeFailure(path, err);
  }
  try {
    try {
      if (typeof text === 'string') {
        writeAll(fd, Buffer.from(text));
      } else {
        let pending: string[] = [];
        let size = 0;
        const flush = (): void => {
          writeAll(fd, Buffer.from(pending.join('')));
          pending = [];
          size = 0;
        };
        text((piece) => {
          pending.push(piece);
          size += piece.length;
          if (size >= CHUNK_CHARS) flush();
        });
        flush();
      }
    } finally {
      closeSync(fd);
    }
    checkOutputFile(path);
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // Already renamed or never created: nothing to remove.
    }
    throw writeFailure(path, err);
  }
  return path;
}
