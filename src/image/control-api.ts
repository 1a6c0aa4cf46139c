// Shoal's own JSON API over the image store (/api/v1/): what the OCI distribution API
// does not say — images with their sizes, inspect and resolve by any reference
// (template://… included), tag, delete, gc. Errors are {"error":{code,message,field}}
// with the status from httpStatusFor. Schemas live in src/protocol/store-api.ts and are
// embedded as they are in /openapi.json (TypeBox schemas are JSON Schema).
import { Hono, type Context } from 'hono';
import { Value } from '@sinclair/typebox/value';
import type { TSchema } from '@sinclair/typebox';
import type { ImageStore } from './image-store.ts';
import {
  ShoalError,
  errorReply as toReply,
  isShoalError,
  parseImageRef,
  DeleteResult,
  ErrorReply,
  GcRequest,
  GcResult,
  ImageInspection,
  ImageList,
  RepositoryList,
  RootfsSpecSchema,
  TagRequest,
  TagResult,
} from '../protocol/index.ts';

export interface ControlApiOptions {
  store: ImageStore;
  logger?: { error(obj: object, msg?: string): void };
}

function errorReply(c: Context, e: unknown, logger: ControlApiOptions['logger']): Response {
  if (!isShoalError(e)) logger?.error({ err: e, path: c.req.path }, 'control API request failed');
  // The store keeps a bug's message to its log: callers get 'internal error'.
  const { status, body } = toReply(isShoalError(e) ? e : new ShoalError('internal', 'internal error'));
  return c.json(body, status as 400);
}

async function jsonBody<T>(c: Context, schema: TSchema): Promise<T> {
  let body: unknown;
  try {
    const text = await c.req.text();
    body = text === '' ? {} : JSON.parse(text);
  } catch {
    throw new ShoalError('invalid', 'the body is not valid JSON', { field: 'body' });
  }
  if (!Value.Check(schema, body)) {
    const first = Value.Errors(schema, body).First();
    const field = (first?.path ?? '').replace(/^\//, '') || 'body';
    throw new ShoalError('invalid', `${field}: ${first?.message ?? 'does not match the schema'}`, { field });
  }
  return body as T;
}

function refParam(c: Context, name = 'ref') {
  const text = c.req.query(name);
  if (!text) throw new ShoalError('invalid', `query parameter ${name} is required (NAME:TAG, NAME@DIGEST or template://N/V)`, { field: name });
  return parseImageRef(text, name);
}

/** The store names the reference `reference`; this API takes it as the query parameter `ref`. */
async function asRef<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (isShoalError(e) && e.field === 'reference') throw new ShoalError(e.code, e.message, { field: 'ref', detail: e.detail, cause: e });
    throw e;
  }
}

export function createControlApp(options: ControlApiOptions): Hono {
  const { store, logger } = options;
  const app = new Hono();
  app.onError((e, c) => errorReply(c, e, logger));

  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/openapi.json', (c) => c.json(storeOpenApi));

  app.get('/api/v1/images', async (c) => c.json({ images: await store.listImages() } satisfies ImageList));

  app.get('/api/v1/images/inspect', async (c) => c.json(await asRef(store.inspect(refParam(c)))));

  app.get('/api/v1/images/resolve', async (c) => c.json(await asRef(store.resolve(refParam(c)))));

  app.delete('/api/v1/images', async (c) => {
    const ref = refParam(c);
    const reference = ref.digest ?? ref.tag!;
    await asRef(store.deleteManifest(ref.repository, reference));
    return c.json({
      repository: ref.repository,
      removed: ref.digest ? { digest: ref.digest } : { tag: ref.tag! },
    } satisfies DeleteResult);
  });

  app.get('/api/v1/repositories', async (c) => {
    const out: RepositoryList['repositories'] = [];
    for (const name of await store.listRepositories()) {
      const tags = [];
      for (const tag of await store.listTags(name)) {
        const m = await store.getManifest(name, tag);
        if (m) tags.push({ tag, digest: m.digest });
      }
      out.push({ name, tags });
    }
    return c.json({ repositories: out } satisfies RepositoryList);
  });

  app.delete('/api/v1/repositories', async (c) => {
    const name = c.req.query('name');
    if (!name) throw new ShoalError('invalid', 'query parameter name is required', { field: 'name' });
    await store.deleteRepository(name);
    return c.json({ repository: name, removed: true });
  });

  app.post('/api/v1/tags', async (c) => {
    const body = await jsonBody<TagRequest>(c, TagRequest);
    const source = parseImageRef(body.source, 'source');
    const target = parseImageRef(body.target, 'target');
    if (target.digest || !target.tag) throw new ShoalError('invalid', 'the target must be NAME:TAG or template://N/V, without a digest', { field: 'target' });
    const digest = source.digest ?? (await store.getManifest(source.repository, source.tag ?? 'latest'))?.digest;
    if (!digest) throw new ShoalError('not-found', `image ${body.source} not found`, { field: 'source' });
    await store.tag(target.repository, digest, target.tag);
    return c.json({ repository: target.repository, tag: target.tag, digest } satisfies TagResult);
  });

  app.post('/api/v1/gc', async (c) => {
    const body = await jsonBody<GcRequest>(c, GcRequest);
    return c.json((await store.gc(body.minAgeMs === undefined ? {} : { minAgeMs: body.minAgeMs })) satisfies GcResult);
  });

  return app;
}

const refQuery = {
  name: 'ref',
  in: 'query',
  required: true,
  description: 'NAME:TAG, NAME@sha256:… or template://NAME/VERSION',
  schema: { type: 'string' },
} as const;

const json = (schema: object, description = 'OK') => ({ description, content: { 'application/json': { schema } } });
const errors = {
  '400': json(ErrorReply, 'invalid input'),
  '404': json(ErrorReply, 'not found'),
  '500': json(ErrorReply, 'internal error'),
};

/** The OpenAPI 3.1 document of the control API (the /v2/ registry API is the OCI distribution spec's). */
export const storeOpenApi = {
  openapi: '3.1.0',
  info: {
    title: 'Shoal store',
    version: '1',
    description:
      'Image listing, inspection, tagging and garbage collection. Pushing and pulling use the OCI distribution API under /v2/ (https://github.com/opencontainers/distribution-spec).',
  },
  paths: {
    '/healthz': { get: { operationId: 'health', responses: { '200': json({ type: 'object', properties: { ok: { type: 'boolean' } } }) } } },
    '/api/v1/images': {
      get: { operationId: 'listImages', summary: 'Every manifest of every repository, with tags and sizes', responses: { '200': json(ImageList), '500': errors['500'] } },
      delete: {
        operationId: 'deleteImage',
        summary: 'By tag: remove the tag. By digest: remove the manifest and every tag on it (gc frees the blobs)',
        parameters: [refQuery],
        responses: { '200': json(DeleteResult), ...errors },
      },
    },
    '/api/v1/images/inspect': {
      get: { operationId: 'inspectImage', parameters: [refQuery], responses: { '200': json(ImageInspection), ...errors } },
    },
    '/api/v1/images/resolve': {
      get: {
        operationId: 'resolveImage',
        summary: 'What a host needs to build the root: layers in order with diffIds, and the process',
        parameters: [refQuery],
        responses: { '200': json(RootfsSpecSchema), ...errors },
      },
    },
    '/api/v1/repositories': {
      get: { operationId: 'listRepositories', responses: { '200': json(RepositoryList), '500': errors['500'] } },
      delete: {
        operationId: 'deleteRepository',
        parameters: [{ name: 'name', in: 'query', required: true, schema: { type: 'string' } }],
        responses: { '200': json({ type: 'object' }), ...errors },
      },
    },
    '/api/v1/tags': {
      post: {
        operationId: 'tagImage',
        summary: 'Point target (NAME:TAG or template://N/V) at the manifest source names',
        requestBody: { required: true, content: { 'application/json': { schema: TagRequest } } },
        responses: { '200': json(TagResult), ...errors },
      },
    },
    '/api/v1/gc': {
      post: {
        operationId: 'collectGarbage',
        summary: 'Remove blobs that no manifest of any repository reaches',
        requestBody: { required: false, content: { 'application/json': { schema: GcRequest } } },
        responses: { '200': json(GcResult), ...errors },
      },
    },
  },
} as const;
