// The dashboard's door: the web page at /ui (its files, the login that turns an API token
// into a session cookie, the live event stream) and the session check the provider's gate
// uses for the page's API calls. The provider wires it (src/provider/dashboard.ts); the
// page itself is web/, bundled by assets.ts.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createAssetSource, type AssetSource } from './assets.ts';
import { createEventFeed, type EventFeedOptions } from './event-feed.ts';
import { createDashboardHandler, handles } from './handler.ts';
import { createSessionStore, sessionOf, type DashboardTokens, type SessionVerdict } from './sessions.ts';

export { buildAssets, createAssetSource, OUT_DIR as DASHBOARD_ASSETS_DIR, type AssetSource, type BuildReport } from './assets.ts';
export { CSRF_HEADER, SESSION_COOKIE, type DashboardTokens, type SessionPrincipal, type SessionVerdict, type TokenCheck } from './sessions.ts';

export interface DashboardOptions {
  tokens: DashboardTokens;
  listEvents: EventFeedOptions['listEvents'];
  /** Cookies get Secure (HTTPS). */
  secure: boolean;
  log: { warn(obj: object, msg?: string): void };
  assets?: AssetSource;
  /** Session idle lifetime. Default 12 h. */
  sessionIdleMs?: number;
}

export interface Dashboard {
  handles(url: string): boolean;
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** A request's dashboard session (undefined: it has no session cookie). */
  session(req: IncomingMessage): Promise<SessionVerdict | undefined>;
  close(): void;
}

export function createDashboard(options: DashboardOptions): Dashboard {
  const sessions = createSessionStore(options.sessionIdleMs === undefined ? {} : { idleMs: options.sessionIdleMs });
  const feed = createEventFeed({ listEvents: options.listEvents, log: options.log });
  const handler = createDashboardHandler({ assets: options.assets ?? createAssetSource(), sessions, tokens: options.tokens, feed, secure: options.secure, log: options.log });
  return {
    handles,
    handle: (req, res) => void handler(req, res),
    session: (req) => sessionOf(req, sessions, options.tokens),
    close: () => feed.close(),
  };
}
