/**
 * Every failure a user can see, by stable code: a one-line cause (the message) and the fix.
 * Exit codes follow the CLI contract: 2 for bad input, 1 for a run that failed.
 */
export const ErrorCodes = {
  E_USAGE: { exit: 2, fix: 'run `vmmsim --help` or `vmmsim <command> --help` for the options' },
  E_SCENARIO_FILE: { exit: 2, fix: 'give the path of a readable scenario YAML file (see scenarios/)' },
  E_SCENARIO_YAML: { exit: 2, fix: 'fix the YAML syntax at the position shown' },
  E_SCENARIO_FIELD: { exit: 2, fix: 'change the field to an allowed value (defaults: services/scenario/schema.ts)' },
  E_NOT_SUPPORTED: { exit: 2, fix: 'remove the key or use a supported value; vmmsim does not implement it yet' },
  E_TRACE_FILE: { exit: 2, fix: 'give workload.trace the path of a readable ftrace text file (see scenarios/traces/)' },
  E_PROFILE: { exit: 2, fix: 'name a profile in profiles/ or give the path of a profile YAML file' },
  E_RESULTS_FILE: { exit: 2, fix: 'give the path of a results.json that `vmmsim run`, `compare`, `sweep` or `saturate` wrote' },
  E_METRICS_PORT: { exit: 2, fix: 'give --metrics-port a free port (a launched tree takes PORT for the controller and PORT+1.. for its processes) or stop what listens there; --metrics-host names an address of this host' },
  E_SPAWN: { exit: 1, fix: 'check that `npm ci` completed (it builds dist/) and that the temporary directory is writable' },
  E_PROCESS_EXITED: { exit: 1, fix: 'see the log lines of the named process above; rerun with --log-level debug' },
  E_START_TIMEOUT: { exit: 1, fix: 'the machine may be overloaded; rerun, or raise --start-timeout' },
  E_PEER_LOST: { exit: 1, fix: 'a process on the path went away; see the error of the process it names' },
  E_DEADLINE: { exit: 1, fix: 'a process stopped answering; check it is not stopped (SIGSTOP) or overloaded' },
  E_RUN: { exit: 1, fix: 'see the log lines above; rerun with --log-level debug' },
  E_INTERRUPTED: { exit: 130, fix: 'the run was interrupted by a signal; partial results were written' },
  E_TLS: { exit: 2, fix: 'give PEM files: --tls-ca the CA, --tls-cert a certificate it signed (with a SAN for the host or IP it is dialed at, or use --tls-server-name), --tls-key its key (see deploy/README.md)' },
  E_PEERS_FILE: { exit: 2, fix: 'give a YAML or JSON file `endpoints: [{name: psmmu-0, address: "HOST:PORT"}, ...]` (see deploy/README.md)' },
  E_LISTEN: { exit: 2, fix: 'give --listen a free HOST:PORT of this host, or unix:/abs/path.sock in a writable folder' },
  E_RAM_DIR: { exit: 2, fix: 'create or mount the memory folder on the role\'s host, or set ramDir in the --peers file' },
  E_OUTPUT_PATH: { exit: 2, fix: 'name a regular file (or a folder for --out) that vmmsim may create or replace; device nodes, FIFOs and sockets are refused' },
  E_WRITE: { exit: 1, fix: 'free space on the device, or read the output to its end (a closed pipe stops the write)' },
  E_TOKEN_FILE: { exit: 2, fix: 'give --token-file a regular file you own, readable by you only (chmod 600), holding at least 32 characters of secret (for example `openssl rand -hex 32 > FILE`)' },
  E_INSECURE: { exit: 2, fix: 'give the role --token-file FILE (a secret shared with its controller) or mutual TLS (--tls-ca, --tls-cert, --tls-key); --insecure serves anyone who can reach the port' },
  E_UNAUTHENTICATED: { exit: 2, fix: 'give the controller and every role the same --token-file, or certificates from one CA that name each role (see docs/security.md)' },
  E_CONFIGURE: { exit: 2, fix: 'a Configure request was out of bounds; run the scenario through `vmmsim run` (whose schema sets the bounds) or fix the field named' },
  E_STUDY: { exit: 2, fix: 'name a study that `vmmsim study list` shows, or fix the study file at the key named (docs/studies.md)' },
  E_EXPLAIN: { exit: 2, fix: 'name with --op an operation the workload runs (the message lists them), or lower --warmup, or raise --ops' },
  E_SENSITIVITY: { exit: 2, fix: 'give --models at least two architectures (or all), --samples an integer from 10 to 100000 and --distribution uniform or triangular' },
  E_UNREACHABLE: { exit: 1, fix: 'start the process (`vmmsim serve ROLE --index N`), check its address in the --connect file and, under TLS, its certificate' },
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export function isErrorCode(s: string): s is ErrorCode {
  return Object.hasOwn(ErrorCodes, s);
}

/**
 * Metadata of a failed control call (gRPC) that carries a role's VmmsimError, so the controller
 * reports it under its own code and fix rather than as E_RUN.
 */
export const ERROR_CODE_METADATA = 'vmmsim-error-code';
export const ERROR_FIX_METADATA = 'vmmsim-error-fix-bin';

export class VmmsimError extends Error {
  readonly code: ErrorCode;
  readonly fix: string;
  readonly exitCode: number;

  constructor(code: ErrorCode, message: string, fix?: string) {
    super(message);
    this.name = 'VmmsimError';
    this.code = code;
    this.fix = fix ?? ErrorCodes[code].fix;
    this.exitCode = ErrorCodes[code].exit;
  }

  /** The one line the CLI prints. */
  line(): string {
    return `vmmsim: ${this.code}: ${this.message} (fix: ${this.fix})`;
  }
}

/** Any thrown value as a VmmsimError; unknown errors become E_RUN with their message. */
export function asVmmsimError(err: unknown): VmmsimError {
  if (err instanceof VmmsimError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new VmmsimError('E_RUN', message);
}

/** Linux errno values the simulated kernel interfaces return (negated on the wire). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ETXTBSY: 26,
  ENOSPC: 28,
  ERANGE: 34,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
  ETIMEDOUT: 110,
} as const;

const errnoNames = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

export function errnoName(status: number): string {
  if (status === 0) return 'OK';
  return errnoNames.get(Math.abs(status)) ?? `errno ${Math.abs(status)}`;
}
