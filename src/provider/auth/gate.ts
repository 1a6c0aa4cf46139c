// The check in front of every request, at the node:http level so that one gate covers
// the Hono control API, the farms API (plain node:http), the store (Hono, with handlers
// that write the raw response) and the message path. Refusals are JSON error bodies with
// a WWW-Authenticate challenge; mutating calls are written to the audit trail when their
// reply is finished (status known). Public message paths are passed on synchronously.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServiceAccess } from '../../protocol/index.ts';
import type { NewAuditEntry } from '../registry/index.ts';
import { isMutating, requirementFor, type Requirement } from './policy.ts';
import { credentialOf, mayInvoke, roleAllows } from './token.ts';
import type { Principal, TokenVerifier } from './verifier.ts';

export interface AuthGateOptions {
  verifier: TokenVerifier;
  /** Image pulls (/v2/ reads, inspect, resolve) without a token. Default true. */
  anonymousPull?: boolean;
  /** A service's or a farm's consumer access; undefined when unknown (its handler answers 404). */
  access?(kind: 'service' | 'farm', name: string): ServiceAccess | undefined | Promise<ServiceAccess | undefined>;
  /** Where audit entries go (the registry, or the standalone store's file). */
  audit(entry: NewAuditEntry): Promise<unknown>;
  log: { warn(obj: object, msg?: string): void };
  /**
   * A browser session (the dashboard's cookie), tried when the request sends no token:
   * undefined when it has none; a refusal when it is stale or a change lacks its CSRF proof.
   */
  session?(req: IncomingMessage): Promise<SessionCheck | undefined>;
}

export type SessionCheck = { ok: true; principal: Principal } | { ok: false; status: 401 | 403; reason: string };

export interface AuthGate {
  /** Calls `next` when the request may go on; answers 401/403 itself otherwise. */
  handle(req: IncomingMessage, res: ServerResponse, next: () => void): void;
}

interface AuditDraft {
  service?: string;
}
const drafts = new WeakMap<IncomingMessage, AuditDraft>();

/** A handler names the service a call touched when the path does not (POST /api/v1/services). */
export function noteAuditService(req: IncomingMessage | undefined, service: string): void {
  const d = req === undefined ? undefined : drafts.get(req);
  if (d !== undefined) d.service = service;
}

export function createAuthGate(options: AuthGateOptions): AuthGate {
  const anonymousPull = options.anonymousPull ?? true;

  function audit(req: IncomingMessage, res: ServerResponse, route: string, principal: Principal | undefined, service: string | undefined): void {
    const draft: AuditDraft = service === undefined ? {} : { service };
    drafts.set(req, draft);
    const started = Date.now();
    res.once('close', () => {
      const entry: NewAuditEntry = {
        at: started,
        ...(principal === undefined ? {} : { tokenId: principal.tokenId, role: principal.role }),
        method: req.method ?? '?',
        route,
        path: (req.url ?? '/').split('?', 1)[0]!.slice(0, 2048),
        ...(draft.service === undefined ? {} : { service: draft.service }),
        ...(req.socket.remoteAddress === undefined ? {} : { address: req.socket.remoteAddress }),
        // A reply that never finished (the caller went away) is recorded as 499.
        status: res.writableFinished ? res.statusCode : 499,
      };
      options.audit(entry).catch((e: unknown) => options.log.warn({ err: String(e), ...entry }, 'audit: could not record a call'));
    });
  }

  function refuse(req: IncomingMessage, res: ServerResponse, status: 401 | 403, message: string, bearerRealm = true): void {
    const body = JSON.stringify({ error: { code: status === 401 ? 'unauthorized' : 'forbidden', message, field: 'authorization' } });
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    if (status === 401) headers['www-authenticate'] = challenge(req, bearerRealm);
    if ((req.url ?? '').startsWith('/v2')) headers['docker-distribution-api-version'] = 'registry/2.0';
    res.writeHead(status, headers);
    res.end(body);
  }

  async function principalOf(req: IncomingMessage, fresh: boolean, fallback?: string): Promise<Principal | string> {
    const secret = credentialOf(req.headers) ?? fallback;
    if (secret === undefined) return 'missing token: send Authorization: Bearer <token> (shoal token create)';
    const v = await options.verifier.verify(secret, { fresh });
    return v.ok ? v.principal : `token ${v.reason}`;
  }

  async function checkRole(req: IncomingMessage, res: ServerResponse, next: () => void, need: Extract<Requirement, { kind: 'role' | 'pull' }>): Promise<void> {
    const role = need.kind === 'pull' ? 'read' : need.role;
    const mutating = isMutating(req.method ?? 'GET');
    const viaSession = options.session !== undefined && credentialOf(req.headers) === undefined ? await options.session(req) : undefined;
    if (viaSession !== undefined && !viaSession.ok) {
      if (mutating) audit(req, res, need.route, undefined, need.kind === 'role' ? need.service : undefined);
      return refuse(req, res, viaSession.status, viaSession.reason);
    }
    const p = viaSession?.ok ? viaSession.principal : await principalOf(req, true);
    const service = need.kind === 'role' ? need.service : undefined;
    if (typeof p === 'string') {
      if (mutating) audit(req, res, need.route, undefined, service);
      return refuse(req, res, 401, p);
    }
    if (mutating) audit(req, res, need.route, p, service);
    if (!roleAllows(p.role, role)) return refuse(req, res, 403, `this needs a ${role} token; token ${p.tokenId} is ${p.role}`);
    next();
  }

  async function checkConsumer(req: IncomingMessage, res: ServerResponse, next: () => void, kind: 'service' | 'farm', name: string): Promise<void> {
    // Farm instances' import sockets send the token their binding carries as the route token.
    const route = kind === 'farm' ? req.headers['x-shoal-route'] : undefined;
    const p = await principalOf(req, false, typeof route === 'string' ? route : undefined);
    if (typeof p === 'string') return refuse(req, res, 401, `${kind} ${name} takes tokens only: ${p}`);
    if (!mayInvoke(p.role, p.services, name)) return refuse(req, res, 403, `token ${p.tokenId} (${p.role}) may not call ${kind} ${name}`);
    next();
  }

  async function tokenEndpoint(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // docker-style clients given a Bearer challenge fetch a token from its realm with their
    // credentials (basic, the API token as the password); the API token is the bearer token.
    const secret = credentialOf(req.headers);
    if (secret === undefined) {
      // Anonymous clients get a token that opens nothing but what anonymous pulls already may.
      if (anonymousPull) return sendJson(res, 200, { token: 'anonymous', access_token: 'anonymous', expires_in: 300 });
      return refuse(req, res, 401, 'send your API token as the password (basic auth)', false);
    }
    const v = await options.verifier.verify(secret, { fresh: true });
    if (!v.ok) return refuse(req, res, 401, `token ${v.reason}`, false);
    sendJson(res, 200, { token: secret, access_token: secret, expires_in: 300 });
  }

  function run(req: IncomingMessage, res: ServerResponse, next: () => void): void | Promise<void> {
    const method = req.method ?? 'GET';
    const need = requirementFor(method, req.url ?? '/');
    switch (need.kind) {
      case 'open':
        return next();
      case 'join':
        audit(req, res, need.route, undefined, undefined);
        return next();
      case 'pull':
        // GET /v2/ without credentials is how docker-style clients ask for the challenge; a
        // 200 there would make them send no credentials to the pushes that follow.
        if (need.route === '/v2/' && credentialOf(req.headers) === undefined) return refuse(req, res, 401, 'the registry takes API tokens (anonymous pulls need no token, pushes do)');
        if (anonymousPull) return next();
        return checkRole(req, res, next, need);
      case 'role':
        return checkRole(req, res, next, need);
      case 'token-endpoint':
        return tokenEndpoint(req, res);
      case 'service':
      case 'farm': {
        const access = options.access?.(need.kind, need.kind === 'service' ? need.service : need.farm) ?? 'token';
        const name = need.kind === 'service' ? need.service : need.farm;
        if (access === 'public' || access === undefined) return next();
        if (access === 'token') return checkConsumer(req, res, next, need.kind, name);
        return access.then((a) => (a === 'token' ? checkConsumer(req, res, next, need.kind, name) : next()));
      }
      default: {
        const never: never = need;
        throw new Error(`unhandled requirement ${JSON.stringify(never)}`);
      }
    }
  }

  return {
    handle(req, res, next) {
      let pending: void | Promise<void>;
      try {
        pending = run(req, res, next);
      } catch (e) {
        pending = Promise.reject(e);
      }
      pending?.catch((e: unknown) => {
        options.log.warn({ err: String(e), method: req.method, path: req.url }, 'auth: checking a request failed');
        if (res.headersSent) return void res.destroy();
        const body = JSON.stringify({ error: { code: 'unavailable', message: 'could not check the credentials now; try again' } });
        res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
    },
  };
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function challenge(req: IncomingMessage, bearer: boolean): string {
  if (!bearer) return 'Basic realm="shoal"';
  const proto = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  const host = req.headers.host ?? 'localhost';
  return (req.url ?? '').startsWith('/v2') ? `Bearer realm="${proto}://${host}/v2/token",service="shoal"` : 'Bearer realm="shoal"';
}
