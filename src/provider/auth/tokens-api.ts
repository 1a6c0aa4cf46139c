// /api/v1/tokens and /api/v1/audit (admin only: the gate checks the role before these run).
import { Hono, type Context } from 'hono';
import { Value } from '@sinclair/typebox/value';
import { TokenCreateBody, type TokenCreated, type TokenSummary, ShoalError } from '../../protocol/index.ts';
import type { ApiTokenRecord, AuditFilter, Registry } from '../registry/index.ts';
import { mintToken } from './token.ts';
import type { TokenVerifier } from './verifier.ts';

type TokenStore = Pick<Registry, 'createApiToken' | 'listApiTokens' | 'revokeApiToken' | 'listAudit'>;

/** Creates and stores a token; the secret is in the result only. */
export async function createApiToken(registry: Pick<Registry, 'createApiToken'>, body: TokenCreateBody, now = Date.now()): Promise<TokenCreated> {
  if (body.services !== undefined && body.role !== 'invoke') {
    throw new ShoalError('invalid', 'services limits invoke tokens only', { field: 'services' });
  }
  const minted = mintToken();
  const record = await registry.createApiToken({
    id: minted.id,
    hash: minted.hash,
    role: body.role,
    createdAt: now,
    ...(body.services === undefined ? {} : { services: body.services }),
    ...(body.note === undefined ? {} : { note: body.note }),
    ...(body.ttlSeconds === undefined ? {} : { expiresAt: now + body.ttlSeconds * 1000 }),
  });
  return { token: tokenSummary(record), secret: minted.secret };
}

export function tokenSummary(r: ApiTokenRecord): TokenSummary {
  return {
    id: r.id,
    role: r.role,
    ...(r.services === undefined ? {} : { services: r.services }),
    ...(r.note === undefined ? {} : { note: r.note }),
    createdAt: r.createdAt,
    ...(r.expiresAt === undefined ? {} : { expiresAt: r.expiresAt }),
    ...(r.revokedAt === undefined ? {} : { revokedAt: r.revokedAt }),
  };
}

export function createTokensApi(options: { registry: TokenStore; verifier: TokenVerifier }): Hono {
  const { registry, verifier } = options;
  const app = new Hono();

  app.get('/api/v1/tokens', async (c) => c.json({ tokens: (await registry.listApiTokens()).map(tokenSummary) }));

  app.post('/api/v1/tokens', async (c) => {
    const body = await jsonBody(c);
    if (!Value.Check(TokenCreateBody, body)) {
      const first = Value.Errors(TokenCreateBody, body).First();
      const field = (first?.path ?? '').replace(/^\//, '') || 'body';
      throw new ShoalError('invalid', `token: ${field}: ${first?.message ?? 'invalid'}`, { field });
    }
    return c.json(await createApiToken(registry, body), 201);
  });

  app.delete('/api/v1/tokens/:id', async (c) => {
    const id = c.req.param('id');
    if (!(await registry.revokeApiToken(id, Date.now()))) throw new ShoalError('not-found', `no live token ${JSON.stringify(id)}`, { field: 'id' });
    verifier.forget(id);
    return c.json({ revoked: id });
  });

  app.get('/api/v1/audit', async (c) => {
    const filter: AuditFilter = {};
    const service = c.req.query('service');
    if (service !== undefined) filter.service = service;
    const token = c.req.query('token');
    if (token !== undefined) filter.tokenId = token;
    for (const key of ['since', 'until', 'limit'] as const) {
      const text = c.req.query(key);
      if (text === undefined) continue;
      const n = key === 'limit' ? Number(text) : timeOf(text);
      if (!Number.isFinite(n)) throw new ShoalError('invalid', `${key}: epoch milliseconds or an ISO date${key === 'limit' ? ' (limit: a number)' : ''}, got ${JSON.stringify(text)}`, { field: key });
      filter[key] = n;
    }
    return c.json({ entries: await registry.listAudit(filter) });
  });

  return app;
}

function timeOf(text: string): number {
  return /^\d+$/.test(text) ? Number(text) : Date.parse(text);
}

async function jsonBody(c: Context): Promise<unknown> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/json\b/i.test(type)) throw new ShoalError('unsupported', 'send JSON (content-type application/json)', { field: 'content-type' });
  try {
    return JSON.parse(await c.req.text());
  } catch (e) {
    throw new ShoalError('invalid', `body: not JSON (${(e as Error).message})`, { field: 'body' });
  }
}
