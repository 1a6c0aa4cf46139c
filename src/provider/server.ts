// The provider's HTTP face. One node:http server:
//   /s/…              the message path (router.ts: plain node:http, no framework)
//   /v2/…, store API  the image store's own app, when it is mounted here (`shoal up`)
//   everything else   the control API (Hono): /api/v1/…, /openapi.json, /metrics, /healthz
// Error codes become HTTP statuses here and only here (httpStatusFor).
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createListener, hardenServer, type TlsIdentity } from '../http/index.ts';
import { Readable } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { Value } from '@sinclair/typebox/value';
import type { Activator } from './activator/index.ts';
import { createTokensApi, noteAuditService, type AuthGate, type TokenVerifier } from './auth/index.ts';
import type { InFlightTracker } from './balancer/index.ts';
import type { ControlPlane } from './control-plane.ts';
import { publicHost, type HostPool } from './host-pool.ts';
import type { ProviderMetrics } from './metrics.ts';
import { providerOpenApi } from './openapi.ts';
import type { DeploymentRecord, DeploymentState, Registry } from './registry/index.ts';
import { MESSAGE_PREFIX, type Router } from './router.ts';
import type { RoutingTable } from './routing-table.ts';
import type { MigrationResult } from './migration.ts';
import {
  ShoalError,
  errorReply,
  httpStatusFor,
  isShoalError,
  DeployRequestBody,
  HostRegistrationBody,
  type DeploymentSummary,
  type DriverCapabilities,
  type HostSummary,
  type InstanceSummary,
  type ServiceSummary,
} from '../protocol/index.ts';
import { checkRegistryHost, type ForeignImages } from './foreign-images.ts';

/** Anything with Hono's fetch signature: the store's app. */
export interface MountedApp {
  fetch(request: Request, env?: unknown): Response | Promise<Response>;
}

export interface ProviderApiOptions {
  registry: Registry;
  table: RoutingTable;
  pool: HostPool;
  /** Registering, removing and deploying: the handlers only translate HTTP to these calls. */
  control: ControlPlane;
  tracker: InFlightTracker;
  activator: Pick<Activator, 'queued'>;
  metrics: ProviderMetrics;
  joinToken: string;
  providerId: string;
  version: string;
  /** The store app mounted beside the provider (its API paths go into /openapi.json). */
  store?: MountedApp;
  /** Credentials for other registries (/api/v1/registry-logins; foreign-images.ts). */
  registries?: Pick<ForeignImages, 'login' | 'logout' | 'logins'>;
  /** Serves /api/v1/tokens (revocations drop its cached verdicts). */
  verifier: TokenVerifier;
  /** Moves a running instance to another host with its state (migration.ts). */
  migrate?: (instanceId: string, options: { host?: string }) => Promise<MigrationResult>;
  log: { warn(obj: object, msg?: string): void };
}

const STATES: readonly DeploymentState[] = ['pending', 'deploying', 'ready', 'failed', 'stopped'];

export function createProviderApi(options: ProviderApiOptions): Hono {
  const { registry, table, pool, control, tracker, activator, metrics } = options;
  if (options.joinToken.length < 8) throw new ShoalError('invalid', 'the join token must be at least 8 characters', { field: 'joinToken' });
  const joinHash = createHash('sha256').update(options.joinToken).digest();
  const app = new Hono();

  app.onError((err, c) => {
    const { status, body } = errorReply(err);
    if (body.error.code === 'internal') options.log.warn({ err: String((err as Error)?.stack ?? err) }, 'control API error');
    return c.json(body, status as 400);
  });
  app.notFound(async (c) => {
    if (options.store) return options.store.fetch(c.req.raw, c.env);
    return replyError(c, new ShoalError('not-found', `no route ${c.req.method} ${c.req.path}`));
  });

  app.route('/', createTokensApi({ registry, verifier: options.verifier }));
  app.get('/healthz', (c) => c.json({ ok: true, provider: options.providerId }));
  let storePaths: Record<string, unknown> | undefined;
  app.get('/openapi.json', async (c) => {
    if (options.store && storePaths === undefined) {
      try {
        const doc = (await (await options.store.fetch(new Request('http://store/openapi.json'))).json()) as { paths?: Record<string, unknown> };
        storePaths = Object.fromEntries(Object.entries(doc.paths ?? {}).filter(([p]) => p !== '/healthz' && p !== '/openapi.json'));
      } catch (e) {
        options.log.warn({ err: String((e as Error)?.message ?? e) }, "reading the mounted store's OpenAPI document failed; its paths are left out");
        storePaths = {};
      }
    }
    return c.json(providerOpenApi(options.version, storePaths ?? {}));
  });
  app.get('/metrics', async (c) => {
    const { contentType, body } = await metrics.render();
    return c.body(body, 200, { 'content-type': contentType });
  });

  const joinOnly = async (c: Context, next: () => Promise<void>): Promise<Response | void> => {
    const m = /^Bearer\s+(.+)$/i.exec(c.req.header('authorization') ?? '');
    const given = createHash('sha256').update(m?.[1]?.trim() ?? '').digest();
    if (!m || !timingSafeEqual(given, joinHash)) {
      c.header('www-authenticate', 'Bearer realm="shoal-provider"');
      return replyError(c, new ShoalError('unauthorized', m ? 'wrong join token' : 'missing join token: send Authorization: Bearer <join token>'));
    }
    await next();
  };
  const limit = bodyLimit({ maxSize: 4 * 1024 * 1024, onError: (c) => replyError(c, new ShoalError('too-large', 'request body larger than 4 MiB')) });

  // ---- other registries' credentials (admin; the password never comes back out) ----

  const registries = options.registries;
  if (registries !== undefined) {
    app.get('/api/v1/registry-logins', async (c) => c.json({ logins: await registries.logins() }));
    app.put('/api/v1/registry-logins/:host', limit, async (c) => {
      const body = (await readJson(c)) as { username?: unknown; password?: unknown } | null;
      if (typeof body?.username !== 'string') throw new ShoalError('invalid', 'username: a string is required', { field: 'username' });
      if (typeof body.password !== 'string') throw new ShoalError('invalid', 'password: a string is required', { field: 'password' });
      const host = c.req.param('host');
      await registries.login(host, { username: body.username, password: body.password });
      return c.json({ host: checkRegistryHost(host), username: body.username });
    });
    app.delete('/api/v1/registry-logins/:host', async (c) => {
      const host = c.req.param('host');
      if (!(await registries.logout(host))) throw new ShoalError('not-found', `no login kept for ${checkRegistryHost(host)}`, { field: 'host' });
      return c.json({ removed: checkRegistryHost(host) });
    });
  }

  // ---- services ----

  app.post('/api/v1/services', limit, async (c) => {
    const body = await readJson(c);
    // The audit row names the service even when the registration is refused.
    const name = (body as { name?: unknown } | null)?.name;
    if (typeof name === 'string') noteAuditService((c.env as { incoming?: IncomingMessage } | undefined)?.incoming, name);
    const { service, created } = await control.registerService(body);
    return c.json({ service }, created ? 201 : 200);
  });

  app.get('/api/v1/services', async (c) => {
    const records = await registry.listServices();
    const services: ServiceSummary[] = records.map((r) => ({
      name: r.name,
      version: r.version,
      operations: Object.keys(r.description.operations),
      image: r.description.image,
      ready: table.endpoints(r.name).length,
      queued: activator.queued(r.name),
      createdAt: r.createdAt,
      updatedAt: r.updatedAt,
    }));
    return c.json({ services });
  });

  app.get('/api/v1/services/:name', async (c) => {
    const name = c.req.param('name');
    const record = await registry.getService(name);
    if (record === undefined) throw new ShoalError('not-found', `no service named ${JSON.stringify(name)}`, { field: 'name' });
    const versions = (await registry.listServiceVersions(name)).map((v) => ({ version: v.version, current: v.current, createdAt: v.createdAt }));
    const deployments = (await registry.listDeployments({ service: name })).slice(-20).map(summary);
    const instances = table.endpoints(name).map((e) => ({ id: e.id, hostId: e.hostId, version: e.version, inFlight: tracker.count(e.id), readyAt: e.readyAt, deploymentId: e.deploymentId }));
    return c.json({ service: record, versions, instances, queued: activator.queued(name), deployments });
  });

  app.delete('/api/v1/services/:name', async (c) => {
    const name = c.req.param('name');
    const { stopped } = await control.removeService(name);
    return c.json({ removed: name, stopped });
  });

  app.post('/api/v1/services/:name/deployments', limit, async (c) => {
    const name = c.req.param('name');
    const text = await c.req.text();
    const body = text.trim() === '' ? {} : parseJson(text);
    if (!Value.Check(DeployRequestBody, body)) {
      const first = Value.Errors(DeployRequestBody, body).First();
      throw new ShoalError('invalid', `deploy request: ${first?.path || 'body'}: ${first?.message ?? 'invalid'}`, { field: first?.path || 'body' });
    }
    const outcome = await control.deploy(name, { count: body.count ?? 1 });
    if (outcome.deferred) {
      throw new ShoalError('conflict', `service ${name} has a deployment in flight (${outcome.deferred.id}, by ${outcome.deferred.claimedBy ?? '?'}); try again when it is done`, { field: 'name' });
    }
    return c.json({ deployments: outcome.deployments.map(summary), errors: outcome.errors }, outcome.ready.length > 0 ? 201 : 503);
  });

  // ---- hosts ----

  app.post('/api/v1/hosts', joinOnly, limit, async (c) => {
    const body = await readJson(c);
    if (!Value.Check(HostRegistrationBody, body)) {
      const first = Value.Errors(HostRegistrationBody, body).First();
      const field = (first?.path ?? '').replace(/^\//, '') || 'body';
      throw new ShoalError('invalid', `host registration: ${field}: ${first?.message ?? 'invalid'}`, { field });
    }
    const host = await control.registerHost(body);
    const record = await registry.getHost(host.id);
    return c.json(hostSummary(record ? publicHost(record) : undefined, host.id), 201);
  });

  app.get('/api/v1/hosts', async (c) => {
    const records = await registry.listHosts();
    return c.json({ hosts: records.map((r) => hostSummary(publicHost(r), r.id)) });
  });

  app.delete('/api/v1/hosts/:id', joinOnly, async (c) => {
    const id = c.req.param('id') ?? '';
    if (!(await control.removeHost(id))) throw new ShoalError('not-found', `no host ${JSON.stringify(id)}`, { field: 'id' });
    return c.json({ removed: id });
  });

  function hostSummary(record: Awaited<ReturnType<Registry['getHost']>>, id: string): HostSummary {
    const live = pool.get(id);
    if (record === undefined) throw new ShoalError('not-found', `no host ${JSON.stringify(id)}`);
    return {
      id: record.id,
      state: record.state,
      controlUrl: record.controlUrl,
      dataUrl: record.dataUrl,
      labels: record.labels,
      lastSeen: record.lastSeen,
      registeredAt: record.registeredAt,
      following: live?.following ?? false,
      ...(record.lastReport === undefined ? {} : { report: record.lastReport }),
    };
  }

  // ---- deployments, instances, events ----

  app.get('/api/v1/deployments', async (c) => {
    const service = c.req.query('service');
    const state = c.req.query('state');
    if (state !== undefined && !STATES.includes(state as DeploymentState)) {
      throw new ShoalError('invalid', `state must be one of ${STATES.join(', ')}`, { field: 'state' });
    }
    if (service !== undefined && (await registry.getService(service)) === undefined && (await registry.listDeployments({ service })).length === 0) {
      throw new ShoalError('not-found', `no service named ${JSON.stringify(service)}`, { field: 'service' });
    }
    const records = await registry.listDeployments({
      ...(service === undefined ? {} : { service }),
      ...(state === undefined ? {} : { state: state as DeploymentState }),
    });
    return c.json({ deployments: records.map(summary) });
  });

  app.get('/api/v1/instances', async (c) => {
    const ready = await registry.listDeployments({ state: ['ready', 'pending', 'deploying'] });
    const byInstance = new Map(ready.filter((d) => d.instanceId).map((d) => [d.instanceId!, d]));
    const unreachable: string[] = [];
    const instances: InstanceSummary[] = [];
    await Promise.all(
      pool.list().map(async (host) => {
        if (host.state === 'dead') {
          unreachable.push(host.id);
          return;
        }
        const list = await host.client.list().catch((e: unknown) => {
          options.log.warn({ host: host.id, err: String((e as Error)?.message ?? e) }, 'listing the instances of a host failed');
          return undefined;
        });
        if (list === undefined) {
          unreachable.push(host.id);
          return;
        }
        for (const i of list) {
          const d = byInstance.get(i.id);
          instances.push({
            id: i.id,
            service: i.service.name,
            version: i.service.version,
            hostId: host.id,
            state: i.state,
            driver: i.driver,
            createdAt: i.createdAt,
            routable: table.endpoint(i.id) !== undefined,
            inFlight: tracker.count(i.id),
            ...(d === undefined ? {} : { deploymentId: d.id }),
            memoryMb: i.resources.memoryMb,
            cpuMillis: i.resources.cpuMillis,
            ...liveOpsOf(host.report?.drivers.find((x) => x.name === i.driver)?.capabilities),
          });
        }
      }),
    );
    instances.sort((a, b) => a.service.localeCompare(b.service) || a.createdAt - b.createdAt);
    return c.json({ instances, unreachable });
  });

  // The log of one instance, from the host that runs it (a read token is enough).
  app.post('/api/v1/instances/:id/migrate', async (c) => {
    const id = c.req.param('id');
    if (!options.migrate) throw new ShoalError('unsupported', 'this provider cannot move instances', { field: 'id' });
    const text = await c.req.text();
    const body = (text.trim() === '' ? {} : parseJson(text)) as { host?: unknown };
    if (body === null || typeof body !== 'object' || (body.host !== undefined && typeof body.host !== 'string')) throw new ShoalError('invalid', 'migrate: body.host must be a host id', { field: 'host' });
    return c.json(await options.migrate(id, body.host === undefined ? {} : { host: body.host }), 201);
  });

  app.get('/api/v1/instances/:id/logs', async (c) => {
    const id = c.req.param('id');
    const raw = c.req.query('tail') ?? '100';
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 10_000) throw new ShoalError('invalid', `tail must be an integer from 1 to 10000, got ${JSON.stringify(raw)}`, { field: 'tail' });
    const follow = c.req.query('follow') === '1';
    const known = (await registry.listDeployments({ state: ['ready', 'pending', 'deploying'] })).find((d) => d.instanceId === id && d.hostId !== undefined);
    const candidates = known ? [pool.get(known.hostId!)].filter((h) => h !== undefined) : pool.list().filter((h) => h.state !== 'dead');
    for (const host of candidates) {
      const there = known ? true : await host.client.get(id).then(
        (info) => info !== undefined,
        (e: unknown) => {
          options.log.warn({ host: host.id, instance: id, err: String((e as Error)?.message ?? e) }, 'asking a host for an instance failed');
          return false;
        },
      );
      if (!there) continue;
      const res = await host.client.logs(id, { tail: Number(raw), follow, signal: c.req.raw.signal });
      return new Response(Readable.toWeb(res) as ReadableStream, { headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' } });
    }
    throw new ShoalError('not-found', `no instance ${JSON.stringify(id)} on any reachable host`, { field: 'id' });
  });

  app.get('/api/v1/events', async (c) => {
    const service = c.req.query('service');
    const after = c.req.query('after');
    const limitText = c.req.query('limit');
    const kind = c.req.query('kind');
    const events = await registry.listEvents({
      ...(service === undefined ? {} : { service }),
      ...(kind === undefined ? {} : { kind }),
      ...(after === undefined ? {} : { afterId: Number(after) }),
      ...(limitText === undefined ? {} : { limit: Number(limitText) }),
    });
    return c.json({ events });
  });

  return app;
}

/** A deployment as the API shows it: without its route token. */
export function summary(d: DeploymentRecord): DeploymentSummary {
  const { token: _token, ...endpoint } = d.endpoint ?? ({} as Record<string, unknown>);
  return {
    id: d.id,
    service: d.service,
    version: d.version,
    state: d.state,
    ...(d.hostId === undefined ? {} : { hostId: d.hostId }),
    ...(d.instanceId === undefined ? {} : { instanceId: d.instanceId }),
    ...(d.endpoint === undefined ? {} : { endpoint: endpoint as DeploymentSummary['endpoint'] }),
    ...(d.timeline === undefined ? {} : { timeline: d.timeline }),
    ...(d.error === undefined ? {} : { error: d.error }),
    ...(d.claimedBy === undefined ? {} : { claimedBy: d.claimedBy }),
    createdAt: d.createdAt,
    updatedAt: d.updatedAt,
  };
}

/** The live operations a driver's capabilities allow, as GET /api/v1/instances lists them. */
function liveOpsOf(c: DriverCapabilities | undefined): Pick<InstanceSummary, 'liveOps'> {
  if (c === undefined) return {};
  const ops: NonNullable<InstanceSummary['liveOps']> = [];
  if (c.canPause) ops.push('pause');
  if (c.canSnapshot) ops.push('snapshot', 'suspend');
  if (c.canClone) ops.push('fork');
  if (c.canMigrate) ops.push('migrate');
  return { liveOps: ops };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ShoalError('invalid', `body: not JSON (${(e as Error).message})`, { field: 'body' });
  }
}

async function readJson(c: Context): Promise<unknown> {
  const type = c.req.header('content-type') ?? '';
  if (type !== '' && !/^application\/json\b/i.test(type)) {
    throw new ShoalError('unsupported', `send JSON (content-type application/json), got ${JSON.stringify(type)}`, { field: 'content-type' });
  }
  return parseJson(await c.req.text());
}

// ---- the server ----------------------------------------------------------------

/** Paths the mounted store answers (its registry API and its own control API). */
const STORE_PREFIXES = ['/v2', '/api/v1/images', '/api/v1/repositories', '/api/v1/tags', '/api/v1/gc'];

export function createProviderServer(options: {
  /** Serve HTTPS with this certificate and key. */
  tls?: TlsIdentity | undefined;
  router: Router;
  api: Hono;
  store?: MountedApp;
  /** Farms (intermediaries/farms.ts): /x/…, exported names under /s/, /api/v1/farms. */
  farms?: { handles(url: string): boolean; handle(req: IncomingMessage, res: ServerResponse): void };
  /** Checks tokens and roles before anything else runs (auth/gate.ts). */
  gate?: AuthGate;
  /** The web page at /ui (src/dashboard). */
  dashboard?: { handles(url: string): boolean; handle(req: IncomingMessage, res: ServerResponse): void };
}): Server {
  const api = getRequestListener(options.api.fetch);
  const store = options.store === undefined ? undefined : getRequestListener(options.store.fetch);
  const dispatch = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/';
    if (options.farms?.handles(url)) return options.farms.handle(req, res);
    if (options.dashboard?.handles(url)) return options.dashboard.handle(req, res);
    if (url.startsWith(MESSAGE_PREFIX)) return options.router.handle(req, res);
    if (store !== undefined) {
      for (const p of STORE_PREFIXES) {
        if (url.startsWith(p) && (url.length === p.length || url[p.length] === '/' || url[p.length] === '?')) return void store(req, res);
      }
    }
    void api(req, res);
  };
  const gate = options.gate;
  const server = createListener({ keepAliveTimeout: 30_000, tls: options.tls }, gate === undefined ? dispatch : (req, res) => gate.handle(req, res, () => dispatch(req, res)));
  // Layers pushed to a mounted store can be large: no cap on a whole request, only on silence.
  return hardenServer(server, { requestTimeoutMs: 0, jsonBodies: ['/s/', '/x/', '/api/'] });
}

/** An error reply through the shared table (errorReply, src/protocol). */
function replyError(c: Context, e: ShoalError): Response {
  const { status, body } = errorReply(e);
  return c.json(body, status as 400);
}
