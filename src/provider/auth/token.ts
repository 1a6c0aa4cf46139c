// API tokens: `shoal_<id>_<secret>`, where id (12 hex) names the row and secret is 32
// random bytes (base64url). The registry keeps only SHA-256 of the whole text.
//
// Why a plain SHA-256 and not a slow KDF (scrypt, argon2): slow KDFs protect secrets a
// person chose, which can be guessed; a 256-bit random secret cannot be guessed, so one
// hash already makes a stolen table useless, and a KDF would cost milliseconds on every
// authenticated request (the message path included).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ApiRole } from '../../protocol/index.ts';

const TOKEN = /^shoal_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

export interface MintedToken {
  id: string;
  /** The whole token text: shown once, never stored. */
  secret: string;
  /** Hex SHA-256 of `secret`: what the registry stores. */
  hash: string;
}

export function mintToken(): MintedToken {
  const id = randomBytes(6).toString('hex');
  const secret = `shoal_${id}_${randomBytes(32).toString('base64url')}`;
  return { id, secret, hash: hashToken(secret) };
}

export function hashToken(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** The id a token names, or undefined if it is not a Shoal API token. */
export function tokenId(secret: string): string | undefined {
  return TOKEN.exec(secret)?.[1];
}

export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

/**
 * The credential a request carries: `Authorization: Bearer <token>`, or Basic with the
 * token as the password (what `skopeo --creds user:TOKEN` and docker login send).
 */
export function credentialOf(headers: IncomingHttpHeaders): string | undefined {
  const h = headers.authorization;
  if (h === undefined) return undefined;
  const m = /^(Bearer|Basic)\s+(\S+)\s*$/i.exec(h);
  if (!m) return undefined;
  if (m[1]!.toLowerCase() === 'bearer') return m[2];
  const decoded = Buffer.from(m[2]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

const RANK: Record<ApiRole, number> = { invoke: 0, read: 1, deploy: 2, admin: 3 };

/** Does `role` include what `needed` may do? admin ⊃ deploy ⊃ read; invoke is only for messages. */
export function roleAllows(role: ApiRole, needed: Exclude<ApiRole, 'invoke'>): boolean {
  return role !== 'invoke' && RANK[role] >= RANK[needed];
}

/** May a token with this role (and service scope) send messages to `service`? */
export function mayInvoke(role: ApiRole, scope: readonly string[] | undefined, service: string): boolean {
  switch (role) {
    case 'admin':
    case 'deploy':
      return true;
    case 'invoke':
      return scope === undefined || scope.includes(service);
    case 'read':
      return false;
    default: {
      const never: never = role;
      return never;
    }
  }
}

/** "30d", "12h", "15m", "90s" or plain seconds → seconds. */
export function parseTtl(text: string): number | undefined {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return n > 0 ? n * unit : undefined;
}
