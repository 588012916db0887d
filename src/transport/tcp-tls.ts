// Member identity in TLS certificates. A member's certificate, signed by the
// cluster's CA, names it `member-<id>` in its subject CN or in a DNS entry
// of its subjectAltName. Both ends check the other: a server accepts a hello
// from member N only over a connection whose client certificate names
// member-N, and a client talks to member N only if the server's certificate
// names member-N (its address, an IP, is not what is checked).

import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { InvalidArgumentError } from '../raft/errors.ts';
import type { NodeId } from '../raft/types.ts';

/** TLS material of one member, PEM encoded. */
export interface TcpTlsOptions {
  /** The CA that signs every member's certificate (the only one trusted). */
  readonly ca: string | Buffer;
  /** This member's certificate; it must name `member-<id>`. */
  readonly cert: string | Buffer;
  /** The private key of `cert`. */
  readonly key: string | Buffer;
}

/** The name a member's certificate must carry. */
export function memberIdentity(id: NodeId): string {
  return `member-${id}`;
}

/** Names in a subjectAltName string ("DNS:a, IP Address:1.2.3.4, ...") of the DNS kind. */
function dnsNames(subjectAltName: string | undefined): string[] {
  if (subjectAltName === undefined) return [];
  return subjectAltName
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.startsWith('DNS:'))
    .map((part) => part.slice(4));
}

/** The identities a peer certificate carries: its subject CN and its DNS subjectAltNames. */
export function certificateIdentities(certificate: PeerCertificate): string[] {
  const names = dnsNames(certificate.subjectaltname);
  const commonName = certificate.subject?.CN;
  if (typeof commonName === 'string') names.push(commonName);
  else if (Array.isArray(commonName)) names.push(...(commonName as string[]));
  return names;
}

/** Whether a peer certificate names member `id`. */
export function certificateNamesMember(certificate: PeerCertificate, id: NodeId): boolean {
  return certificateIdentities(certificate).includes(memberIdentity(id));
}

/** Checks at start-up that the configured certificate names this member, so a mix-up fails loudly and early. */
export function checkOwnCertificate(tls: TcpTlsOptions, id: NodeId): void {
  for (const field of ['ca', 'cert', 'key'] as const) {
    const value = tls[field];
    if (typeof value !== 'string' && !Buffer.isBuffer(value)) throw new InvalidArgumentError(`tls.${field} must be PEM text or a Buffer`);
  }
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(tls.cert);
  } catch (error) {
    throw new InvalidArgumentError(`tls.cert is not a PEM certificate: ${(error as Error).message}`);
  }
  const names = dnsNames(certificate.subjectAltName);
  const commonName = /(?:^|\n)CN=([^\n]*)/.exec(certificate.subject)?.[1];
  if (commonName !== undefined) names.push(commonName);
  if (!names.includes(memberIdentity(id))) {
    throw new InvalidArgumentError(`tls.cert names ${names.join(', ') || 'nothing'}, not ${memberIdentity(id)}`);
  }
}
