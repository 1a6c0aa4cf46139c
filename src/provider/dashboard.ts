// The provider's side of the dashboard (src/dashboard): its sessions are checked against
// the registry's tokens (fresh on every use, so a revocation ends them at once) and its
// live events are the registry's event rows.
import { createDashboard, type Dashboard } from '../dashboard/index.ts';
import type { Registry } from './registry/index.ts';
import type { TokenVerifier } from './auth/index.ts';
import type { Logger } from './host-pool.ts';

export function createProviderDashboard(o: { registry: Registry; verifier: TokenVerifier; secure: boolean; log: Logger; now?: () => number }): Dashboard {
  const now = o.now ?? Date.now;
  return createDashboard({
    secure: o.secure,
    log: o.log,
    listEvents: (filter) => o.registry.listEvents(filter),
    tokens: {
      async verify(secret) {
        const v = await o.verifier.verify(secret, { fresh: true });
        return v.ok ? { ok: true, principal: v.principal } : { ok: false, reason: v.reason };
      },
      async check(tokenId) {
        const r = await o.registry.getApiToken(tokenId);
        if (r === undefined) return { ok: false, reason: 'unknown' };
        if (r.revokedAt !== undefined) return { ok: false, reason: 'revoked' };
        if (r.expiresAt !== undefined && r.expiresAt <= now()) return { ok: false, reason: 'expired' };
        return { ok: true, principal: { tokenId: r.id, role: r.role, ...(r.services === undefined ? {} : { services: r.services }) } };
      },
    },
  });
}
