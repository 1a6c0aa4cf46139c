// The provider's OpenAPI 3.1 document (its schema objects are JSON Schema, which is what
// TypeBox values are). `shoal up` merges the store's paths into it, since one address
// serves both.
import { Type, type TSchema } from '@sinclair/typebox';
import {
  ServiceDescriptionSchema,
  DeploymentSummary,
  DeployRequestBody,
  ScaleRequestBody,
  ScaleReply,
  EventSummary,
  HostRegistrationBody,
  HostSummary,
  InstanceSummary,
  ServiceSummary,
  ErrorBodySchema as ErrorSchema,
  AuditEntry,
  TokenCreateBody,
  TokenCreated,
  TokenSummary,
} from '../protocol/index.ts';


function strip(schema: TSchema): unknown {
  return JSON.parse(JSON.stringify(schema));
}

export function providerOpenApi(version: string, extraPaths: Record<string, unknown> = {}): object {
  const json = (schema: TSchema) => ({ content: { 'application/json': { schema: strip(schema) } } });
  const error = (description: string) => ({ description, ...json(ErrorSchema) });
  const name = { name: 'name', in: 'path', required: true, schema: { type: 'string' } };
  const joinAuth = [{ joinToken: [] }];
  return {
    openapi: '3.1.0',
    info: {
      title: 'Shoal service provider',
      version,
      description:
        'Consumers send messages to POST /s/{service}/{operation}; the provider deploys the service on the first message, then routes. The control API under /api/v1/ registers services and hosts and shows deployments and instances.',
    },
    components: {
      securitySchemes: {
        joinToken: { type: 'http', scheme: 'bearer', description: "the provider's join token (hosts only)" },
        apiToken: { type: 'http', scheme: 'bearer', description: 'an API token (shoal token create): admin, deploy, read, or invoke for token-access services' },
      },
    },
    security: [{ apiToken: [] }],
    paths: {
      '/s/{service}/{operation}': {
        post: {
          summary: "Send a message to a service's operation (deploys the service first if no instance is ready)",
          parameters: [
            { name: 'service', in: 'path', required: true, schema: { type: 'string' } },
            { name: 'operation', in: 'path', required: true, schema: { type: 'string' } },
          ],
          requestBody: { required: false, content: { 'application/json': { schema: { description: "the operation's input schema" } } } },
          responses: {
            '200': { description: "the instance's reply (any status the instance gives is passed on)" },
            '400': error('the body is not JSON or does not match the input schema (error.field is the JSON pointer of the offending value)'),
            '404': error('no such service or operation'),
            '413': error('body too large'),
            '502': error('the instance crashed while handling a non-idempotent message, or could not be reached'),
            '503': error('no instance could be made ready: queue full, deployment failed (error.message says why), or timed out; see Retry-After'),
          },
        },
      },
      '/api/v1/services': {
        get: { summary: 'Registered services (current versions)', responses: { '200': { description: 'services', ...json(Type.Object({ services: Type.Array(ServiceSummary) })) } } },
        post: {
          summary: 'Register a service (or a new version of it); validated, errors name the field',
          requestBody: { required: true, ...json(ServiceDescriptionSchema) },
          responses: { '201': { description: 'registered (defaults applied)' }, '400': error('invalid description (error.field is a JSON pointer)') },
        },
      },
      '/api/v1/services/{name}': {
        parameters: [name],
        get: { summary: 'One service: its description, versions, ready instances and recent deployments', responses: { '200': { description: 'the service' }, '404': error('unknown service') } },
        delete: { summary: 'Unregister a service and undeploy its instances', responses: { '200': { description: 'removed' }, '404': error('unknown service') } },
      },
      '/api/v1/services/{name}/deployments': {
        parameters: [name],
        post: {
          summary: 'Deploy instances now (spread across hosts), without waiting for a message',
          requestBody: { required: false, ...json(DeployRequestBody) },
          responses: { '201': { description: 'deployed', ...json(Type.Object({ deployments: Type.Array(DeploymentSummary), errors: Type.Array(Type.String()) })) }, '503': error('no host can take it') },
        },
      },
      '/api/v1/hosts': {
        get: { summary: 'Registered hosts, their state and latest report', responses: { '200': { description: 'hosts', ...json(Type.Object({ hosts: Type.Array(HostSummary) })) } } },
        post: {
          summary: "Register a host (the provider checks it can reach the host's control API with the token given)",
          security: joinAuth,
          requestBody: { required: true, ...json(HostRegistrationBody) },
          responses: {
            '201': { description: 'registered', ...json(HostSummary) },
            '401': error('missing or wrong join token'),
            '403': error('the host refused the token given for it'),
            '503': error('the host cannot be reached'),
          },
        },
      },
      '/api/v1/hosts/{id}': {
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
        delete: { summary: 'Forget a host', security: joinAuth, responses: { '200': { description: 'removed' }, '404': error('unknown host') } },
      },
      '/api/v1/deployments': {
        get: {
          summary: 'Deployments with their timelines',
          parameters: [
            { name: 'service', in: 'query', schema: { type: 'string' } },
            { name: 'state', in: 'query', schema: { type: 'string' } },
          ],
          responses: { '200': { description: 'deployments', ...json(Type.Object({ deployments: Type.Array(DeploymentSummary) })) } },
        },
      },
      '/api/v1/instances': {
        get: { summary: 'Instances on every reachable host (ps)', responses: { '200': { description: 'instances', ...json(Type.Object({ instances: Type.Array(InstanceSummary), unreachable: Type.Array(Type.String()) })) } } },
      },
      '/api/v1/instances/{id}': {
        delete: {
          summary: 'Stop one instance of this provider now (drained first)',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': { description: 'removed' }, '404': error('no routable instance with this id') },
        },
      },
      '/api/v1/services/{name}/scale': {
        put: {
          summary: 'Deploy or stop instances until this many run (the autoscaler keeps running after)',
          parameters: [{ name: 'name', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: { required: true, ...json(ScaleRequestBody) },
          responses: { '200': { description: 'scaled', ...json(ScaleReply) }, '400': error('invalid body'), '404': error('unknown service'), '503': error('no instance could be deployed') },
          },
        },
      '/api/v1/instances/{id}/migrate': {
        post: {
          summary: "Move a running instance to another host with its state (drivers that capture, e.g. wasm): its host holds new messages and captures, the other host restores, routing switches, the old instance goes; held messages are retried on the new one (none lost or run twice)",
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: { required: false, content: { 'application/json': { schema: { type: 'object', properties: { host: { type: 'string', description: 'the host to move to (default: placement picks one)' } } } } } },
          responses: { '201': { description: "{from: {instance, host}, to: {instance, host}, mode: 'live' | 'stop-and-copy', live?: QEMU's figures, state?: the state digest, liveFailed?: why a live move fell back to stop-and-copy}" } },
        },
      },
      ...liveStatePaths(),
      '/api/v1/instances/{id}/logs': {
        get: {
          summary: "An instance's log, from the host that runs it (a read token is enough)",
          parameters: [
            { name: 'id', in: 'path', required: true, schema: { type: 'string' } },
            { name: 'tail', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 10_000, default: 100 } },
            { name: 'follow', in: 'query', description: '1: keep streaming what the instance appends', schema: { type: 'string', enum: ['1'] } },
          ],
          responses: { '200': { description: 'log lines', content: { 'text/plain': { schema: { type: 'string' } } } } },
        },
      },
      '/api/v1/events': {
        get: {
          summary: 'Registry events (deployments, crashes, host state changes)',
          parameters: [
            { name: 'service', in: 'query', schema: { type: 'string' } },
            { name: 'after', in: 'query', schema: { type: 'integer' } },
            { name: 'limit', in: 'query', schema: { type: 'integer', maximum: 10000 } },
          ],
          responses: { '200': { description: 'events', ...json(Type.Object({ events: Type.Array(EventSummary) })) } },
        },
      },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'text exposition format' } } } },
      '/healthz': { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'ok' } } } },
      '/api/v1/tokens': {
        get: { summary: 'API tokens (admin): ids, roles, expiry, revocation; never secrets', responses: { '200': { description: 'tokens', ...json(Type.Object({ tokens: Type.Array(TokenSummary) })) } } },
        post: {
          summary: 'Make a token (admin); the secret is in this reply only',
          requestBody: { required: true, ...json(TokenCreateBody) },
          responses: { '201': { description: 'made', ...json(TokenCreated) }, '400': error('invalid body') },
        },
      },
      '/api/v1/tokens/{id}': {
        delete: {
          summary: 'Revoke a token now (admin)',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': { description: 'revoked' }, '404': error('no live token with this id') },
        },
      },
      '/api/v1/registry-logins': {
        get: {
          summary: 'Hosts of other registries with kept credentials, and their user names (admin; passwords never come back)',
          responses: { '200': { description: 'logins', ...json(Type.Object({ logins: Type.Array(Type.Object({ host: Type.String(), username: Type.String() })) })) } },
        },
      },
      '/api/v1/registry-logins/{host}': {
        put: {
          summary: 'Check credentials against another registry (HOST[:PORT]) and keep them (0600 file) for copying its images (admin)',
          parameters: [{ name: 'host', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: { required: true, ...json(Type.Object({ username: Type.String(), password: Type.String() })) },
          responses: { '200': { description: 'kept', ...json(Type.Object({ host: Type.String(), username: Type.String() })) }, '400': { description: 'registry unreachable or credentials refused (field names which)' } },
        },
        delete: {
          summary: 'Forget the credentials kept for a registry (admin)',
          parameters: [{ name: 'host', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': { description: 'removed' }, '404': { description: 'none kept' } },
        },
      },
      '/api/v1/audit': {
        get: {
          summary: 'Mutating calls: token id and role, method, route, service, address, status (admin)',
          parameters: [
            { name: 'service', in: 'query', schema: { type: 'string' } },
            { name: 'token', in: 'query', schema: { type: 'string' } },
            { name: 'since', in: 'query', description: 'epoch ms or ISO date, inclusive', schema: { type: 'string' } },
            { name: 'until', in: 'query', description: 'epoch ms or ISO date, exclusive', schema: { type: 'string' } },
            { name: 'limit', in: 'query', schema: { type: 'integer', maximum: 10000 } },
          ],
          responses: { '200': { description: 'entries, oldest first', ...json(Type.Object({ entries: Type.Array(AuditEntry) })) } },
        },
      },
      ...extraPaths,
    },
  };
}

/** The live-state operations (src/provider/live-ops-api.ts). */
function liveStatePaths(): Record<string, unknown> {
  const id = [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }];
  const refusals = {
    '404': { description: 'no such instance (or state) on this provider' },
    '409': { description: "the instance's driver lacks the capability (code unsupported, naming it), or the instance is in the wrong state (conflict)" },
  };
  const op = (summary: string, ok: string, body?: Record<string, unknown>) => ({
    post: {
      summary,
      parameters: id,
      ...(body === undefined ? {} : { requestBody: { required: false, content: { 'application/json': { schema: { type: 'object', properties: body } } } } }),
      responses: { [ok.startsWith('201') ? '201' : '200']: { description: ok }, ...refusals },
    },
  });
  const ttl = { ttlSeconds: { type: 'integer', minimum: 1, description: 'expire the state after this long (default: kept until removed)' } };
  return {
    '/api/v1/instances/{id}/pause': op('Freeze an instance in memory (canPause): no message is routed to it until resume', '200 {paused}'),
    '/api/v1/instances/{id}/resume': op('Unfreeze a paused instance; it is routed to again', '200 {instance}'),
    '/api/v1/instances/{id}/snapshot': op('Capture the running state (canSnapshot) while it keeps serving; messages in flight finish first', '201 {state}', { label: { type: 'string' }, ...ttl }),
    '/api/v1/instances/{id}/suspend': op('Capture the state, then remove the instance (frees the host); restore brings it back', '201 {state}', ttl),
    '/api/v1/instances/{id}/fork': op('Start a copy of a running instance on its host (canClone); both serve, their states diverge', '201 {instance}'),
    '/api/v1/states': { get: { summary: 'Saved states (snapshots, suspended instances, farm snapshots) not yet expired', parameters: [{ name: 'service', in: 'query', required: false, schema: { type: 'string' } }], responses: { '200': { description: '{states}' } } } },
    '/api/v1/states/{id}/restore': op('Start a new instance from a saved state, on a host whose driver took it (or `host`)', '201 {instance}', { host: { type: 'string' } }),
    '/api/v1/states/{id}': { delete: { summary: 'Forget a saved state', parameters: id, responses: { '200': { description: '{removed}' }, '404': { description: 'no such state' } } } },
  };
}
