// Route-token signing wiring: an instance's endpoint reference carries a freshly signed
// token naming it (data-plane/route-token.ts), and its public description carries the
// endpoint while it is routable.
import type { InstanceRecord } from '../host-state.ts';
import { signRouteToken } from '../data-plane/route-token.ts';
import type { EndpointReference, InstanceInfo } from '../../protocol/index.ts';

/** Short: a captured token is worth minutes; the provider re-fetches fresh ones before expiry. */
export const DEFAULT_TOKEN_TTL_MS = 10 * 60_000;

export interface EndpointsOptions {
  /** Route-token keys: the first signs. */
  routeKeys: Uint8Array[];
  /** The host's data-plane base URL (http://host:port). */
  dataUrl: () => string;
  tokenTtlMs?: number;
  now?: () => number;
}

export interface Endpoints {
  endpointFor(record: InstanceRecord): EndpointReference;
  /** The instance as the control API shows it; with an endpoint when ready or paused. */
  describe(record: InstanceRecord): InstanceInfo;
}

export function createEndpoints(options: EndpointsOptions): Endpoints {
  const ttl = options.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS;
  const now = options.now ?? Date.now;
  const endpointFor = (r: InstanceRecord): EndpointReference => {
    const expiresAt = now() + ttl;
    const service = r.plan.service;
    const token = signRouteToken({ instance: r.id, service: service.name, expiresAt, operations: r.plan.operations ?? [] }, options.routeKeys);
    const dataUrl = options.dataUrl();
    return { instance: r.id, service, host: { dataUrl }, url: `${dataUrl}/i`, token, expiresAt };
  };
  return {
    endpointFor,
    describe(r) {
      const out: InstanceInfo = {
        id: r.id,
        service: r.plan.service,
        image: r.plan.image,
        manifestDigest: r.rootfs?.manifestDigest ?? '',
        driver: r.driver,
        state: r.state,
        resources: r.plan.resources,
        createdAt: r.createdAt,
      };
      if (r.timeline) out.timeline = r.timeline;
      if (r.exit) out.exit = r.exit;
      if (r.state === 'ready' || r.state === 'paused') out.endpoint = endpointFor(r);
      return out;
    },
  };
}
