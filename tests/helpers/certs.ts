import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

export interface TestPki {
  ca: string;
  /** Served by the roles and presented to their peers: serverAuth and clientAuth. */
  role: CertFiles;
  /** A role certificate that names only the host vmmsim-roles.test (no address): needs --tls-server-name. */
  named: CertFiles;
  /** The controller's client certificate: clientAuth only. */
  controller: CertFiles;
  /** A client certificate from a CA the processes do not trust. */
  stranger: CertFiles;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function ca(dir: string, name: string): { cert: string; key: string } {
  openssl(dir, ['req', '-x509', ...EC, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`]);
  return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

function leaf(dir: string, name: string, signer: { cert: string; key: string }, ext: string): CertFiles {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(dir, ['req', '-new', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', signer.cert, '-CAkey', signer.key, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`]);
  return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

/**
 * A CA and certificates made by openssl in `dir`, as an operator would make them: the roles'
 * with SANs for 127.0.0.1 and localhost (and any `sans` given, such as IP:10.1.2.3), usable as
 * server and client; one that names a host only; the controller's a client certificate; and one
 * from an untrusted CA.
 */
export function makeTestPki(dir: string, sans: readonly string[] = []): TestPki {
  const root = ca(dir, 'vmmsim-test-ca');
  const other = ca(dir, 'stranger-ca');
  // URI:urn:vmmsim:* lets one certificate act as every role (not the controller): docs/security.md.
  const san = ['IP:127.0.0.1', 'DNS:localhost', 'URI:urn:vmmsim:*', ...sans].join(',');
  const role = leaf(dir, 'role', root, `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${san}\n`);
  const named = leaf(dir, 'named', root, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:vmmsim-roles.test,URI:urn:vmmsim:*\n');
  const controller = leaf(dir, 'controller', root, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=clientAuth\n');
  const stranger = leaf(dir, 'stranger', other, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=clientAuth\n');
  return { ca: root.cert, role, named, controller, stranger };
}
