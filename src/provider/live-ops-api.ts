// The live-state operations over HTTP (deploy role; audited by the gate like every change):
//   POST   /api/v1/instances/:id/pause | resume | fork
//   POST   /api/v1/instances/:id/snapshot  {"label"?, "ttlSeconds"?}   → 201 {state}
//   POST   /api/v1/instances/:id/suspend   {"ttlSeconds"?}             → 201 {state}
//   GET    /api/v1/states[?service=]                                   (read role)
//   POST   /api/v1/states/:id/restore      {"host"?}                   → 201 {instance, host}
//   DELETE /api/v1/states/:id
// A driver without the capability is a 409-class refusal naming it (src/provider/live-ops.ts).
import { Hono, type Context } from 'hono';
import { ShoalError } from '../protocol/index.ts';
import { forkInstance, pauseInstance, restoreState, resumeInstance, snapshotInstance, suspendInstance, type LiveOpsDeps } from './live-ops.ts';
import type { SavedStateRecord } from './registry/index.ts';
import type { RouteEndpoint } from './routing-table.ts';

const MAX_TTL_SECONDS = 366 * 24 * 3600;

async function bodyOf(c: Context): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (text.length > 16 * 1024) throw new ShoalError('too-large', 'the body is larger than 16 KiB', { field: 'body' });
  if (text.trim() === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ShoalError('invalid', 'the body is not JSON', { field: 'body' });
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ShoalError('invalid', 'the body must be a JSON object', { field: 'body' });
  return v as Record<string, unknown>;
}

function ttlOf(body: Record<string, unknown>): number | undefined {
  const t = body.ttlSeconds;
  if (t === undefined) return undefined;
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > MAX_TTL_SECONDS) throw new ShoalError('invalid', `ttlSeconds: an integer from 1 to ${MAX_TTL_SECONDS}`, { field: 'ttlSeconds' });
  return t * 1000;
}

function stringField(body: Record<string, unknown>, name: string, pattern: RegExp, what: string): string | undefined {
  const v = body[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !pattern.test(v)) throw new ShoalError('invalid', `${name}: ${what}`, { field: name });
  return v;
}

const instanceView = (ep: RouteEndpoint) => ({ id: ep.id, service: ep.service, version: ep.version, host: ep.hostId, deployment: ep.deploymentId });
export const stateView = (s: SavedStateRecord) => ({
  id: s.id,
  service: s.service,
  version: s.version,
  digest: s.digest,
  size: s.size,
  driver: s.driver,
  reason: s.reason,
  ...(s.label === undefined ? {} : { label: s.label }),
  ...(s.sourceInstance === undefined ? {} : { sourceInstance: s.sourceInstance }),
  ...(s.sourceHost === undefined ? {} : { sourceHost: s.sourceHost }),
  createdAt: s.createdAt,
  ...(s.expiresAt === undefined ? {} : { expiresAt: s.expiresAt }),
});

export function createLiveOpsApi(deps: LiveOpsDeps): Hono {
  const app = new Hono();
  app.post('/api/v1/instances/:id/pause', async (c) => {
    await pauseInstance(deps, c.req.param('id'));
    return c.json({ paused: c.req.param('id') });
  });
  app.post('/api/v1/instances/:id/resume', async (c) => c.json({ instance: instanceView(await resumeInstance(deps, c.req.param('id'))) }));
  app.post('/api/v1/instances/:id/fork', async (c) => c.json({ instance: instanceView(await forkInstance(deps, c.req.param('id'))) }, 201));
  app.post('/api/v1/instances/:id/snapshot', async (c) => {
    const body = await bodyOf(c);
    const label = stringField(body, 'label', /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'letters, digits, ".", "_" or "-", up to 63');
    const ttlMs = ttlOf(body);
    const state = await snapshotInstance(deps, c.req.param('id'), { ...(label === undefined ? {} : { label }), ...(ttlMs === undefined ? {} : { ttlMs }) });
    return c.json({ state: stateView(state) }, 201);
  });
  app.post('/api/v1/instances/:id/suspend', async (c) => {
    const ttlMs = ttlOf(await bodyOf(c));
    const state = await suspendInstance(deps, c.req.param('id'), ttlMs === undefined ? {} : { ttlMs });
    return c.json({ state: stateView(state) }, 201);
  });
  app.get('/api/v1/states', async (c) => {
    const service = c.req.query('service');
    const states = await deps.registry.listStates({ ...(service === undefined ? {} : { service }), liveAt: Date.now() });
    return c.json({ states: states.map(stateView) });
  });
  app.post('/api/v1/states/:id/restore', async (c) => {
    const host = stringField(await bodyOf(c), 'host', /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, 'a host id');
    const ep = await restoreState(deps, c.req.param('id'), host === undefined ? {} : { host });
    return c.json({ instance: instanceView(ep) }, 201);
  });
  app.delete('/api/v1/states/:id', async (c) => {
    const id = c.req.param('id');
    if (!(await deps.registry.removeState(id))) throw new ShoalError('not-found', `no saved state ${JSON.stringify(id)}`, { field: 'id' });
    return c.json({ removed: id });
  });
  return app;
}
