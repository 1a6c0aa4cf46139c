import { createHash } from 'node:crypto';
import { ShoalError } from './errors.ts';

/** A content address. Only sha256 is accepted: it is what every OCI tool writes. */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_RE.test(value);
}

export function parseDigest(value: string, field = 'digest'): Digest {
  if (isDigest(value)) return value;
  if (/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:/.test(value) && !value.startsWith('sha256:')) {
    throw new ShoalError('unsupported', `unsupported digest algorithm in ${JSON.stringify(value)} (only sha256)`, { field });
  }
  throw new ShoalError('invalid', `not a sha256 digest: ${JSON.stringify(value)}`, { field });
}

export function digestOf(bytes: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** The hex part, used as a file name. */
export function digestHex(digest: Digest): string {
  return digest.slice('sha256:'.length);
}
