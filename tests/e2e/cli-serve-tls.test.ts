/**
 * Mutual TLS on every gRPC link: standalone roles that require client certificates, a controller
 * that presents one, and clients without one (or with one from another CA) refused. Certificates
 * are made by openssl in the test.
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki, type CertFiles, type TestPki } from '../helpers/certs.js';
import { healthCheck } from '../helpers/health.js';
import { waitForNoProcesses } from '../helpers/processes.js';
import { ONE_OF_EACH, alive, startServe, stopServed, writePeers, type Served } from '../helpers/serve.js';
import { Runs, STACK_LINE, readResults, roleOf, runWatched } from './support.js';

const runs = new Runs();
const marker = randomUUID();
let pkiDir = '';
let pki: TestPki;
let served: Served[] = [];
let peers = '';

function tlsArgs(c: CertFiles, serverName?: string): string[] {
  return ['--tls-ca', pki.ca, '--tls-cert', c.cert, '--tls-key', c.key, ...(serverName ? ['--tls-server-name', serverName] : [])];
}

function clientCreds(c?: CertFiles): grpc.ChannelCredentials {
  const ca = readFileSync(pki.ca);
  return c ? grpc.credentials.createSsl(ca, readFileSync(c.key), readFileSync(c.cert)) : grpc.credentials.createSsl(ca);
}

beforeAll(() => {
  pkiDir = mkdtempSync(join(tmpdir(), 'vmmsim-pki-'));
  pki = makeTestPki(pkiDir);
});

afterAll(() => {
  runs.removeFolders();
  rmSync(pkiDir, { recursive: true, force: true });
});

describe('mutual TLS between standalone roles and the controller', () => {
  beforeAll(async () => {
    const dir = runs.folder('vmmsim-tls-');
    served = await Promise.all(ONE_OF_EACH.map((args) => startServe([...args, ...tlsArgs(pki.role)], marker)));
    peers = writePeers(join(dir, 'peers.yaml'), served);
  }, 120_000);

  afterEach(() => runs.cleanup());

  afterAll(async () => {
    await stopServed(served);
    expect(await waitForNoProcesses(marker, 5000)).toEqual([]);
  });

  it('runs a scenario over mTLS on every link, the controller presenting its own client certificate', async () => {
    const out = runs.folder();
    const r = await runWatched(runs, ['run', '--connect', peers, ...tlsArgs(pki.controller), '--ops', '200', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('Warning');
    const doc = readResults(out);
    expect(doc.status).toBe('ok');
    expect(doc.runs[0]?.ops.find((o) => o.op === 'unmap')?.count).toBe(200);
    for (const s of served) expect(alive(s.pid), s.name).toBe(true);
  });

  it('answers the health check of a client whose certificate the CA signed', async () => {
    for (const s of served) expect(await healthCheck(s.address, clientCreds(pki.controller)), s.name).toBe('SERVING');
  });

  it('refuses a client without a certificate, over TLS or in the clear', async () => {
    const s = served[0] as Served;
    await expect(healthCheck(s.address, clientCreds())).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    await expect(healthCheck(s.address, grpc.credentials.createInsecure())).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it('refuses a client whose certificate another CA signed', async () => {
    const s = served[0] as Served;
    await expect(healthCheck(s.address, clientCreds(pki.stranger))).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it('a controller without TLS cannot reach them: it names them and exits 1', async () => {
    const r = await runWatched(runs, ['run', '--connect', peers, '--ops', '50', '--out', runs.folder(), '--start-timeout', '1500']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_UNREACHABLE: 5 processes of \S+ did not report SERVING on gRPC health within 1500 ms: psmmu-0 at 127\.0\.0\.1:\d+ \(/);
    expect(r.stderr).not.toMatch(STACK_LINE);
  });

  it('refuses a certificate file it cannot read, with exit 2 and no stack trace', async () => {
    const r = await runWatched(runs, ['run', '--connect', peers, '--tls-ca', pki.ca, '--tls-cert', '/nonexistent/cert.pem', '--tls-key', pki.controller.key, '--out', runs.folder()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('E_TLS: cannot read the certificate (--tls-cert) /nonexistent/cert.pem: ENOENT');
    // Checked before anything starts: no partial results of a run that never began.
    expect(r.stderr).not.toContain('partial results');
    expect(r.stderr).not.toMatch(STACK_LINE);
  });
});

describe('mutual TLS in a tree the controller launches', () => {
  afterEach(() => runs.cleanup());

  it('hands its TLS files to every role it starts, and the run goes over TLS', async () => {
    const out = runs.folder();
    const r = await runWatched(runs, ['run', ...tlsArgs(pki.role), '--ops', '50', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const roles = r.spawned.filter((p) => roleOf(p.cmdline) !== undefined);
    expect(roles).toHaveLength(5);
    for (const p of roles) expect(p.cmdline).toContain(`--tls-ca ${pki.ca} --tls-cert ${pki.role.cert} --tls-key ${pki.role.key}`);
    expect(readResults(out).status).toBe('ok');
  });

  it('checks certificates against --tls-server-name when they name a host, not the address', async () => {
    const without = await runWatched(runs, ['run', ...tlsArgs(pki.named), '--ops', '50', '--out', runs.folder()]);
    expect(without.code, without.stderr).toBe(2);
    expect(without.stderr).toMatch(/E_TLS: .*Host: localhost\. is not in the cert's altnames: DNS:vmmsim-roles\.test/);
    const out = runs.folder();
    const r = await runWatched(runs, ['run', ...tlsArgs(pki.named, 'vmmsim-roles.test'), '--ops', '50', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(readResults(out).status).toBe('ok');
  });
});
