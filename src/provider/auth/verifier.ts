// Turning a presented token into a principal.
//
// Control calls (fresh: true) read the registry every time, so a revocation on any
// provider sharing the database takes effect on the next call. Messages to token-access
// services may use a verdict cached for `cacheTtlMs` (default 1 s) so warm requests do not
// touch the database; a revocation made through this process drops its cache entry at
// once, one made on another provider is seen here within cacheTtlMs.
import type { ApiRole } from '../../protocol/index.ts';
import type { ApiTokenRecord } from '../registry/index.ts';
import { hashToken, sameHash, tokenId } from './token.ts';

export interface Principal {
  tokenId: string;
  role: ApiRole;
  /** invoke tokens: the services they may call (undefined: all). */
  services?: readonly string[];
}

export type Refusal = 'malformed' | 'unknown' | 'revoked' | 'expired';
export type Verdict = { ok: true; principal: Principal } | { ok: false; reason: Refusal };

export interface TokenVerifier {
  verify(secret: string, options?: { fresh?: boolean }): Promise<Verdict>;
  /** Drops cached verdicts for a token id (called on a local revocation). */
  forget(id: string): void;
}

export interface TokenSource {
  getApiToken(id: string): Promise<ApiTokenRecord | undefined>;
}

export function verdictFor(secret: string, record: ApiTokenRecord | undefined, now: number): Verdict {
  if (record === undefined || !sameHash(hashToken(secret), record.hash)) return { ok: false, reason: 'unknown' };
  if (record.revokedAt !== undefined) return { ok: false, reason: 'revoked' };
  if (record.expiresAt !== undefined && record.expiresAt <= now) return { ok: false, reason: 'expired' };
  return { ok: true, principal: { tokenId: record.id, role: record.role, ...(record.services === undefined ? {} : { services: record.services }) } };
}

export function createRegistryVerifier(options: { tokens: TokenSource; cacheTtlMs?: number; now?: () => number; maxCached?: number }): TokenVerifier {
  const ttl = options.cacheTtlMs ?? 1000;
  const now = options.now ?? Date.now;
  const maxCached = options.maxCached ?? 10_000;
  const cache = new Map<string, { verdict: Verdict; at: number; id: string }>();
  return {
    async verify(secret, o = {}) {
      const id = tokenId(secret);
      if (id === undefined) return { ok: false, reason: 'malformed' };
      const t = now();
      if (!o.fresh) {
        const hit = cache.get(secret);
        if (hit !== undefined && t - hit.at < ttl) return hit.verdict;
      }
      const verdict = verdictFor(secret, await options.tokens.getApiToken(id), t);
      if (cache.size >= maxCached) cache.clear();
      cache.set(secret, { verdict, at: t, id });
      return verdict;
    },
    forget(id) {
      for (const [k, v] of cache) if (v.id === id) cache.delete(k);
    },
  };
}

/** A fixed set of tokens held in memory (the standalone store's token file). */
export function createStaticVerifier(tokens: ReadonlyArray<{ secret: string; role: ApiRole }>): TokenVerifier {
  const records = new Map<string, ApiTokenRecord>();
  for (const t of tokens) {
    const id = tokenId(t.secret);
    if (id === undefined) throw new Error('a static token is not a Shoal API token (shoal_<id>_<secret>)');
    records.set(id, { id, hash: hashToken(t.secret), role: t.role, services: undefined, note: undefined, createdAt: 0, expiresAt: undefined, revokedAt: undefined });
  }
  return {
    async verify(secret) {
      const id = tokenId(secret);
      if (id === undefined) return { ok: false, reason: 'malformed' };
      return verdictFor(secret, records.get(id), Date.now());
    },
    forget() {},
  };
}
