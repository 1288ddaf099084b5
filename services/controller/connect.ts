/**
 * `--connect FILE`: the controller drives role processes it did not start (`vmmsim serve` in pods,
 * network namespaces or other machines). It checks up front that the file names every process the
 * scenario needs and that each answers its health check, builds its session from the file's
 * addresses, watches that each keeps answering while it runs, and at the end releases the run
 * (Stop) and leaves the processes running.
 */
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { VmmsimError } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import { loadPeersFile, type PeerEndpoint, type PeersFile } from '../runtime/peers.js';
import { endpointName } from '../runtime/topology.js';
import { createRunFolder } from '../machine/run-folder.js';
import { loadTokenFile, type RunToken } from '../runtime/transport/auth.js';
import { INSECURE, mutualTls, withToken, type Security, type TlsFiles } from '../runtime/transport/credentials.js';
import type { RunAbort } from './cli/abort.js';
import { Control } from './control-client.js';
import { waitServing } from './health-check.js';
import type { ProcessSpec } from './launcher.js';
import { LivenessWatch } from './liveness.js';
import { Session, type SessionProcess } from './session.js';

/** What --connect and --ram-dir name. */
export interface ConnectTarget {
  peers: PeersFile;
  /** --ram-dir: the memory folder the roles map; else the file's ramDir, else one the controller makes. */
  ramDir: string | undefined;
  /** --token-file: the secret the roles were started with, which the controller proves its name with. */
  token: RunToken | undefined;
}

/** What withConnected needs of a command's tree settings (cli/tree.ts TreeSettings). */
export interface ConnectSettings {
  connect: ConnectTarget;
  /** Mutual TLS on every link. */
  tls?: TlsFiles | undefined;
  /** How long each process may take to report SERVING and say who it is. */
  startTimeoutMs: number;
}

/** The help lines of the options every command that drives processes takes (--connect, TLS). */
export const CONNECT_HELP = `  --connect FILE        drive running \`vmmsim serve\` processes instead of starting them: FILE (YAML
                        or JSON) lists endpoints: [{name: psmmu-0, address: "HOST:PORT"}, ...]; each
                        must answer its health check within --start-timeout; they keep running
  --ram-dir DIR         (with --connect) the memory folder the roles map (default: the file's ramDir,
                        else a new folder under /dev/shm); every role must see it at that path
  --token-file FILE     (with --connect) the secret file the roles were started with (vmmsim serve
                        --token-file): the controller proves itself with it
  --tls-ca FILE         mutual TLS on every gRPC link: the CA of every vmmsim process's certificate
  --tls-cert FILE       the controller's certificate, signed by the CA. A launched tree's roles get
                        it as theirs, served and presented, so it needs serverAuth and clientAuth
                        and a SAN for localhost (Unix sockets) and 127.0.0.1 (--transport tcp), or
                        --tls-server-name; with --connect it is only a client's (clientAuth)
  --tls-key FILE        its private key
  --tls-server-name N   check the processes' certificates against N instead of the address's host`;

/**
 * How long the release at the end may take in all: every process is stopped at once, so processes
 * that cannot be reached cost this once, within the 5 s a SIGINT has to end everything.
 */
export const RELEASE_DEADLINE_MS = 3_000;

/** The options that go with --connect. */
export const CONNECT_OPTIONS = {
  connect: { type: 'string' },
  'ram-dir': { type: 'string' },
  'token-file': { type: 'string' },
} as const;

/** Reads --connect and --ram-dir (undefined: the controller launches its own processes). */
export function connectTarget(values: { connect?: string | undefined; 'ram-dir'?: string | undefined; 'token-file'?: string | undefined; transport?: string | undefined }): ConnectTarget | undefined {
  if (values.connect === undefined) {
    if (values['ram-dir'] !== undefined) throw new VmmsimError('E_USAGE', '--ram-dir goes with --connect FILE (a launched tree gets a private memory folder)');
    if (values['token-file'] !== undefined) throw new VmmsimError('E_USAGE', '--token-file goes with --connect FILE (a launched tree gets a fresh token of its own)');
    return undefined;
  }
  if (values.transport !== undefined) throw new VmmsimError('E_USAGE', '--transport is for processes the controller launches; with --connect the file gives each address');
  const ramDir = values['ram-dir'];
  if (ramDir !== undefined && !isAbsolute(ramDir)) throw new VmmsimError('E_USAGE', `--ram-dir must be an absolute path (the roles open it as given), got "${ramDir}"`);
  const tokenFile = values['token-file'];
  return { peers: loadPeersFile(resolve(values.connect)), ramDir, token: tokenFile === undefined ? undefined : loadTokenFile(tokenFile) };
}

/** The file's entries for `specs`, or an E_PEERS_FILE naming every process the file lacks. */
export function requireEndpoints(target: ConnectTarget, specs: readonly ProcessSpec[]): PeerEndpoint[] {
  const byName = new Map(target.peers.endpoints.map((e) => [e.name, e]));
  const names = [...new Set(specs.map((s) => endpointName(s.role, s.index)))];
  const missing = names.filter((n) => !byName.has(n));
  if (missing.length > 0) {
    const how = missing.map((n) => `vmmsim serve ${n.replace(/-(\d+)$/, ' --index $1')}`).join('; ');
    throw new VmmsimError(
      'E_PEERS_FILE',
      `peers file ${target.peers.path} does not name ${missing.join(', ')}, which the scenario needs (it needs ${names.join(', ')})`,
      `start ${missing.length > 1 ? 'them' : 'it'} (${how}) and add ${missing.length > 1 ? 'their' : 'its'} name and address under endpoints:, or change the scenario's topology`,
    );
  }
  return names.map((n) => byName.get(n) as PeerEndpoint);
}

/**
 * Waits for every process to report SERVING, then asks each who it is (its name, pid and host),
 * so a file that swaps two addresses fails here rather than in the middle of a run.
 */
export async function reach(endpoints: readonly PeerEndpoint[], security: Security, timeoutMs: number, file: string): Promise<SessionProcess[]> {
  const why = await Promise.all(endpoints.map((e) => waitServing(e.address, security, timeoutMs)));
  const down = endpoints.map((e, i) => ({ e, why: why[i] })).filter((x) => x.why !== undefined);
  if (down.length > 0) {
    const list = down.map((d) => `${d.e.name} at ${d.e.address} (${d.why})`).join('; ');
    throw new VmmsimError('E_UNREACHABLE', `${down.length === 1 ? 'a process' : `${down.length} processes`} of ${file} did not report SERVING on gRPC health within ${timeoutMs} ms: ${list}`);
  }
  return Promise.all(
    endpoints.map(async (e) => {
      const control = new Control(e.name, e.address, security);
      try {
        const stats = await control.stats(timeoutMs);
        if (stats.name !== e.name) {
          throw new VmmsimError('E_PEERS_FILE', `peers file ${file}: the process at ${e.address}, listed as ${e.name}, is ${stats.name}`, `give ${e.name}'s own address in the file (vmmsim serve prints it on its ready line)`);
        }
        return { role: e.role, index: e.index, name: e.name, address: e.address, pid: stats.pid, host: stats.host };
      } finally {
        control.close();
      }
    }),
  );
}

/**
 * Stops every process's run at once (Stop), so processes the controller does not own release a
 * run that ended, failed or was interrupted; they keep serving. All calls share one deadline, and
 * failures are ignored: a process that is gone or stopped has nothing to release.
 */
export async function releaseAll(processes: readonly SessionProcess[], security: Security, deadlineMs = RELEASE_DEADLINE_MS): Promise<void> {
  const controls = processes.map((p) => new Control(p.name, p.address, security));
  try {
    await Promise.all(controls.map((c) => c.stop(deadlineMs).catch(() => undefined)));
  } finally {
    for (const c of controls) c.close();
  }
}

/**
 * The --connect counterpart of withTree: a session over the file's processes for `specs`, handed
 * to `body`, with a liveness watch on them (a process that stops answering ends the command with
 * E_DEADLINE naming it); always ends with every process's run stopped (the processes keep running)
 * and the memory folder removed if the controller made it.
 */
export async function withConnected(settings: ConnectSettings, specs: ProcessSpec[], abort: RunAbort, log: Logger, body: (session: Session) => Promise<void>): Promise<void> {
  abort.throwIfAborted();
  const target = settings.connect;
  const endpoints = requireEndpoints(target, specs);
  const security = withToken(settings.tls ? mutualTls(settings.tls) : INSECURE, target.token);
  const given = target.ramDir ?? target.peers.ramDir;
  // The roles open the folder by this path: one machine, or a volume every role mounts there.
  const ramDir = given ?? createRunFolder(existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const made = given === undefined;
  // Standalone roles never remove the folder: a controller killed outright (SIGKILL) leaves it.
  const lastResort = (): void => {
    if (made) rmSync(ramDir, { recursive: true, force: true });
  };
  process.on('exit', lastResort);
  let processes: SessionProcess[] | undefined;
  let session: Session | undefined;
  let watch: LivenessWatch | undefined;
  try {
    processes = await abort.race(reach(endpoints, security, settings.startTimeoutMs, target.peers.path));
    log.debug({ processes, ramDir }, 'connected');
    session = new Session({ processes }, log, ramDir, security);
    // Nobody else notices a process that stops answering: its peers' requests would each wait out
    // their deadline, and the guest's Start call its hour.
    watch = new LivenessWatch(processes, { onFailure: abort.abort, security, local: false });
    watch.start();
    await body(session);
  } finally {
    watch?.stop();
    session?.close();
    if (processes) await releaseAll(processes, security);
    lastResort();
    process.off('exit', lastResort);
  }
}
