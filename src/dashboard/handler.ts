// /ui: the page, its files, the login (a token in, a session cookie out) and the live
// event stream. The provider's gate runs first (auth/policy.ts): the page and its files
// are open (they hold no data), the event stream needs a read role, and every API call
// the page makes goes to /api/v1/ with the session cookie, through the same gate.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AssetSource } from './assets.ts';
import type { EventFeed } from './event-feed.ts';
import { clearedCookie, cookieValue, CSRF_HEADER, originMatches, SESSION_COOKIE, sessionCookie, sessionOf, type DashboardTokens, type SessionStore } from './sessions.ts';

export const UI_PREFIX = '/ui';

export interface DashboardHandlerOptions {
  assets: AssetSource;
  sessions: SessionStore;
  tokens: DashboardTokens;
  feed: EventFeed;
  /** The cookie gets Secure (the provider serves HTTPS). */
  secure: boolean;
  log: { warn(obj: object, msg?: string): void };
}

// The page loads only its own files and talks only to its own server.
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

function json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...headers });
  res.end(body);
}

function fail(res: ServerResponse, status: number, code: string, message: string, field: string, headers: Record<string, string> = {}): void {
  json(res, status, { error: { code, message, field } }, headers);
}

async function readBody(req: IncomingMessage, max: number): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new Error('too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function handles(url: string): boolean {
  return url === UI_PREFIX || url.startsWith(`${UI_PREFIX}/`) || url.startsWith(`${UI_PREFIX}?`);
}

export function createDashboardHandler(o: DashboardHandlerOptions): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  async function login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!originMatches(req)) return fail(res, 403, 'forbidden', 'cross-origin login refused', 'origin');
    if (!/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '')) return fail(res, 415, 'unsupported', 'send {"token": "..."} with content-type: application/json', 'content-type');
    let token: unknown;
    try {
      token = (JSON.parse(await readBody(req, 16 * 1024)) as { token?: unknown } | null)?.token;
    } catch {
      return fail(res, 400, 'invalid', 'body: not JSON of at most 16 KiB', 'body');
    }
    if (typeof token !== 'string' || token.trim() === '') return fail(res, 400, 'invalid', 'token: give an API token (shoal_<id>_<secret>)', 'token');
    const v = await o.tokens.verify(token.trim());
    if (!v.ok) return fail(res, 401, 'unauthorized', `token ${v.reason}`, 'token');
    if (v.principal.role === 'invoke') return fail(res, 403, 'forbidden', 'invoke tokens call services only: log in with a read, deploy or admin token', 'token');
    const old = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (old !== undefined) o.sessions.drop(old);
    const s = o.sessions.open(v.principal.tokenId);
    json(res, 201, { tokenId: v.principal.tokenId, role: v.principal.role, csrf: s.csrf }, { 'set-cookie': sessionCookie(s.id, o.secure) });
  }

  async function whoami(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const v = await sessionOf(req, o.sessions, o.tokens);
    if (v === undefined) return fail(res, 401, 'unauthorized', 'not logged in', 'cookie');
    if (!v.ok) return fail(res, v.status, v.status === 401 ? 'unauthorized' : 'forbidden', v.reason, v.field, v.status === 401 ? { 'set-cookie': clearedCookie(o.secure) } : {});
    json(res, 200, { tokenId: v.principal.tokenId, role: v.principal.role, csrf: v.session.csrf });
  }

  async function logout(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const v = await sessionOf(req, o.sessions, o.tokens);
    if (v !== undefined && !v.ok && v.status === 403) return fail(res, 403, 'forbidden', v.reason, v.field);
    if (v?.ok) o.sessions.drop(v.session.id);
    json(res, 200, { loggedOut: true }, { 'set-cookie': clearedCookie(o.secure) });
  }

  async function file(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    const asset = await o.assets.get(name);
    if (asset === undefined) return fail(res, 404, 'not-found', `no file ${name} in the dashboard`, 'path');
    const headers = { 'content-type': asset.type, etag: asset.etag, 'cache-control': 'no-cache', ...PAGE_HEADERS };
    if (req.headers['if-none-match'] === asset.etag) {
      res.writeHead(304, headers);
      return void res.end();
    }
    res.writeHead(200, { ...headers, 'content-length': asset.body.length });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?', 1)[0]!;
    const method = req.method ?? 'GET';
    if (path === UI_PREFIX) {
      res.writeHead(302, { location: `${UI_PREFIX}/` });
      return void res.end();
    }
    const rest = path.slice(UI_PREFIX.length + 1);
    if (rest === 'session') {
      if (method === 'POST') return login(req, res);
      if (method === 'GET') return whoami(req, res);
      if (method === 'DELETE') return logout(req, res);
      return fail(res, 405, 'invalid', `${method} /ui/session: use GET, POST or DELETE`, 'method');
    }
    if (rest === 'events') {
      if (method !== 'GET') return fail(res, 405, 'invalid', 'the event stream is read with GET', 'method');
      return o.feed.attach(req, res);
    }
    if (method !== 'GET' && method !== 'HEAD') return fail(res, 405, 'invalid', `${method} ${path}: the page's files are read with GET`, 'method');
    if (rest === '') return file(req, res, 'index.html');
    const m = /^assets\/([a-z0-9-]+\.(?:js|css))$/.exec(rest);
    if (m !== null) return file(req, res, m[1]!);
    return fail(res, 404, 'not-found', `no page ${path}`, 'path');
  }

  return async (req, res) => {
    try {
      await route(req, res);
    } catch (e) {
      o.log.warn({ err: String((e as Error)?.message ?? e), path: req.url }, 'dashboard: a request failed');
      if (res.headersSent) return void res.destroy();
      fail(res, 503, 'unavailable', String((e as Error)?.message ?? e), 'path');
    }
  };
}

export { CSRF_HEADER };
