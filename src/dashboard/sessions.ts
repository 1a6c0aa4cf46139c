// Browser sessions for the dashboard: a random session id (the HttpOnly cookie) maps to
// the API token it was opened with, by token id only (the secret is never kept). Every
// use re-reads the token (`check`), so revoking or expiring it ends its sessions. State
// changes made with a session need its CSRF token in a header, and an Origin, when sent,
// naming this server: SameSite=Strict already keeps the cookie off cross-site requests,
// and this keeps it off same-site pages of other ports too.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ApiRole } from '../protocol/index.ts';

export const SESSION_COOKIE = 'shoal_session';
export const CSRF_HEADER = 'x-shoal-csrf';

export interface SessionPrincipal {
  tokenId: string;
  role: ApiRole;
  services?: readonly string[];
}

export type TokenCheck = { ok: true; principal: SessionPrincipal } | { ok: false; reason: string };

/** What the dashboard needs from the provider's tokens (it does not know the registry). */
export interface DashboardTokens {
  /** A presented API token (the login form). */
  verify(secret: string): Promise<TokenCheck>;
  /** The token behind a session, read fresh: revoked, expired or unknown ones fail. */
  check(tokenId: string): Promise<TokenCheck>;
}

export interface Session {
  id: string;
  tokenId: string;
  csrf: string;
  createdAt: number;
  lastUsed: number;
}

export type SessionVerdict = { ok: true; principal: SessionPrincipal; session: Session } | { ok: false; status: 401 | 403; reason: string; field: string };

export interface SessionStore {
  open(tokenId: string): Session;
  get(id: string): Session | undefined;
  drop(id: string): void;
  size(): number;
}

export function createSessionStore(options: { idleMs?: number; maxSessions?: number; maxPerToken?: number; now?: () => number } = {}): SessionStore {
  const idleMs = options.idleMs ?? 12 * 3600_000;
  const max = options.maxSessions ?? 10_000;
  // One token's logins cannot push everyone else's sessions out: past this many, its own oldest go.
  const maxPerToken = options.maxPerToken ?? 16;
  const now = options.now ?? Date.now;
  const sessions = new Map<string, Session>();
  return {
    open(tokenId) {
      const own = [...sessions.values()].filter((s) => s.tokenId === tokenId);
      for (const s of own.slice(0, Math.max(0, own.length - maxPerToken + 1))) sessions.delete(s.id);
      if (sessions.size >= max) {
        // The oldest go first (Map keeps insertion order).
        for (const id of [...sessions.keys()].slice(0, Math.ceil(max / 10))) sessions.delete(id);
      }
      const t = now();
      const s: Session = { id: randomBytes(32).toString('base64url'), tokenId, csrf: randomBytes(24).toString('base64url'), createdAt: t, lastUsed: t };
      sessions.set(s.id, s);
      return s;
    },
    get(id) {
      const s = sessions.get(id);
      if (s === undefined) return undefined;
      const t = now();
      if (t - s.lastUsed > idleMs) {
        sessions.delete(id);
        return undefined;
      }
      s.lastUsed = t;
      return s;
    },
    drop(id) {
      sessions.delete(id);
    },
    size: () => sessions.size,
  };
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function sessionCookie(id: string, secure: boolean): string {
  return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}

export function clearedCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure ? '; Secure' : ''}`;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** An Origin header, when present, must name the server the request came to (its Host). */
export function originMatches(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return new URL(origin).host.toLowerCase() === (req.headers.host ?? '').toLowerCase();
  } catch {
    return false;
  }
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The session a request carries, if any: undefined when it has no session cookie (the gate
 * then asks for a token as usual). State-changing methods need the CSRF header and a
 * matching Origin.
 */
export async function sessionOf(req: IncomingMessage, store: SessionStore, tokens: DashboardTokens): Promise<SessionVerdict | undefined> {
  const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
  if (id === undefined || id === '') return undefined;
  const session = store.get(id);
  if (session === undefined) return { ok: false, status: 401, reason: 'the dashboard session is unknown or expired: log in again at /ui/', field: 'cookie' };
  const checked = await tokens.check(session.tokenId);
  if (!checked.ok) {
    store.drop(id);
    return { ok: false, status: 401, reason: `the session's token ${session.tokenId} is ${checked.reason}: log in again at /ui/`, field: 'cookie' };
  }
  if (!SAFE.has(req.method ?? 'GET')) {
    const sent = req.headers[CSRF_HEADER];
    if (typeof sent !== 'string' || !sameSecret(sent, session.csrf)) {
      return { ok: false, status: 403, reason: `a change made with a dashboard session needs its CSRF token in the ${CSRF_HEADER} header`, field: CSRF_HEADER };
    }
    if (!originMatches(req)) return { ok: false, status: 403, reason: 'cross-origin request refused', field: 'origin' };
  }
  return { ok: true, principal: checked.principal, session };
}
