import * as grpc from '@grpc/grpc-js';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { VmmsimError } from '../errors.js';

/**
 * Who a caller is, proved per call: every vmmsim process names itself in `x-vmmsim-peer` and, when
 * its run has a token, proves the name in `x-vmmsim-auth` with HMAC-SHA256(token, name). The token
 * is a secret the controller generates for the processes it launches (handed over in the
 * environment, never on a command line) or a file the operator gives every party of a standalone
 * run (`--token-file`). Under mutual TLS without a token, the name must be one the peer's
 * certificate grants (see certificateNames). The name a role serves a request as is the one proved
 * here, never a field of the request.
 */
export const PEER_METADATA = 'x-vmmsim-peer';
export const AUTH_METADATA = 'x-vmmsim-auth';
/** The controller's name as a caller: the only one a role takes Configure, Start, Stats and Stop from. */
export const CONTROLLER = 'controller';
/** The environment variable a launched role reads its run token from (and removes). */
export const TOKEN_ENV = 'VMMSIM_RUN_TOKEN';
/** The shortest secret accepted: 128 bits, as hex or text. */
export const MIN_TOKEN_CHARS = 32;
const MAX_TOKEN_FILE_BYTES = 4096;
const NAME = /^[a-z][a-z0-9-]{0,62}$/;

/** A run's shared secret. */
export class RunToken {
  private constructor(private readonly secret: Buffer) {}

  /** A fresh secret, as text: the same bytes whether held or handed over. */
  static generate(): RunToken {
    return new RunToken(Buffer.from(randomBytes(32).toString('hex'), 'utf8'));
  }

  /** The text form (a token file's content, or the environment variable). */
  static fromText(text: string, where: string): RunToken {
    const t = text.trim();
    if (t.length < MIN_TOKEN_CHARS || /\s/.test(t)) {
      throw new VmmsimError('E_TOKEN_FILE', `${where} must hold one secret of at least ${MIN_TOKEN_CHARS} characters and no spaces (got ${t.length})`);
    }
    return new RunToken(Buffer.from(t, 'utf8'));
  }

  /** As the launcher hands it to a child. */
  toText(): string {
    return this.secret.toString('utf8');
  }

  proof(name: string): string {
    return createHmac('sha256', this.secret).update(`vmmsim-peer:${name}`).digest('hex');
  }

  verify(name: string, proof: string): boolean {
    const want = Buffer.from(this.proof(name), 'hex');
    const got = Buffer.from(proof, 'hex');
    return got.length === want.length && timingSafeEqual(got, want);
  }
}

/**
 * Reads `--token-file FILE`: a regular file (a symlink is refused), owned by this user or root,
 * with no access for other users, holding one secret. A token anyone can read proves nothing.
 */
export function loadTokenFile(path: string): RunToken {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new VmmsimError('E_TOKEN_FILE', `cannot open token file ${path}: ${code === 'ELOOP' ? 'it is a symbolic link' : (code ?? (err as Error).message)}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new VmmsimError('E_TOKEN_FILE', `token file ${path} is not a regular file`);
    // Root's files are the system's (a Kubernetes Secret is mounted root-owned, group-readable).
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid && st.uid !== 0) throw new VmmsimError('E_TOKEN_FILE', `token file ${path} belongs to uid ${st.uid}, not to this user (${uid}) or root`);
    if ((st.mode & 0o007) !== 0) throw new VmmsimError('E_TOKEN_FILE', `token file ${path} is readable by every user (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`);
    if (st.size > MAX_TOKEN_FILE_BYTES) throw new VmmsimError('E_TOKEN_FILE', `token file ${path} is ${st.size} bytes; a token is one line of at most ${MAX_TOKEN_FILE_BYTES}`);
    const buf = Buffer.alloc(st.size);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return RunToken.fromText(buf.subarray(0, n).toString('utf8'), `token file ${path}`);
  } finally {
    closeSync(fd);
  }
}

/** The metadata a caller named `name` sends with every call and stream. */
export function callerMetadata(name: string, token: RunToken | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(PEER_METADATA, name);
  if (token) md.set(AUTH_METADATA, token.proof(name));
  return md;
}

/**
 * The names a client certificate grants under mutual TLS: its URI SANs `urn:vmmsim:NAME` (NAME an
 * endpoint name such as psmmu-0, `controller`, or `*` for every role but the controller), else its
 * subject CN. A deployment with one certificate for every role lists them or uses `*`.
 */
export function certificateNames(cert: { subject?: { CN?: string | string[] }; subjectaltname?: string } | undefined): string[] {
  if (!cert) return [];
  const uris = (cert.subjectaltname ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('URI:urn:vmmsim:'))
    .map((s) => s.slice('URI:urn:vmmsim:'.length));
  if (uris.length > 0) return uris;
  const cn = cert.subject?.CN;
  return cn === undefined ? [] : Array.isArray(cn) ? cn : [cn];
}

export type Admission = { name: string } | { code: grpc.status; details: string };

/** What a role's server requires of its callers. */
export interface CallerCheck {
  token: RunToken | undefined;
  tls: boolean;
}

/**
 * The caller's proved name, or the status to refuse it with. Without a token and without TLS
 * (`vmmsim serve --insecure`, or a private Unix socket) the name is taken as sent: who can reach
 * the socket is trusted, and the operator said so.
 */
export function admit(check: CallerCheck, metadata: grpc.Metadata, peerCert: () => Parameters<typeof certificateNames>[0]): Admission {
  const sent = metadata.get(PEER_METADATA)[0];
  const name = typeof sent === 'string' ? sent : '';
  if (!NAME.test(name) && name !== CONTROLLER) return { code: grpc.status.UNAUTHENTICATED, details: `the caller did not name itself (${PEER_METADATA})` };
  if (check.token) {
    const proof = metadata.get(AUTH_METADATA)[0];
    if (typeof proof !== 'string' || !check.token.verify(name, proof)) return { code: grpc.status.UNAUTHENTICATED, details: `no valid proof of the name ${name}: the caller does not hold this run's token` };
    return { name };
  }
  if (check.tls) {
    const granted = certificateNames(peerCert());
    const ok = granted.includes(name) || (name !== CONTROLLER && granted.includes('*'));
    if (!ok) return { code: grpc.status.PERMISSION_DENIED, details: `the caller's certificate does not grant the name ${name} (it grants ${granted.length > 0 ? granted.join(', ') : 'no name'})` };
  }
  return { name };
}
