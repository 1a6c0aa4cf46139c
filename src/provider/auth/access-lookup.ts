// Who may message a service or a farm: read from the description it was registered with.
// Farm exports are looked at first (the farms take their /s/ names before the router), then
// the routing table (no I/O on the warm path), then the registry (a service another provider
// registered a moment ago). Descriptions stored before `access` existed count as 'token'.
import type { ServiceAccess, ServiceDescription, ServiceDescriptionInput } from '../../protocol/index.ts';

export interface AccessLookupOptions {
  table: { service(name: string): { description: ServiceDescription } | undefined };
  registry: { getService(name: string): Promise<{ description: ServiceDescription } | undefined> };
  farms?: {
    handles(url: string): boolean;
    list(): Array<{ name: string; graph: { services: Record<string, ServiceDescriptionInput>; exports: Array<{ path: string; service: string }> } }>;
  };
}

export function createAccessLookup(o: AccessLookupOptions): (kind: 'service' | 'farm', name: string) => ServiceAccess | undefined | Promise<ServiceAccess | undefined> {
  const of = (d: { access?: ServiceAccess } | undefined): ServiceAccess => d?.access ?? 'token';
  // Unknown names are remembered briefly so that a stream of them does not reach the database.
  const misses = new Map<string, number>();
  return (kind, name) => {
    if (kind === 'farm') {
      const farm = o.farms?.list().find((f) => f.name === name);
      if (farm === undefined) return undefined;
      return Object.values(farm.graph.services).every((d) => of(d) === 'public') ? 'public' : 'token';
    }
    if (o.farms?.handles(`/s/${name}/`)) {
      for (const f of o.farms.list()) {
        const e = f.graph.exports.find((x) => x.path === name);
        if (e !== undefined) return of(f.graph.services[e.service]);
      }
    }
    const local = o.table.service(name);
    if (local !== undefined) return of(local.description);
    const missed = misses.get(name);
    if (missed !== undefined && Date.now() - missed < 2000) return undefined;
    return o.registry.getService(name).then((r) => {
      if (r !== undefined) return of(r.description);
      if (misses.size > 10_000) misses.clear();
      misses.set(name, Date.now());
      return undefined;
    });
  };
}
