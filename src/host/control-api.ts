// The host's control API (Hono): deployments, instances, events, report, metrics.
// Every /v1 route and /metrics need the host's bearer token; a missing or wrong one gets
// 401 before anything else runs. Bodies are validated against the TypeBox schemas that
// also make up /openapi.json. Error codes become HTTP statuses here and only here.
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { bodyLimit } from 'hono/body-limit';
import { streamSSE } from 'hono/streaming';
import { Value } from '@sinclair/typebox/value';
import { Type, type TSchema } from '@sinclair/typebox';
import type { Agent } from './agent.ts';
import type { EventBus } from './events.ts';
import type { HostMetrics } from './metrics.ts';
import type { Logger } from './ports.ts';
import {
  DeploymentPlan,
  DeploymentResult,
  HostEvent,
  HostReport,
  InstanceInfo,
  MigrationOffer,
  ShoalError,
  errorReply,
  isShoalError,
  parseImageRef,
  ErrorBodySchema as ErrorSchema,
} from '../protocol/index.ts';
import { driverNames, isDriverName } from './drivers/index.ts';

export interface ControlApiOptions {
  agent: Agent;
  token: string;
  events: EventBus;
  metrics: HostMetrics;
  report(): Promise<HostReport>;
  /** Largest deployment plan accepted. Default 1 MiB. */
  maxBodyBytes?: number;
  /** SSE keep-alive comment interval. Default 15 s. */
  keepAliveMs?: number;
  version?: string;
  logger?: Pick<Logger, 'warn'>;
}

const MAX_LOG_TAIL = 10_000;

export function createControlApi(options: ControlApiOptions): Hono {
  const { agent, events, metrics } = options;
  if (options.token.length < 8) throw new ShoalError('invalid', 'the host token must be at least 8 characters', { field: 'token' });
  const tokenHash = createHash('sha256').update(options.token).digest();
  const app = new Hono();

  app.onError((err, c) => {
    const { status, body } = errorReply(err);
    return c.json(body, status as 400);
  });
  app.notFound((c) => replyError(c, new ShoalError('not-found', `no route ${c.req.method} ${c.req.path}`)));

  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/openapi.json', (c) => c.json(openApiDocument(options.version ?? '0.1.0')));

  const authorize = async (c: Context, next: () => Promise<void>): Promise<Response | void> => {
    const header = c.req.header('authorization') ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = createHash('sha256').update(m?.[1]?.trim() ?? '').digest();
    if (!m || !timingSafeEqual(given, tokenHash)) {
      c.header('www-authenticate', 'Bearer realm="shoal-host"');
      return replyError(c, new ShoalError('unauthorized', m ? 'wrong host token' : 'missing host token: send Authorization: Bearer <token>'));
    }
    await next();
  };
  app.use('/v1/*', authorize);
  app.use('/metrics', authorize);

  app.get('/metrics', async (c) => {
    const { contentType, body } = await metrics.render();
    return c.body(body, 200, { 'content-type': contentType });
  });

  const planBodyLimit = bodyLimit({
    maxSize: options.maxBodyBytes ?? 1024 * 1024,
    onError: (c) => replyError(c, new ShoalError('too-large', 'deployment plan too large')),
  });
  app.post(
    '/v1/instances',
    planBodyLimit,
    async (c) => {
      const started = performance.now();
      let plan: DeploymentPlan;
      try {
        plan = validatePlan(await readJson(c));
      } catch (e) {
        metrics.deployment('invalid');
        throw e;
      }
      try {
        const result = await agent.deploy(plan);
        if (c.req.raw.signal.aborted) {
          // The caller went away before the answer (a provider killed mid-deploy): nobody
          // will record or route to this instance, so it must not outlive the request.
          const id = result.instance.id;
          await agent.remove(id).catch((e: unknown) => options.logger?.warn({ instance: id, err: String(e) }, 'undoing a deployment whose caller left failed'));
          metrics.deployment('failed');
          return replyError(c, new ShoalError('unavailable', 'the caller left before the deployment finished; it was undone'));
        }
        metrics.deployment('ok', performance.now() - started);
        return c.json(result, 201);
      } catch (e) {
        metrics.deployment(isShoalError(e) && e.code === 'conflict' ? 'refused' : 'failed');
        throw e;
      }
    },
  );

  app.get('/v1/instances', (c) => c.json({ instances: agent.list() }));
  app.get('/v1/instances/:id', async (c) => c.json(await agent.get(c.req.param('id'))));
  app.delete('/v1/instances/:id', async (c) => {
    const id = c.req.param('id');
    await agent.remove(id);
    return c.json({ id, removed: true });
  });
  // Live state (drivers that can capture / fork; others get 415 unsupported, detail.reason not-supported).
  app.post('/v1/instances/:id/snapshot', async (c) => {
    const hold = c.req.query('hold');
    if (hold !== undefined && hold !== '1') throw new ShoalError('invalid', 'hold must be 1 or absent', { field: 'hold' });
    return c.json(await agent.snapshot(c.req.param('id'), { hold: hold === '1' }), 201);
  });
  app.post('/v1/instances/:id/release', (c) => {
    const id = c.req.param('id');
    if (!agent.release(id)) throw new ShoalError('not-found', `instance ${id} holds no messages`, { field: 'id' });
    return c.json({ id, released: true });
  });
  app.post('/v1/instances/:id/fork', async (c) => c.json(await agent.fork(c.req.param('id')), 201));
  // Live migration (drivers that migrate live; others 415, detail.reason not-supported).
  // Target: /v1/incoming answers the offer (the key for this one move) to the caller, who
  // has the host token; the source gets it from that caller the same way.
  app.post('/v1/incoming', planBodyLimit, async (c) => c.json(await agent.receive(validatePlan(await readJson(c))), 201));
  app.post('/v1/incoming/:id/accept', async (c) => c.json(await agent.accept(c.req.param('id')), 201));
  app.delete('/v1/incoming/:id', async (c) => {
    const id = c.req.param('id');
    await agent.abortIncoming(id);
    return c.json({ id, cancelled: true });
  });
  app.post('/v1/instances/:id/migrate', bodyLimit({ maxSize: 16 * 1024, onError: (c) => replyError(c, new ShoalError('too-large', 'migration offer too large')) }), async (c) => {
    const body = await readJson(c);
    const first = Value.Errors(MigrationOffer, body).First();
    if (first) throw new ShoalError('invalid', `invalid migration offer: ${fieldName(first.path)}: ${first.message}`, { field: fieldName(first.path) });
    return c.json(await agent.migrate(c.req.param('id'), body as MigrationOffer));
  });
  app.post('/v1/instances/:id/migrate/resume', async (c) => {
    const id = c.req.param('id');
    await agent.resumeMigrated(id);
    return c.json({ id, resumed: true });
  });
  app.post('/v1/instances/:id/pause', async (c) => c.json(await agent.pause(c.req.param('id'))));
  app.post('/v1/instances/:id/resume', async (c) => c.json(await agent.resume(c.req.param('id'))));
  app.get('/v1/instances/:id/logs', async (c) => {
    const raw = c.req.query('tail') ?? '100';
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_LOG_TAIL) {
      throw new ShoalError('invalid', `tail must be an integer from 1 to ${MAX_LOG_TAIL}, got ${JSON.stringify(raw)}`, { field: 'tail' });
    }
    if (c.req.query('follow') === '1') {
      // Streamed until the caller goes (its request's signal) or the instance is removed.
      const lines = agent.followLogs(c.req.param('id'), Number(raw), c.req.raw.signal);
      return new Response(ReadableStream.from(lines).pipeThrough(new TextEncoderStream()), { headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' } });
    }
    return c.text(await agent.logs(c.req.param('id'), Number(raw)));
  });

  app.get('/v1/report', async (c) => c.json(await options.report()));
  // The provider tells hosts a service was removed (no keep) or superseded (keep = the current version).
  app.delete('/v1/warm/:service', (c) => {
    const service = c.req.param('service');
    const keep = c.req.query('keep');
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(service)) throw new ShoalError('invalid', `service ${JSON.stringify(service)} is not a service name`, { field: 'service' });
    if (keep !== undefined && (keep.length === 0 || keep.length > 128)) throw new ShoalError('invalid', 'keep must be a service version (1 to 128 characters)', { field: 'keep' });
    return c.json({ service, dropped: agent.dropWarm(service, keep) });
  });

  app.get('/v1/events', (c) => {
    const lastId = Number(c.req.header('last-event-id') ?? c.req.query('since') ?? NaN);
    const only = c.req.query('instance');
    return streamSSE(c, async (stream) => {
      // An opening comment lets clients know the stream is live.
      let chain: Promise<void> = stream.write(': connected\n\n').then(() => {});
      const send = (e: HostEvent): void => {
        if (only !== undefined && e.instance !== only) return;
        // A write fails only when the client has gone; onAbort below ends the stream then.
        chain = chain.then(() => stream.writeSSE({ id: String(e.seq), event: e.type, data: JSON.stringify(e) })).catch(() => {});
      };
      const off = events.subscribe(send);
      if (Number.isFinite(lastId)) for (const e of events.since(lastId)) send(e);
      const keepAlive = setInterval(() => {
        // As above: a failed write means the client left, and onAbort ends the stream.
        chain = chain.then(() => stream.write(': keep-alive\n\n')).then(() => {}, () => {});
      }, options.keepAliveMs ?? 15_000);
      await new Promise<void>((resolve) => stream.onAbort(resolve));
      clearInterval(keepAlive);
      off();
    });
  });

  return app;
}

async function readJson(c: Context): Promise<unknown> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/json\b/i.test(type)) {
    throw new ShoalError('unsupported', `send the plan as application/json (got ${JSON.stringify(type || 'no content-type')})`, { field: 'content-type' });
  }
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ShoalError('invalid', `invalid deployment plan: body: not JSON (${(e as Error).message})`, { field: 'body' });
  }
}

/** JSON pointer → dotted field name: /imports/0/name → imports[0].name */
export function fieldName(pointer: string): string {
  const parts = pointer.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out === '' ? p : `.${p}`;
  return out || 'body';
}

/** Schema check, then the rules a schema cannot say. Throws ShoalError('invalid') naming the field. */
export function validatePlan(body: unknown): DeploymentPlan {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ShoalError('invalid', 'invalid deployment plan: body: must be a JSON object', { field: 'body' });
  }
  const first = Value.Errors(DeploymentPlan, body).First();
  if (first) {
    const field = fieldName(first.path);
    let message = first.message;
    if (message === 'Unexpected property') message = 'unknown field';
    else if (message === 'Expected required property') message = 'required field missing';
    throw new ShoalError('invalid', `invalid deployment plan: ${field}: ${message}`, { field });
  }
  const plan = body as DeploymentPlan;
  if (plan.driver !== undefined && !isDriverName(plan.driver)) {
    throw new ShoalError('invalid', `invalid deployment plan: driver: no driver named ${plan.driver} (known: ${driverNames.join(', ')})`, { field: 'driver' });
  }
  try {
    parseImageRef(plan.image, 'image');
  } catch (e) {
    throw new ShoalError('invalid', `invalid deployment plan: image: ${(e as Error).message}`, { field: 'image' });
  }
  try {
    new URL(plan.store);
  } catch {
    throw new ShoalError('invalid', `invalid deployment plan: store: not a URL: ${JSON.stringify(plan.store)}`, { field: 'store' });
  }
  for (const k of Object.keys(plan.env ?? {})) {
    if (k.startsWith('SHOAL_')) throw new ShoalError('invalid', `invalid deployment plan: env.${k}: SHOAL_* names are set by the host`, { field: `env.${k}` });
  }
  const seen = new Set<string>();
  (plan.imports ?? []).forEach((imp, i) => {
    if (seen.has(imp.name)) throw new ShoalError('invalid', `invalid deployment plan: imports[${i}].name: ${imp.name} is bound twice`, { field: `imports[${i}].name` });
    seen.add(imp.name);
    try {
      new URL(imp.url);
    } catch {
      throw new ShoalError('invalid', `invalid deployment plan: imports[${i}].url: not a URL`, { field: `imports[${i}].url` });
    }
  });
  return plan;
}


/** OpenAPI 3.1: its schema objects are JSON Schema, which is what TypeBox values are. */
export function openApiDocument(version: string): object {
  const json = (schema: TSchema) => ({ content: { 'application/json': { schema: strip(schema) } } });
  const error = (description: string) => ({ description, ...json(ErrorSchema) });
  const id = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
  const common = { '401': error('missing or wrong host token'), '404': error('no such instance') };
  return {
    openapi: '3.1.0',
    info: { title: 'Shoal host control API', version },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths: {
      '/v1/instances': {
        post: {
          summary: 'Admit, deploy and start an instance; answers when it is ready',
          requestBody: { required: true, ...json(DeploymentPlan) },
          responses: {
            '201': { description: 'ready', ...json(DeploymentResult) },
            '400': error('malformed plan (error.field names the field); nothing was created'),
            '401': error('missing or wrong host token'),
            '409': error('refused by admission control (error.message says why)'),
            '503': error('the instance exited before it was ready (error.detail.log has the tail of its log)'),
            '504': error('not ready within the readiness deadline'),
          },
        },
        get: { summary: 'List instances', responses: { '200': { description: 'instances', ...json(Type.Object({ instances: Type.Array(InstanceInfo) })) }, '401': common['401'] } },
      },
      '/v1/instances/{id}': {
        parameters: [id],
        get: { summary: 'State, timeline, resources and resource use', responses: { '200': { description: 'the instance', ...json(InstanceInfo) }, ...common } },
        delete: {
          summary: 'Stop and remove the instance (unmounts, removes its writable layer)',
          responses: { '200': { description: 'removed', ...json(Type.Object({ id: Type.String(), removed: Type.Boolean() })) }, ...common },
        },
      },
      '/v1/instances/{id}/snapshot': {
        parameters: [id],
        post: {
          parameters: [{ name: 'hold', in: 'query', description: '1 (a move): keep new messages held after the capture until the instance is removed (they are then answered gone, never delivered, so callers retry elsewhere) or released; at most 30 s', schema: { type: 'string', enum: ['1'] } }],
          summary: 'Quiesce the instance (new messages held, none in flight), capture its running state, store it as an OCI artifact (application/vnd.shoal.state.v1) next to its image; answers its digest, usable as a plan\'s `from`',
          responses: { '201': { description: 'stored: {id, digest, size, annotations}' }, ...common, '409': error('not ready'), '415': error('the driver cannot capture (error.detail.reason: not-supported)') },
        },
      },
      '/v1/instances/{id}/release': {
        parameters: [id],
        post: { summary: 'Let the messages held by snapshot?hold=1 go on to the instance (a move given up)', responses: { '200': { description: 'released' }, ...common } },
      },
      '/v1/instances/{id}/fork': {
        parameters: [id],
        post: {
          summary: 'Start a copy of the running instance on this host from its state now; the source keeps serving',
          responses: { '201': { description: 'the fork, ready', ...json(DeploymentResult) }, ...common, '409': error('not ready'), '415': error('the driver cannot fork (error.detail.reason: not-supported)') },
        },
      },
      '/v1/incoming': {
        post: {
          summary: 'Live migration, target: admit and prepare an instance that waits for its running state from another host; answers at once with the offer (a one-connection TLS-PSK listener and its key, fresh for this move, and the facts the source must match)',
          requestBody: { required: true, ...json(DeploymentPlan) },
          responses: { '201': { description: 'waiting: {instance, offer}' }, '400': error('malformed plan'), '401': common['401'], '409': error('refused by admission control'), '415': error('the driver cannot receive a live migration (error.detail.reason: not-supported)') },
        },
      },
      '/v1/incoming/{id}/accept': {
        parameters: [id],
        post: { summary: 'Live migration, target: wait until the state has arrived and the instance is ready', responses: { '201': { description: 'ready', ...json(DeploymentResult) }, ...common, '403': error('the stream was refused (a wrong key): the instance was removed'), '503': error('the stream failed: the instance was removed') } },
      },
      '/v1/incoming/{id}': {
        parameters: [id],
        delete: { summary: 'Live migration, target: give up waiting; the instance is removed', responses: { '200': { description: 'cancelled' }, ...common } },
      },
      '/v1/instances/{id}/migrate': {
        parameters: [id],
        post: {
          summary: 'Live migration, source: send the running instance to a target\'s offer (pre-copy); new messages are held from just before its stop until it is removed (then answered gone) or resumed',
          requestBody: { required: true, ...json(MigrationOffer) },
          responses: { '200': { description: 'the target has it: {id, totalMs, downtimeMs, heldMs, bytes}' }, ...common, '409': error('given up (error.detail.reason: in-flight, mismatch); the instance runs on here'), '415': error('the driver cannot migrate live (error.detail.reason: not-supported)'), '503': error('the stream failed; the instance runs on here') },
        },
      },
      '/v1/instances/{id}/migrate/resume': {
        parameters: [id],
        post: { summary: 'Live migration, source: the target failed after the move and is gone; run the instance here again and let its held messages go on', responses: { '200': { description: 'resumed' }, ...common } },
      },
      '/v1/instances/{id}/pause': {
        parameters: [id],
        post: { summary: 'Freeze the instance', responses: { '200': { description: 'paused', ...json(InstanceInfo) }, ...common, '409': error('not ready') } },
      },
      '/v1/instances/{id}/resume': {
        parameters: [id],
        post: { summary: 'Thaw the instance', responses: { '200': { description: 'ready', ...json(InstanceInfo) }, ...common, '409': error('not paused') } },
      },
      '/v1/instances/{id}/logs': {
        parameters: [id, { name: 'tail', in: 'query', schema: { type: 'integer', minimum: 1, maximum: MAX_LOG_TAIL, default: 100 } }, { name: 'follow', in: 'query', description: '1: keep streaming what the instance appends', schema: { type: 'string', enum: ['1'] } }],
        get: { summary: 'The last lines of the instance log', responses: { '200': { description: 'log lines', content: { 'text/plain': { schema: { type: 'string' } } } }, ...common } },
      },
      '/v1/events': {
        get: {
          summary: 'Server-sent events: started, ready, exited, crashed, oom, paused, resumed, removed',
          parameters: [
            { name: 'instance', in: 'query', schema: { type: 'string' } },
            { name: 'Last-Event-ID', in: 'header', schema: { type: 'integer' } },
          ],
          responses: { '200': { description: 'event stream; each data line is a HostEvent', content: { 'text/event-stream': { schema: strip(HostEvent) } } }, '401': common['401'] },
        },
      },
      '/v1/warm/{service}': {
        parameters: [{ name: 'service', in: 'path', required: true, schema: { type: 'string' } }, { name: 'keep', in: 'query', schema: { type: 'string' } }],
        delete: {
          summary: 'Discard the containers created ahead for a service (removed), or for its versions other than keep (superseded)',
          responses: { '200': { description: 'dropped', ...json(Type.Object({ service: Type.String(), dropped: Type.Integer() })) }, '400': error('not a service name'), '401': common['401'] },
        },
      },
      '/v1/report': { get: { summary: 'Capacity, reservations, load, cached layers, drivers', responses: { '200': { description: 'report', ...json(HostReport) }, '401': common['401'] } } },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'text exposition format' } } } },
      '/healthz': { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'ok' } } } },
    },
  };
}

function strip(schema: TSchema): unknown {
  return JSON.parse(JSON.stringify(schema));
}

/** An error reply through the shared table (errorReply, src/protocol). */
function replyError(c: Context, e: ShoalError): Response {
  const { status, body } = errorReply(e);
  return c.json(body, status as 400);
}
