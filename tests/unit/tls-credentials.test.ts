import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INSECURE, mutualTls, tlsArgs, tlsFiles } from '../../services/runtime/transport/credentials.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { thrown } from '../helpers/thrown.js';

let dir = '';
let pki: TestPki;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vmmsim-tls-unit-'));
  pki = makeTestPki(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('TLS options', () => {
  it('are all three or none', () => {
    expect(tlsFiles({})).toBeUndefined();
    expect(tlsFiles({ 'tls-ca': 'a', 'tls-cert': 'b', 'tls-key': 'c' })).toEqual({ ca: 'a', cert: 'b', key: 'c', serverName: undefined });
    const e = thrown(() => tlsFiles({ 'tls-ca': 'a' }));
    expect(e.code).toBe('E_USAGE');
    expect(e.message).toBe('--tls-ca, --tls-cert and --tls-key go together: missing --tls-cert and --tls-key');
    expect(thrown(() => tlsFiles({ 'tls-server-name': 'x' })).message).toMatch(/--tls-server-name needs --tls-ca/);
  });

  it('go to a launched role as they came', () => {
    expect(tlsArgs(undefined)).toEqual([]);
    expect(tlsArgs({ ca: 'a', cert: 'b', key: 'c', serverName: 'n' })).toEqual(['--tls-ca', 'a', '--tls-cert', 'b', '--tls-key', 'c', '--tls-server-name', 'n']);
  });
});

describe('mutual TLS credentials', () => {
  it('are built from a CA, a certificate and its key, with the target name override when asked', () => {
    const s = mutualTls({ ca: pki.ca, cert: pki.role.cert, key: pki.role.key, serverName: 'vmmsim-roles.test' });
    expect(s.tls).toBe(true);
    expect(s.options).toEqual({ 'grpc.ssl_target_name_override': 'vmmsim-roles.test', 'grpc.default_authority': 'vmmsim-roles.test' });
    expect(s.server()._isSecure()).toBe(true);
    expect(s.channel()._isSecure()).toBe(true);
    expect(mutualTls({ ca: pki.ca, cert: pki.role.cert, key: pki.role.key }).options).toEqual({});
    expect(INSECURE.channel()._isSecure()).toBe(false);
  });

  it('refuse files they cannot read, and a key that is not the certificate\'s, naming them', () => {
    const missing = thrown(() => mutualTls({ ca: join(dir, 'none.pem'), cert: pki.role.cert, key: pki.role.key }));
    expect(missing.code).toBe('E_TLS');
    expect(missing.exitCode).toBe(2);
    expect(missing.message).toMatch(/cannot read the CA certificate \(--tls-ca\) \S+none\.pem: ENOENT/);
    const mismatch = thrown(() => mutualTls({ ca: pki.ca, cert: pki.role.cert, key: pki.controller.key }));
    expect(mismatch.code).toBe('E_TLS');
    expect(mismatch.message).toMatch(/key values mismatch/);
    const notPem = thrown(() => mutualTls({ ca: pki.role.key, cert: pki.role.cert, key: pki.role.key }));
    expect(notPem.code).toBe('E_TLS');
  });
});
