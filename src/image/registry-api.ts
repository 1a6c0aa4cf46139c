// The OCI distribution API (/v2/) over the image store: what skopeo, docker, crane and
// Shoal's own registry client push to and pull from.
//
// Repository names contain slashes, so one route takes every /v2/ path and the path is
// parsed here. Blob bodies are the hot path: uploads are read from the raw Node request
// (no web-stream conversion) straight into the blob store, and downloads are piped from
// the file into the raw Node response through reused buffers (file-sender.ts; measured
// against a web Response wrapping Readable.toWeb: see measureNotes below).
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { HttpBindings } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import type { BlobStore, Upload } from './blob-store.ts';
import { sendFileRange } from './file-sender.ts';
import type { ImageStore } from './image-store.ts';
import { isDigest, type Digest } from '../protocol/digest.ts';
import { isShoalError, type ShoalError } from '../protocol/errors.ts';
import { isRepositoryName, isTagName } from '../protocol/image-ref.ts';
import { MediaType } from '../protocol/oci.ts';

// measureNotes: serving a 100 MiB blob to curl over loopback (2 cores, median of 9):
//   Response(Readable.toWeb(file stream))           0.28 GB/s
//   pipe into the raw ServerResponse, 64 KiB reads  0.34 GB/s
//   pipe into the raw ServerResponse, 1 MiB reads   0.85 GB/s
// Then, on a loaded 2-core machine (bench/store.ts), 1 MiB reads into two reused
// buffers (file-sender.ts) instead of a fresh buffer per read: kept.

export type RegistryErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'TAG_INVALID'
  | 'UNSUPPORTED'
  | 'PAGINATION_NUMBER_INVALID'
  | 'NOT_FOUND'
  | 'UNKNOWN';

export interface RegistryLogger {
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface RegistryApiOptions {
  store: ImageStore;
  /** Default: store.blobs. */
  blobs?: BlobStore;
  limits?: {
    /** Largest blob accepted, monolithic or chunked (default 10 GiB). */
    maxBlobBytes?: number;
  };
  logger?: RegistryLogger;
}

export type RegistryEnv = { Bindings: Partial<HttpBindings> };

const API_VERSION = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;

class RegistryError extends Error {
  readonly status: number;
  readonly code: RegistryErrorCode;
  readonly detail: unknown;
  readonly headers: Record<string, string>;
  constructor(status: number, code: RegistryErrorCode, message: string, detail?: unknown, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.headers = headers;
  }
}

/**
 * Tells @hono/node-server that the handler wrote the response itself. Made per call and
 * with its body touched: a Response built after node-server replaced the global class
 * is its light "cached" Response, whose fast path ignores this header (so the shared
 * RESPONSE_ALREADY_SENT constant only works if it was created before the first server).
 * Middleware must not replace this Response (mount the store app as it is).
 */
function alreadySent(): Response {
  const r = new Response(null, { headers: { 'x-hono-already-sent': 'true' } });
  void r.body;
  return r;
}

type Route =
  | { kind: 'catalog' }
  | { kind: 'tags'; name: string }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'referrers'; name: string; digest: string }
  | { kind: 'uploads'; name: string; id: string }
  | { kind: 'blob'; name: string; digest: string };

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Splits /v2/<name>/(blobs|manifests|tags)/…; names may contain slashes. */
export function parseRegistryPath(path: string): Route | undefined {
  const rest = path.replace(/^\/v2\//, '');
  if (rest === '_catalog') return { kind: 'catalog' };
  let m = /^(.+)\/tags\/list$/.exec(rest);
  if (m) return { kind: 'tags', name: m[1]! };
  m = /^(.+)\/referrers\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'referrers', name: m[1]!, digest: decode(m[2]!) };
  m = /^(.+)\/manifests\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'manifest', name: m[1]!, reference: decode(m[2]!) };
  m = /^(.+)\/blobs\/uploads\/([^/]*)$/.exec(rest);
  if (m) return { kind: 'uploads', name: m[1]!, id: m[2]! };
  m = /^(.+)\/blobs\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'blob', name: m[1]!, digest: decode(m[2]!) };
  return undefined;
}

/** Parses a single `bytes=` range against a size; undefined = serve it all; 'unsatisfiable'. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined; // multiple or odd ranges: a 200 with everything is allowed
  const [, a, b] = m;
  if (a === '' && b === '') return undefined;
  let start: number;
  let end: number;
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== '' && Number(b) < start) return undefined;
  }
  if (start >= size || size === 0) return 'unsatisfiable';
  return { start, end };
}

function uploadRange(offset: number): string {
  return `0-${offset > 0 ? offset - 1 : 0}`;
}

export function createRegistryApp(options: RegistryApiOptions): Hono<RegistryEnv> {
  const store = options.store;
  const blobs = options.blobs ?? store.blobs;
  const maxBlobBytes = options.limits?.maxBlobBytes ?? 10 * 1024 * 1024 * 1024;
  const maxManifestBytes = store.limits.maxManifestBytes;
  const app = new Hono<RegistryEnv>();

  const checkName = (name: string) => {
    if (!isRepositoryName(name)) {
      throw new RegistryError(400, 'NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`, { name });
    }
  };
  const checkDigestParam = (d: string | undefined): Digest => {
    if (!d || !isDigest(d)) throw new RegistryError(400, 'DIGEST_INVALID', `invalid or missing digest ${JSON.stringify(d ?? '')}`, { digest: d });
    return d;
  };

  /** The request body as a Node stream: the raw IncomingMessage when served by node. */
  const bodyOf = (c: Context<RegistryEnv>): Readable => {
    const incoming = c.env?.incoming;
    if (incoming) return incoming;
    const body = c.req.raw.body;
    return body ? Readable.fromWeb(body as import('node:stream/web').ReadableStream<Uint8Array>) : Readable.from([]);
  };
  const hasBody = (c: Context<RegistryEnv>): boolean => {
    const len = c.req.header('content-length');
    if (len !== undefined) return Number(len) > 0;
    return c.req.header('transfer-encoding') !== undefined || (c.env?.incoming === undefined && c.req.raw.body !== null);
  };

  const readSmallBody = async (c: Context<RegistryEnv>, limit: number): Promise<Buffer> => {
    const len = c.req.header('content-length');
    if (len !== undefined && Number(len) > limit) {
      throw new RegistryError(413, 'SIZE_INVALID', `body of ${len} bytes exceeds the limit of ${limit}`, { limit });
    }
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const chunk of bodyOf(c)) {
      n += (chunk as Buffer).length;
      if (n > limit) throw new RegistryError(413, 'SIZE_INVALID', `body exceeds the limit of ${limit} bytes`, { limit });
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  };

  /** Writes headers and a file stream straight to the Node response when there is one. */
  const send = async (
    c: Context<RegistryEnv>,
    status: number,
    headers: Record<string, string>,
    body: Readable | undefined,
  ): Promise<Response> => {
    const out = c.env?.outgoing;
    // Not for HEAD: Hono answers HEAD by copying the GET handler's Response, which would
    // lose the already-sent marker and write the headers twice.
    if (out && body) {
      out.writeHead(status, { ...API_VERSION, ...headers });
      await pipeline(body, out).catch(() => body.destroy());
      return alreadySent();
    }
    const web = body ? (Readable.toWeb(body) as unknown as ReadableStream) : null;
    return new Response(web, { status, headers: { ...API_VERSION, ...headers } });
  };

  const empty = (status: number, headers: Record<string, string>) =>
    new Response(null, { status, headers: { ...API_VERSION, 'Content-Length': '0', ...headers } });

  // ---- blobs ----------------------------------------------------------------------------

  const getBlob = async (c: Context<RegistryEnv>, name: string, digestText: string, head: boolean) => {
    checkName(name);
    const digest = checkDigestParam(digestText);
    const info = await blobs.stat(digest);
    if (!info) throw new RegistryError(404, 'BLOB_UNKNOWN', `blob ${digest} unknown to the registry`, { digest });
    const base = {
      'Content-Type': 'application/octet-stream',
      'Docker-Content-Digest': digest,
      ETag: `"${digest}"`,
      'Accept-Ranges': 'bytes',
      'Cache-Control': 'max-age=31536000, immutable',
    };
    const range = parseRange(c.req.header('range'), info.size);
    if (range === 'unsatisfiable') {
      throw new RegistryError(416, 'BLOB_UNKNOWN', `range ${c.req.header('range')} not satisfiable (size ${info.size})`, undefined, {
        'Content-Range': `bytes */${info.size}`,
      });
    }
    const span = range ?? { start: 0, end: info.size - 1 };
    const headers: Record<string, string> = range
      ? { ...base, 'Content-Length': String(range.end - range.start + 1), 'Content-Range': `bytes ${range.start}-${range.end}/${info.size}` }
      : { ...base, 'Content-Length': String(info.size) };
    const status = range ? 206 : 200;
    const out = c.env?.outgoing;
    if (head || !out || info.size === 0) return send(c, status, headers, head ? undefined : await blobs.open(digest, range ?? {}));
    // The raw response: the file goes out through reused buffers (file-sender.ts).
    let fh: FileHandle;
    try {
      fh = await open(blobs.path(digest), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new RegistryError(404, 'BLOB_UNKNOWN', `blob ${digest} unknown to the registry`, { digest });
      throw e;
    }
    try {
      out.writeHead(status, { ...API_VERSION, ...headers });
      await sendFileRange(fh, out, span.start, span.end);
    } catch (e) {
      // Headers are out: the only way left to say "incomplete" is to cut the connection.
      if (!out.destroyed) options.logger?.warn({ err: e, digest }, 'blob download cut short');
      out.destroy();
    } finally {
      await fh.close();
    }
    return alreadySent();
  };

  const uploadHeaders = (name: string, u: Upload) => ({
    Location: `/v2/${name}/blobs/uploads/${u.id}`,
    Range: uploadRange(u.offset),
    'Docker-Upload-UUID': u.id,
  });

  /** Refuses at once, before reading, a body that announces more than the limit allows. */
  const checkAnnounced = (c: Context<RegistryEnv>, offset: number) => {
    const len = c.req.header('content-length');
    if (len !== undefined && offset + Number(len) > maxBlobBytes) {
      throw new RegistryError(413, 'SIZE_INVALID', `blob would be ${offset + Number(len)} bytes; the limit is ${maxBlobBytes}`, { limit: maxBlobBytes });
    }
  };

  const findUpload = async (id: string): Promise<Upload> => {
    const u = await blobs.getUpload(id);
    if (!u) throw new RegistryError(404, 'BLOB_UPLOAD_UNKNOWN', `upload ${JSON.stringify(id)} unknown (finished, cancelled or expired)`, { id });
    return u;
  };

  const created = (name: string, digest: Digest) =>
    empty(201, { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest });

  const startUpload = async (c: Context<RegistryEnv>, name: string) => {
    checkName(name);
    const mount = c.req.query('mount');
    if (mount !== undefined) {
      // Blobs are shared by the whole store: mounting is "is it here?". No auth, so `from` is not checked further.
      if (isDigest(mount) && (await blobs.has(mount))) return created(name, mount);
    }
    const digest = c.req.query('digest');
    if (digest !== undefined) {
      const expected = checkDigestParam(digest);
      checkAnnounced(c, 0);
      const info = await blobs.ingest(bodyOf(c), { expected, maxBytes: maxBlobBytes });
      return created(name, info.digest);
    }
    const u = await blobs.beginUpload();
    return empty(202, uploadHeaders(name, u));
  };

  const patchUpload = async (c: Context<RegistryEnv>, name: string, id: string) => {
    checkName(name);
    const u = await findUpload(id);
    const cr = c.req.header('content-range');
    if (cr !== undefined) {
      const m = /^(?:bytes )?(\d+)-(\d+)(?:\/\d+|\/\*)?$/.exec(cr.trim());
      if (!m) throw new RegistryError(400, 'BLOB_UPLOAD_INVALID', `bad Content-Range ${JSON.stringify(cr)}`);
      const start = Number(m[1]);
      const end = Number(m[2]);
      const len = c.req.header('content-length');
      if (start !== u.offset) {
        throw new RegistryError(416, 'BLOB_UPLOAD_INVALID', `chunk starts at ${start} but the upload is at ${u.offset}`, { offset: u.offset }, uploadHeaders(name, u));
      }
      if (end < start || (len !== undefined && Number(len) !== end - start + 1)) {
        throw new RegistryError(416, 'BLOB_UPLOAD_INVALID', `Content-Range ${cr} disagrees with Content-Length ${len}`, undefined, uploadHeaders(name, u));
      }
    }
    checkAnnounced(c, u.offset);
    await u.append(bodyOf(c), { maxBytes: maxBlobBytes });
    return empty(202, uploadHeaders(name, u));
  };

  const finishUpload = async (c: Context<RegistryEnv>, name: string, id: string) => {
    checkName(name);
    const digest = checkDigestParam(c.req.query('digest'));
    const u = await findUpload(id);
    if (hasBody(c)) {
      const cr = c.req.header('content-range');
      const m = cr ? /^(?:bytes )?(\d+)-/.exec(cr.trim()) : null;
      if (m && Number(m[1]) !== u.offset) {
        throw new RegistryError(416, 'BLOB_UPLOAD_INVALID', `chunk starts at ${m[1]} but the upload is at ${u.offset}`, undefined, uploadHeaders(name, u));
      }
      checkAnnounced(c, u.offset);
      await u.append(bodyOf(c), { maxBytes: maxBlobBytes });
    }
    const info = await u.commit(digest);
    return created(name, info.digest);
  };

  // ---- manifests ------------------------------------------------------------------------

  const checkReference = (reference: string) => {
    if (!isDigest(reference) && !isTagName(reference)) {
      throw new RegistryError(400, isDigestLike(reference) ? 'DIGEST_INVALID' : 'TAG_INVALID', `invalid reference ${JSON.stringify(reference)}`, { reference });
    }
  };

  const getManifest = async (c: Context<RegistryEnv>, name: string, reference: string, head: boolean) => {
    checkName(name);
    checkReference(reference);
    const m = await store.getManifest(name, reference);
    if (!m) throw new RegistryError(404, 'MANIFEST_UNKNOWN', `manifest ${name}:${reference} unknown`, { name, reference });
    const headers = {
      ...API_VERSION,
      'Content-Type': m.mediaType,
      'Content-Length': String(m.bytes.length),
      'Docker-Content-Digest': m.digest,
      ETag: `"${m.digest}"`,
    };
    return new Response(head ? null : new Uint8Array(m.bytes), { status: 200, headers });
  };

  const putManifest = async (c: Context<RegistryEnv>, name: string, reference: string) => {
    checkName(name);
    checkReference(reference);
    const bytes = await readSmallBody(c, maxManifestBytes);
    const { digest, subject } = await store.putManifest(name, reference, bytes, c.req.header('content-type'));
    // OCI-Subject tells the client this registry keeps referrers (no fallback tag needed).
    return empty(201, { Location: `/v2/${name}/manifests/${digest}`, 'Docker-Content-Digest': digest, ...(subject ? { 'OCI-Subject': subject } : {}) });
  };

  /** OCI 1.1 referrers API: an index of the manifests whose subject is `digest`. */
  const referrers = async (c: Context<RegistryEnv>, name: string, digestText: string) => {
    checkName(name);
    const digest = checkDigestParam(digestText);
    const artifactType = c.req.query('artifactType');
    const r = await store.referrers(name, digest, artifactType === undefined ? {} : { artifactType });
    const headers: Record<string, string> = { 'Content-Type': MediaType.ociIndex };
    if (r.filtersApplied.length > 0) headers['OCI-Filters-Applied'] = r.filtersApplied.join(',');
    return new Response(JSON.stringify(r.index), { status: 200, headers: { ...API_VERSION, ...headers } });
  };

  const deleteManifest = async (name: string, reference: string) => {
    checkName(name);
    checkReference(reference);
    try {
      await store.deleteManifest(name, reference);
    } catch (e) {
      if (isShoalError(e) && e.code === 'not-found') {
        throw new RegistryError(404, 'MANIFEST_UNKNOWN', e.message, { name, reference });
      }
      throw e;
    }
    return empty(202, {});
  };

  // ---- listings -------------------------------------------------------------------------

  const page = (c: Context<RegistryEnv>, all: string[], link: (n: number, last: string) => string) => {
    const nText = c.req.query('n');
    const last = c.req.query('last');
    let items = last !== undefined ? all.filter((t) => t > last) : all;
    const headers: Record<string, string> = {};
    if (nText !== undefined) {
      if (!/^\d+$/.test(nText)) throw new RegistryError(400, 'PAGINATION_NUMBER_INVALID', `invalid n ${JSON.stringify(nText)}`);
      const n = Number(nText);
      if (items.length > n) {
        items = items.slice(0, n);
        if (n > 0) headers.Link = `<${link(n, items[items.length - 1]!)}>; rel="next"`;
      }
    }
    return { items, headers };
  };

  const listTags = async (c: Context<RegistryEnv>, name: string) => {
    checkName(name);
    if (!(await store.hasRepository(name))) throw new RegistryError(404, 'NAME_UNKNOWN', `repository ${name} unknown`, { name });
    const { items, headers } = page(c, await store.listTags(name), (n, last) => `/v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(last)}`);
    return c.json({ name, tags: items }, 200, { ...API_VERSION, ...headers });
  };

  const catalog = async (c: Context<RegistryEnv>) => {
    const { items, headers } = page(c, await store.listRepositories(), (n, last) => `/v2/_catalog?n=${n}&last=${encodeURIComponent(last)}`);
    return c.json({ repositories: items }, 200, { ...API_VERSION, ...headers });
  };

  // ---- dispatch -------------------------------------------------------------------------

  const dispatch = async (c: Context<RegistryEnv>): Promise<Response> => {
    const method = c.req.method;
    const route = parseRegistryPath(c.req.path);
    if (!route) throw new RegistryError(404, 'NOT_FOUND', `no such endpoint ${c.req.path}`);
    const wrong = (): never => {
      throw new RegistryError(405, 'UNSUPPORTED', `${method} is not supported on ${c.req.path}`);
    };
    switch (route.kind) {
      case 'catalog':
        return method === 'GET' ? catalog(c) : wrong();
      case 'tags':
        return method === 'GET' ? listTags(c, route.name) : wrong();
      case 'referrers':
        return method === 'GET' ? referrers(c, route.name, route.digest) : wrong();
      case 'manifest':
        if (method === 'GET' || method === 'HEAD') return getManifest(c, route.name, route.reference, method === 'HEAD');
        if (method === 'PUT') return putManifest(c, route.name, route.reference);
        if (method === 'DELETE') return deleteManifest(route.name, route.reference);
        return wrong();
      case 'blob':
        if (method === 'GET' || method === 'HEAD') return getBlob(c, route.name, route.digest, method === 'HEAD');
        return wrong();
      case 'uploads': {
        if (route.id === '') return method === 'POST' ? startUpload(c, route.name) : wrong();
        if (method === 'PATCH') return patchUpload(c, route.name, route.id);
        if (method === 'PUT') return finishUpload(c, route.name, route.id);
        if (method === 'GET') {
          checkName(route.name);
          const u = await findUpload(route.id);
          return empty(204, uploadHeaders(route.name, u));
        }
        if (method === 'DELETE') {
          checkName(route.name);
          await (await findUpload(route.id)).cancel();
          return empty(204, {});
        }
        return wrong();
      }
      default: {
        const never: never = route;
        return never;
      }
    }
  };

  const errorResponse = (c: Context<RegistryEnv>, e: unknown): Response => {
    const r = toRegistryError(e);
    if (r.status >= 500) options.logger?.error({ err: e, path: c.req.path, method: c.req.method }, 'registry request failed');
    const out = c.env?.outgoing;
    if (out?.headersSent) {
      out.destroy();
      return alreadySent();
    }
    const body = JSON.stringify({ errors: [{ code: r.code, message: r.message, ...(r.detail === undefined ? {} : { detail: r.detail }) }] });
    const headers: Record<string, string> = { ...API_VERSION, 'Content-Type': 'application/json', ...r.headers };
    // A request we refused before reading its body: close the connection rather than drain gigabytes.
    if (c.env?.incoming && !c.env.incoming.readableEnded && c.req.method !== 'GET' && c.req.method !== 'HEAD') headers.Connection = 'close';
    return new Response(c.req.method === 'HEAD' ? null : body, { status: r.status, headers });
  };

  app.get('/v2', (c) => c.json({}, 200, API_VERSION));
  app.get('/v2/', (c) => c.json({}, 200, API_VERSION));
  app.all('/v2/*', async (c) => {
    try {
      return await dispatch(c);
    } catch (e) {
      return errorResponse(c, e);
    }
  });
  return app;
}

function isDigestLike(s: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:/.test(s);
}

/** Maps a store error to the distribution error code and status. */
function toRegistryError(e: unknown): RegistryError {
  if (e instanceof RegistryError) return e;
  if (!isShoalError(e)) return new RegistryError(500, 'UNKNOWN', 'internal error');
  const s = e as ShoalError;
  const detail = s.detail as { reason?: string; digest?: string } | undefined;
  switch (s.code) {
    case 'invalid':
      if (detail?.reason === 'blob-unknown') return new RegistryError(400, 'MANIFEST_BLOB_UNKNOWN', s.message, { digest: detail.digest, field: s.field });
      if (s.field === 'repository') return new RegistryError(400, 'NAME_INVALID', s.message);
      if (s.field === 'reference' || s.field === 'tag') return new RegistryError(400, 'TAG_INVALID', s.message);
      if (s.field === 'size') return new RegistryError(400, 'SIZE_INVALID', s.message, s.detail);
      return new RegistryError(400, 'MANIFEST_INVALID', s.message, s.field === undefined ? undefined : { field: s.field });
    case 'digest-mismatch':
      return new RegistryError(400, 'DIGEST_INVALID', s.message, s.detail);
    case 'too-large':
      return new RegistryError(413, 'SIZE_INVALID', s.message, s.field === undefined ? undefined : { field: s.field });
    case 'unsupported':
      return new RegistryError(415, 'UNSUPPORTED', s.message, s.field === undefined ? undefined : { field: s.field });
    case 'not-found':
      return new RegistryError(404, 'BLOB_UNKNOWN', s.message);
    case 'conflict':
      return new RegistryError(416, 'BLOB_UPLOAD_INVALID', s.message);
    default:
      return new RegistryError(500, 'UNKNOWN', s.message);
  }
}
