import * as grpc from '@grpc/grpc-js';
import type { ChannelOptions } from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { VmmsimError } from '../errors.js';
import type { RunToken } from './auth.js';

/** The PEM files of mutual TLS, as the command line names them. */
export interface TlsFiles {
  /** The CA that signed every vmmsim process's certificate (servers and clients). */
  ca: string;
  /** This process's certificate: served to clients and presented to servers, so it needs both uses. */
  cert: string;
  key: string;
  /** The name clients check servers' certificates against, instead of the host in each address. */
  serverName?: string | undefined;
}

/**
 * How every gRPC endpoint of a process authenticates: the one place that builds credentials, so
 * the role servers, the role->role links and the controller's control channels cannot disagree.
 * Without TLS everything is insecure (private Unix sockets, loopback, or a trusted network).
 */
export interface Security {
  readonly tls: boolean;
  server(): grpc.ServerCredentials;
  channel(): grpc.ChannelCredentials;
  /** Channel options to add to a client's own (the target name override under TLS). */
  readonly options: ChannelOptions;
  /** The run's token: callers prove their name with it, servers check every caller against it (auth.ts). */
  readonly token?: RunToken | undefined;
}

/** The same credentials with the run's token added. */
export function withToken(security: Security, token: RunToken | undefined): Security {
  return token ? { ...security, token } : security;
}

export const INSECURE: Security = {
  tls: false,
  server: () => grpc.ServerCredentials.createInsecure(),
  channel: () => grpc.credentials.createInsecure(),
  options: {},
};

function readPem(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new VmmsimError('E_TLS', `cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

let quieted = false;

/**
 * grpc-js gives TLS the host of the target as its server name, and Node warns (DEP0123) when that
 * is an IP address, as every address of a peers file may be. The certificate is still checked
 * against the address (its IP SANs), so the warning is only noise on stderr: drop that one code
 * and hand every other warning to the listeners that were there (Node's printer).
 */
function quietIpServerNameWarning(): void {
  if (quieted) return;
  quieted = true;
  const before = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (w: Error & { code?: string }) => {
    if (w.code === 'DEP0123') return;
    for (const l of before) l(w);
  });
}

/**
 * Mutual TLS from PEM files, checked up front (a bad PEM or a key that does not match its
 * certificate would otherwise only show as a failed handshake on the first call). Servers require
 * and verify a client certificate signed by the CA; clients present theirs.
 */
export function mutualTls(files: TlsFiles): Security {
  const ca = readPem('CA certificate (--tls-ca)', files.ca);
  const cert = readPem('certificate (--tls-cert)', files.cert);
  const key = readPem('private key (--tls-key)', files.key);
  try {
    // A CA file without a certificate would be taken as trusting nobody: every handshake refused.
    new X509Certificate(ca);
    createSecureContext({ ca, cert, key });
  } catch (err) {
    throw new VmmsimError('E_TLS', `--tls-ca ${files.ca}, --tls-cert ${files.cert}, --tls-key ${files.key}: ${(err as Error).message}`);
  }
  quietIpServerNameWarning();
  const options: ChannelOptions = files.serverName
    ? { 'grpc.ssl_target_name_override': files.serverName, 'grpc.default_authority': files.serverName }
    : {};
  return {
    tls: true,
    server: () => grpc.ServerCredentials.createSsl(ca, [{ private_key: key, cert_chain: cert }], true),
    channel: () => grpc.credentials.createSsl(ca, key, cert),
    options,
  };
}

/** The TLS options every command that opens gRPC endpoints takes (serve, run, compare, sweep, saturate). */
export const TLS_OPTIONS = {
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-server-name': { type: 'string' },
} as const;

export type TlsOptionValues = { [K in keyof typeof TLS_OPTIONS]?: string | undefined };

/** The TLS files the options name: all three or none (a half-configured TLS is a mistake, not insecure). */
export function tlsFiles(values: TlsOptionValues): TlsFiles | undefined {
  const given = (['tls-ca', 'tls-cert', 'tls-key'] as const).filter((k) => values[k] !== undefined);
  if (given.length === 0) {
    if (values['tls-server-name'] !== undefined) throw new VmmsimError('E_USAGE', '--tls-server-name needs --tls-ca, --tls-cert and --tls-key');
    return undefined;
  }
  if (given.length < 3) {
    const missing = (['tls-ca', 'tls-cert', 'tls-key'] as const).filter((k) => values[k] === undefined).map((k) => `--${k}`);
    throw new VmmsimError('E_USAGE', `--tls-ca, --tls-cert and --tls-key go together: missing ${missing.join(' and ')}`);
  }
  return { ca: values['tls-ca'] as string, cert: values['tls-cert'] as string, key: values['tls-key'] as string, serverName: values['tls-server-name'] };
}

/** The command-line form of TLS files, for a process that hands them to its children. */
export function tlsArgs(files: TlsFiles | undefined): string[] {
  if (!files) return [];
  return ['--tls-ca', files.ca, '--tls-cert', files.cert, '--tls-key', files.key, ...(files.serverName ? ['--tls-server-name', files.serverName] : [])];
}
