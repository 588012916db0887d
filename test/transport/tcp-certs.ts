// Test certificates made with the openssl CLI: a cluster CA, member
// certificates naming `member-<id>` (CN and a DNS subjectAltName) signed by
// it, and certificates signed by a second, untrusted CA. EC P-256 keys keep
// generation fast.

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface MemberCertificate {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface CertificateAuthority {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
}

function openssl(args: readonly string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

const curve = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A self-signed CA in `directory`, files named after `name`. */
export function makeCa(directory: string, name: string): CertificateAuthority {
  const certPath = join(directory, `${name}.crt`);
  const keyPath = join(directory, `${name}.key`);
  openssl([
    'req', '-x509', ...curve, '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { certPath, keyPath, cert: readFileSync(certPath) };
}

/** A certificate for `identity` (e.g. "member-1"), signed by `ca`, usable as TLS server and client. */
export function makeMemberCertificate(directory: string, ca: CertificateAuthority, identity: string, fileName = identity): MemberCertificate {
  const keyPath = join(directory, `${fileName}.key`);
  const csrPath = join(directory, `${fileName}.csr`);
  const certPath = join(directory, `${fileName}.crt`);
  const extensionsPath = join(directory, `${fileName}.ext`);
  writeFileSync(
    extensionsPath,
    `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:${identity}\n`,
  );
  openssl(['req', ...curve, '-keyout', keyPath, '-out', csrPath, '-subj', `/CN=${identity}`]);
  openssl([
    'x509', '-req', '-in', csrPath, '-CA', ca.certPath, '-CAkey', ca.keyPath, '-set_serial', String(Date.now() + Math.floor(Math.random() * 1e6)),
    '-out', certPath, '-days', '2', '-extfile', extensionsPath,
  ]);
  return { certPath, keyPath, cert: readFileSync(certPath), key: readFileSync(keyPath) };
}
