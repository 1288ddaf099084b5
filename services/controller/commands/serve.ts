/**
 * `vmmsim serve <role>`: one role process on its own, for a controller elsewhere to drive with
 * `--connect` (a pod, a network namespace, another machine). It is the process the controller's
 * launcher starts, with no parent: it prints its ready line on stdout and lives until a signal.
 */
import * as grpc from '@grpc/grpc-js';
import { VmmsimError } from '../../runtime/errors.js';
import { createLogger, resolveLogLevel } from '../../runtime/logger.js';
import { parseRoleArgs, startRole, type RoleArgs } from '../../runtime/role-runtime.js';
import { ROLES, endpointName, isRole } from '../../runtime/topology.js';

export const HELP = `usage: vmmsim serve <role> [--index N] [--listen ADDR] [--peers FILE]
                    (--token-file FILE | --tls-ca FILE --tls-cert FILE --tls-key FILE
                     [--tls-server-name NAME] | --insecure)
                    [--metrics-port PORT [--metrics-host HOST]]
                    [--otlp-endpoint URL [--trace-sample R]] [--log-level LEVEL]

Runs one role process (${ROLES.join(', ')}) until SIGTERM or SIGINT, for a controller to drive
with \`vmmsim run|compare|sweep|saturate --connect FILE\`. Its name is kvm or vfio (singletons), or
ROLE-N. Once ready it prints one JSON line on stdout, {"name":"psmmu-0","address":"HOST:PORT",
"pid":123} (with "metricsPort":PORT when it serves metrics), and reports SERVING on gRPC health
(service ""); NOT_SERVING while it stops. It serves server reflection. Between runs it keeps no
state: each run's Configure replaces the last.

options:
  --index N             the process's index (default 0; kvm and vfio take 0 only)
  --listen ADDR         HOST:PORT or unix:/abs/path.sock (default 127.0.0.1:0, a free loopback
                        port); it binds beyond loopback only when ADDR names another address
  --peers FILE          YAML or JSON: endpoints: [{name: psmmu-0, address: "HOST:PORT"}, ...] and
                        optional ramDir: PATH. The role dials its peers at these addresses instead of
                        those the controller sends, and maps the memory files in ramDir instead of
                        the controller's folder (the same files, seen at this host's path)
  --token-file FILE     the run's secret (a file of yours, mode 600, at least 32 characters): every
                        caller proves its name with it, and the controller takes the same file
                        (run --connect FILE --token-file FILE); without it or TLS, a TCP listener
                        is refused
  --insecure            serve TCP with no token and no TLS: anyone who can reach the port can
                        configure the role and act as any of its peers (a private network only)
  --tls-ca FILE         mutual TLS: the CA that signs every vmmsim process's certificate; clients
                        without a certificate it signed are refused
  --tls-cert FILE       this process's certificate, served and presented to its peers (so it needs
                        the serverAuth and clientAuth uses, and a SAN for the name peers dial)
  --tls-key FILE        its private key
  --tls-server-name N   check peers' certificates against N instead of the host of their address
  --metrics-port PORT   serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0: a free port,
                        given on the ready line)
  --metrics-host HOST   the address metrics bind (default 127.0.0.1: this host only)
  --otlp-endpoint URL   export sampled operations as OpenTelemetry traces (a span per hop) to this
                        OTLP/gRPC collector, http://HOST:4317 (or OTEL_EXPORTER_OTLP_ENDPOINT); a
                        guest exports them, the other roles have no whole operation to trace
  --trace-sample R      share of operations traced, 0..1 (default 0.01 with an endpoint)
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (or VMMSIM_LOG_LEVEL); logs go to stderr
  -h, --help            this text

The guest, qemu, kvm, vfio and psmmu processes share memory files (guest RAM, host tables) in one
folder: run them on one machine, or on a volume they all mount (see deploy/README.md). Who can
reach a role and what it lets them do: docs/security.md.`;

/** Options of the launcher's children that a standalone role has no use for. */
const LAUNCHER_ONLY = ['--role', '--socket-dir', '--ram-dir'];

/** Reads `serve`'s arguments; every problem is an E_USAGE (exit 2, no stack trace). */
export function parseServeArgs(argv: string[]): RoleArgs | undefined {
  if (argv.includes('--help') || argv.includes('-h')) return undefined;
  const [role, ...rest] = argv;
  if (role === undefined || role.startsWith('-')) throw new VmmsimError('E_USAGE', `serve needs a role first: vmmsim serve <${ROLES.join('|')}> [options]`);
  if (!isRole(role)) throw new VmmsimError('E_USAGE', `unknown role "${role}"; roles: ${ROLES.join(', ')}`);
  const launcherOnly = rest.find((a) => LAUNCHER_ONLY.includes(a.split('=')[0] as string));
  if (launcherOnly !== undefined) throw new VmmsimError('E_USAGE', `serve does not take ${launcherOnly.split('=')[0]}: the role is the first argument, --listen picks the address`);
  let args: RoleArgs;
  try {
    const listen = rest.some((a) => a === '--listen' || a.startsWith('--listen=')) ? [] : ['--listen', '127.0.0.1:0'];
    args = parseRoleArgs(['--role', role, ...listen, ...rest]);
  } catch (err) {
    if (err instanceof VmmsimError) throw err;
    throw new VmmsimError('E_USAGE', (err as Error).message.replace(/\s*\n\s*/g, ' ').trim());
  }
  if ((role === 'kvm' || role === 'vfio') && args.index !== 0) throw new VmmsimError('E_USAGE', `${role} is a singleton: --index must be 0, got ${args.index}`);
  return args;
}

/** `vmmsim serve`: returns once the role is ready; the process then lives until a signal ends it. */
export async function command(argv: string[]): Promise<number> {
  const args = parseServeArgs(argv);
  if (!args) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  // grpc-js writes its own errors to stderr (a failed bind, twice over with our E_LISTEN line);
  // the role's failures reach the user as vmmsim errors, so grpc-js's lines go to the debug log.
  const log = createLogger({ role: args.role, name: endpointName(args.role, args.index), from: 'grpc-js' }, resolveLogLevel(args.logLevel));
  grpc.setLogger({ error: (...data: unknown[]) => log.debug(data.map(String).join(' ')) });
  await startRole(args);
  return 0;
}
