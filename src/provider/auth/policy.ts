// What each route needs: one table for the provider, the farms API and the store (their
// paths do not overlap, so `shoal up`, which serves all three on one port, and the
// standalone store read the same table). A pure function of method and path.

import { STATE_REPOSITORY_PREFIX } from '../../protocol/index.ts';

export type NeededRole = 'admin' | 'deploy' | 'read';

export type Requirement =
  /** Health and the API description. */
  | { kind: 'open' }
  /** Host registration (and the dashboard's login): the route checks the credential itself. */
  | { kind: 'join'; route: string }
  | { kind: 'role'; role: NeededRole; route: string; service?: string }
  /** Reading images from the store: anonymous when the store allows it, else a read token. */
  | { kind: 'pull'; route: string }
  /** The store's docker-style token endpoint (the realm of its Bearer challenge). */
  | { kind: 'token-endpoint' }
  /** A message to a service (`/s/<service>/…`). */
  | { kind: 'service'; service: string }
  /** A message into a farm (`/x/<farm>/…`). */
  | { kind: 'farm'; farm: string };

interface Rule {
  methods: readonly string[];
  /** Segments; `:x` matches one, a trailing `*` the rest. */
  pattern: string;
  need: (params: Record<string, string>) => Requirement;
}

const READ = ['GET', 'HEAD'];
const ANY = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];
const role = (r: NeededRole, route: string, service?: string): Requirement => ({ kind: 'role', role: r, route, ...(service === undefined ? {} : { service }) });

const RULES: readonly Rule[] = [
  { methods: READ, pattern: '/healthz', need: () => ({ kind: 'open' }) },
  { methods: READ, pattern: '/openapi.json', need: () => ({ kind: 'open' }) },
  { methods: READ, pattern: '/metrics', need: () => role('read', '/metrics') },
  // the dashboard (src/dashboard): the page and its files hold no data; the login checks the
  // token it is given itself (audited like a join); the live events need a read role, and
  // the page's API calls go to /api/v1/ with the session cookie (the gate's `session`)
  { methods: READ, pattern: '/ui', need: () => ({ kind: 'open' }) },
  { methods: ['POST'], pattern: '/ui/session', need: () => ({ kind: 'join', route: '/ui/session' }) },
  { methods: ['GET', 'DELETE'], pattern: '/ui/session', need: () => ({ kind: 'open' }) },
  { methods: READ, pattern: '/ui/events', need: () => role('read', '/ui/events') },
  { methods: READ, pattern: '/ui/*', need: () => ({ kind: 'open' }) },
  // provider
  { methods: ['POST'], pattern: '/api/v1/services', need: () => role('deploy', '/api/v1/services') },
  { methods: READ, pattern: '/api/v1/services', need: () => role('read', '/api/v1/services') },
  { methods: READ, pattern: '/api/v1/services/:name', need: (p) => role('read', '/api/v1/services/:name', p.name) },
  { methods: ['DELETE'], pattern: '/api/v1/services/:name', need: (p) => role('deploy', '/api/v1/services/:name', p.name) },
  { methods: ['POST'], pattern: '/api/v1/services/:name/deployments', need: (p) => role('deploy', '/api/v1/services/:name/deployments', p.name) },
  { methods: ['POST'], pattern: '/api/v1/hosts', need: () => ({ kind: 'join', route: '/api/v1/hosts' }) },
  { methods: ['DELETE'], pattern: '/api/v1/hosts/:id', need: () => ({ kind: 'join', route: '/api/v1/hosts/:id' }) },
  { methods: READ, pattern: '/api/v1/hosts', need: () => role('read', '/api/v1/hosts') },
  { methods: READ, pattern: '/api/v1/deployments', need: () => role('read', '/api/v1/deployments') },
  { methods: READ, pattern: '/api/v1/instances', need: () => role('read', '/api/v1/instances') },
  { methods: ['DELETE'], pattern: '/api/v1/instances/:id', need: () => role('deploy', '/api/v1/instances/:id') },
  { methods: ['PUT'], pattern: '/api/v1/services/:name/scale', need: (p) => role('deploy', '/api/v1/services/:name/scale', p.name) },
  { methods: READ, pattern: '/api/v1/instances/:id/logs', need: () => role('read', '/api/v1/instances/:id/logs') },
  { methods: ['POST'], pattern: '/api/v1/instances/:id/migrate', need: () => role('deploy', '/api/v1/instances/:id/migrate') },
  { methods: ['POST'], pattern: '/api/v1/instances/:id/pause', need: () => role('deploy', '/api/v1/instances/:id/pause') },
  { methods: ['POST'], pattern: '/api/v1/instances/:id/resume', need: () => role('deploy', '/api/v1/instances/:id/resume') },
  { methods: ['POST'], pattern: '/api/v1/instances/:id/snapshot', need: () => role('deploy', '/api/v1/instances/:id/snapshot') },
  { methods: ['POST'], pattern: '/api/v1/instances/:id/suspend', need: () => role('deploy', '/api/v1/instances/:id/suspend') },
  { methods: ['POST'], pattern: '/api/v1/instances/:id/fork', need: () => role('deploy', '/api/v1/instances/:id/fork') },
  { methods: READ, pattern: '/api/v1/states', need: () => role('read', '/api/v1/states') },
  { methods: ['POST'], pattern: '/api/v1/states/:id/restore', need: () => role('deploy', '/api/v1/states/:id/restore') },
  { methods: ['DELETE'], pattern: '/api/v1/states/:id', need: () => role('deploy', '/api/v1/states/:id') },
  { methods: READ, pattern: '/api/v1/events', need: () => role('read', '/api/v1/events') },
  { methods: READ, pattern: '/api/v1/farms', need: () => role('read', '/api/v1/farms') },
  { methods: READ, pattern: '/api/v1/farms/:name', need: (p) => role('read', '/api/v1/farms/:name', p.name) },
  { methods: ['PUT', 'DELETE'], pattern: '/api/v1/farms/:name', need: (p) => role('deploy', '/api/v1/farms/:name', p.name) },
  { methods: READ, pattern: '/api/v1/tokens', need: () => role('admin', '/api/v1/tokens') },
  { methods: ['POST'], pattern: '/api/v1/tokens', need: () => role('admin', '/api/v1/tokens') },
  { methods: ['DELETE'], pattern: '/api/v1/tokens/:id', need: () => role('admin', '/api/v1/tokens/:id') },
  { methods: READ, pattern: '/api/v1/audit', need: () => role('admin', '/api/v1/audit') },
  { methods: READ, pattern: '/api/v1/registry-logins', need: () => role('admin', '/api/v1/registry-logins') },
  { methods: ['PUT', 'DELETE'], pattern: '/api/v1/registry-logins/:host', need: () => role('admin', '/api/v1/registry-logins/:host') },
  // the store's control API
  { methods: READ, pattern: '/api/v1/images', need: () => role('read', '/api/v1/images') },
  { methods: READ, pattern: '/api/v1/images/inspect', need: () => ({ kind: 'pull', route: '/api/v1/images/inspect' }) },
  { methods: READ, pattern: '/api/v1/images/resolve', need: () => ({ kind: 'pull', route: '/api/v1/images/resolve' }) },
  { methods: ['DELETE'], pattern: '/api/v1/images', need: () => role('deploy', '/api/v1/images') },
  { methods: READ, pattern: '/api/v1/repositories', need: () => role('read', '/api/v1/repositories') },
  { methods: ['DELETE'], pattern: '/api/v1/repositories', need: () => role('deploy', '/api/v1/repositories') },
  { methods: ['POST'], pattern: '/api/v1/tags', need: () => role('deploy', '/api/v1/tags') },
  { methods: ['POST'], pattern: '/api/v1/gc', need: () => role('deploy', '/api/v1/gc') },
  // the OCI distribution API
  { methods: READ, pattern: '/v2', need: () => ({ kind: 'pull', route: '/v2/' }) },
  { methods: READ, pattern: '/v2/token', need: () => ({ kind: 'token-endpoint' }) },
  { methods: READ, pattern: '/v2/_catalog', need: () => role('read', '/v2/_catalog') },
  // messages
  // (every method: the message path itself answers 404 and 405, to callers allowed to ask)
  { methods: ANY, pattern: '/s/:service', need: (p) => ({ kind: 'service', service: p.service! }) },
  { methods: ANY, pattern: '/s/:service/*', need: (p) => ({ kind: 'service', service: p.service! }) },
  { methods: ANY, pattern: '/x/:farm/*', need: (p) => ({ kind: 'farm', farm: p.farm! }) },
];

/** The requirement of a request; anything not listed needs an admin token (closed by default). */
export function requirementFor(method: string, rawPath: string): Requirement {
  const path = rawPath.split('?', 1)[0]!;
  const segments = path.split('/').filter((s) => s !== '');
  for (const rule of RULES) {
    if (!rule.methods.includes(method)) continue;
    const params = match(rule.pattern, segments);
    if (params !== undefined) return rule.need(params);
  }
  if (segments[0] === 'v2') {
    // /v2/<name>/(manifests|blobs|tags)/…: names contain slashes, so look at the tail.
    // States hold services' memory: never an anonymous pull, and a deploy token at least.
    if (READ.includes(method)) return segments[1] === STATE_REPOSITORY_PREFIX ? role('deploy', registryRoute(segments)) : { kind: 'pull', route: registryRoute(segments) };
    if (['POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) return role('deploy', registryRoute(segments));
  }
  return role('admin', path);
}

/** Mutating calls are audited; reads are not. */
export function isMutating(method: string): boolean {
  return method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS';
}

/** Each rule's pattern split once (this runs in front of every message). */
const PARTS = new Map<string, readonly string[]>(RULES.map((r) => [r.pattern, r.pattern.split('/').filter((s) => s !== '')]));

function match(pattern: string, segments: readonly string[]): Record<string, string> | undefined {
  const parts = PARTS.get(pattern)!;
  // A literal first part that differs rules the pattern out before any work on params.
  if (parts.length > 0 && parts[0] !== segments[0] && !parts[0]!.startsWith(':') && parts[0] !== '*') return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (p === '*') return i < segments.length ? params : undefined;
    const s = segments[i];
    if (s === undefined) return undefined;
    if (p.startsWith(':')) params[p.slice(1)] = safeDecode(s);
    else if (p !== s) return undefined;
  }
  return segments.length === parts.length ? params : undefined;
}

function registryRoute(segments: readonly string[]): string {
  const i = segments.findIndex((s, k) => k > 1 && (s === 'manifests' || s === 'blobs' || s === 'tags'));
  if (i < 0) return '/v2/*';
  const tail = segments[i] === 'blobs' && segments[i + 1] === 'uploads' ? 'blobs/uploads' : segments[i];
  return `/v2/<name>/${tail}`;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
