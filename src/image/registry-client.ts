// Shoal's own OCI distribution client: the host agent pulls layers with it, the CLI
// pushes with it. It speaks the standard /v2/ API (so it works against any registry
// that needs no auth), over undici (the project's one HTTP client, src/http): its fetch for
// the small JSON exchanges, its request (Node streams, no web streams) for layers.
// Every byte it receives is checked against the digest that names it.
import { undiciConnect } from '../http/index.ts';
import { createHash, randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { Agent, fetch, request, type Dispatcher, type RequestInit, type Response } from 'undici';
import { Readable } from 'node:stream';
import {
  isDigest,
  type Digest,
  isErrorCode,
  ShoalError,
  type ErrorCode,
  formatImageRef,
  isRepositoryName,
  isTagName,
  type ImageRef,
  indexMediaTypes,
  manifestMediaTypes,
  type Descriptor,
} from '../protocol/index.ts';
import {
  createLayoutWriter,
  MAX_MANIFEST_BYTES,
  readLayout,
  resolveImageManifest,
  type Platform,
} from './oci-layout.ts';

export interface RegistryClientOptions {
  /** The store's (or any registry's) base URL, e.g. http://127.0.0.1:5000 */
  baseUrl: string;
  userAgent?: string;
  /** Blobs moved at once by pullImage / pushImage (default 4). */
  concurrency?: number;
  /** An API token sent as `Authorization: Bearer` (pushes need one; pulls when the store says so). */
  token?: string;
  /** A whole Authorization header value (another registry's Basic or Bearer; see registry-auth.ts); wins over `token`. */
  authorization?: string;
  /** Each request but a layer download (including reading its body) is aborted after this long (default: none); downloadBlob's signal bounds layers. */
  requestTimeoutMs?: number;
  /** Carries every request (another registry's: the egress guard, src/http/egress-guard.ts). */
  dispatcher?: Dispatcher;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

export type PushBlobOutcome = 'exists' | 'mounted' | 'uploaded';

export interface RegistryClient {
  readonly baseUrl: string;
  readonly concurrency: number;
  ping(): Promise<void>;
  /** The blob's size, or undefined when the repository lacks it. */
  hasBlob(repo: string, digest: Digest): Promise<number | undefined>;
  /** The blob's raw bytes (not verified: downloadBlob verifies). `range` is inclusive. */
  fetchBlob(repo: string, digest: Digest, opts?: { range?: [number, number]; signal?: AbortSignal }): Promise<Readable>;
  /**
   * Downloads a blob into `destFile`, verifying its digest (and expectedSize) while
   * writing to a temp file that is renamed only when it matches: a mismatch throws
   * digest-mismatch and leaves no file. With `durable` (default true) the file is
   * fsynced before the rename, so a crash never leaves a truncated file under a digest
   * name (what skopeo does too).
   */
  downloadBlob(
    repo: string,
    digest: Digest,
    destFile: string,
    opts?: { expectedSize?: number; onBytes?(n: number): void; signal?: AbortSignal; durable?: boolean },
  ): Promise<{ size: number }>;
  /**
   * Uploads a blob unless the repository has it (HEAD first) or can mount it from
   * `mountFrom`. Small blobs go in one request, large ones in `chunkSize` PATCHes.
   * `open` is called again for each attempt that needs the bytes.
   */
  pushBlob(
    repo: string,
    digest: Digest,
    size: number,
    open: () => Readable,
    opts?: { mountFrom?: string; chunkSize?: number; onBytes?(n: number): void; signal?: AbortSignal },
  ): Promise<PushBlobOutcome>;
  /** undefined when the repository has no such manifest. */
  getManifest(repo: string, reference: string, accept?: string[]): Promise<FetchedManifest | undefined>;
  putManifest(repo: string, reference: string, bytes: Uint8Array, mediaType: string): Promise<Digest>;
  deleteManifest(repo: string, reference: string): Promise<void>;
  /** All tags, following Link pagination. */
  listTags(repo: string): Promise<string[]>;
  catalog(): Promise<string[]>;
}

/** Blobs up to this size go up in one request. */
const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;
const ERROR_BODY_LIMIT = 64 * 1024;

export function createRegistryClient(options: RegistryClientOptions): RegistryClient {
  let base: URL;
  try {
    base = new URL(options.baseUrl);
  } catch {
    throw new ShoalError('invalid', `not a URL: ${JSON.stringify(options.baseUrl)}`, { field: 'baseUrl' });
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new ShoalError('invalid', `the store URL must be http or https, got ${options.baseUrl}`, { field: 'baseUrl' });
  }
  const baseUrl = base.href.replace(/\/+$/, '');
  const userAgent = options.userAgent ?? 'shoal';
  const auth: Record<string, string> =
    options.authorization !== undefined ? { authorization: options.authorization } : options.token === undefined ? {} : { authorization: `Bearer ${options.token}` };
  const bounded = (signal: AbortSignal | undefined): AbortSignal | undefined => {
    if (options.requestTimeoutMs === undefined) return signal;
    const timeout = AbortSignal.timeout(options.requestTimeoutMs);
    return signal === undefined ? timeout : AbortSignal.any([signal, timeout]);
  };
  const concurrency = options.concurrency ?? 4;

  const urlFor = (path: string): URL => new URL(baseUrl + path);

  interface RequestInit2 {
    headers?: Record<string, string>;
    body?: Uint8Array | ReadableStream<Uint8Array>;
    signal?: AbortSignal | undefined;
    /** Layers: the caller's signal carries their own deadline, not requestTimeoutMs. */
    ownDeadline?: boolean;
  }

  async function send(method: string, url: URL | string, what: string, init: RequestInit2 = {}): Promise<Response> {
    const headers: Record<string, string> = { 'user-agent': userAgent, ...auth, ...init.headers };
    try {
      return await fetch(url, {
        method,
        headers,
        body: init.body ?? null,
        signal: (init.ownDeadline ? init.signal : bounded(init.signal)) ?? null,
        redirect: 'follow',
        ...(options.dispatcher === undefined ? {} : { dispatcher: options.dispatcher }),
        ...(init.body instanceof ReadableStream ? { duplex: 'half' } : {}),
      } as RequestInit);
    } catch (e) {
      throw networkError(e, what, baseUrl);
    }
  }

  /** Sends, and turns any status outside `ok` into a ShoalError built from the body. */
  async function call(method: string, url: URL | string, what: string, ok: number[], init: RequestInit2 = {}): Promise<Response> {
    const res = await send(method, url, what, init);
    if (ok.includes(res.status)) return res;
    throw await responseError(res, what);
  }

  function checkRepo(repo: string): void {
    if (!isRepositoryName(repo)) throw new ShoalError('invalid', `bad repository name ${JSON.stringify(repo)}`, { field: 'repository' });
  }
  function checkReference(reference: string): void {
    if (!isDigest(reference) && !isTagName(reference)) throw new ShoalError('invalid', `bad reference ${JSON.stringify(reference)}: neither a tag nor a sha256 digest`, { field: 'reference' });
  }
  function checkDigest(digest: string): asserts digest is Digest {
    if (!isDigest(digest)) throw new ShoalError('invalid', `not a sha256 digest: ${JSON.stringify(digest)}`, { field: 'digest' });
  }

  async function listPaged(first: string, key: 'tags' | 'repositories', what: string): Promise<string[]> {
    const out: string[] = [];
    let next: URL | undefined = urlFor(first);
    for (let page = 0; next !== undefined; page++) {
      if (page > 10_000) throw new ShoalError('internal', `${what}: more than 10000 pages`);
      const res = await call('GET', next, what, [200]);
      const body = (await res.json()) as Record<string, unknown>;
      const items = body[key];
      if (items !== null && items !== undefined) {
        if (!Array.isArray(items) || items.some((t) => typeof t !== 'string')) throw new ShoalError('invalid', `${what}: the store's reply has no ${key} list`);
        out.push(...(items as string[]));
      }
      const link = res.headers.get('link');
      const m = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
      next = m?.[1] ? new URL(m[1], baseUrl + '/') : undefined;
    }
    return out;
  }

  async function readLimited(res: Response, limit: number, what: string): Promise<Buffer> {
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > limit) {
      await res.body?.cancel();
      throw new ShoalError('too-large', `${what}: ${declared} bytes, more than the ${limit} allowed`);
    }
    const chunks: Buffer[] = [];
    let n = 0;
    if (res.body) {
      for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
        n += c.length;
        if (n > limit) throw new ShoalError('too-large', `${what}: more than the ${limit} bytes allowed`);
        chunks.push(Buffer.from(c.buffer, c.byteOffset, c.length));
      }
    }
    return Buffer.concat(chunks, n);
  }

  const client: RegistryClient = {
    baseUrl,
    concurrency,

    async ping() {
      const res = await call('GET', urlFor('/v2/'), `ping ${baseUrl}`, [200]);
      await res.body?.cancel();
    },

    async hasBlob(repo, digest) {
      checkRepo(repo);
      checkDigest(digest);
      const what = `blob ${digest} in ${repo}`;
      const res = await send('HEAD', urlFor(`/v2/${repo}/blobs/${digest}`), what);
      if (res.status === 404) return undefined;
      if (res.status !== 200) throw await responseError(res, what);
      const len = res.headers.get('content-length');
      return len === null ? 0 : Number(len);
    },

    async fetchBlob(repo, digest, opts = {}) {
      checkRepo(repo);
      checkDigest(digest);
      const what = `blob ${digest} in ${repo}`;
      const headers: Record<string, string> = {};
      if (opts.range) headers['range'] = `bytes=${opts.range[0]}-${opts.range[1]}`;
      const res = await call('GET', urlFor(`/v2/${repo}/blobs/${digest}`), what, opts.range ? [206, 200] : [200], { headers, signal: opts.signal });
      if (opts.range && res.status === 200) {
        await res.body?.cancel();
        throw new ShoalError('unsupported', `${what}: the store ignored the byte range ${opts.range[0]}-${opts.range[1]}`);
      }
      if (!res.body) throw new ShoalError('invalid', `${what}: the store sent no body`);
      return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
    },

    async downloadBlob(repo, digest, destFile, opts = {}) {
      checkRepo(repo);
      checkDigest(digest);
      const what = `blob ${digest} in ${repo}`;
      const url = urlFor(`/v2/${repo}/blobs/${digest}`);
      // Layers are the bulk of every pull: over plain http they stream through undici's
      // request (Node streams), which moves bytes at about twice fetch's rate here (fetch's
      // web streams cost CPU per chunk); https and redirects to other hosts keep using fetch.
      const res = url.protocol === 'http:' ? await httpGet(url, what, { 'user-agent': userAgent, ...auth }, opts.signal, options.dispatcher) : await call('GET', url, what, [200], { signal: opts.signal, ownDeadline: true });
      const declared = res.headers.get('content-length');
      if (opts.expectedSize !== undefined && declared !== null && Number(declared) !== opts.expectedSize) {
        await ('stream' in res ? res.cancel() : res.body?.cancel());
        throw new ShoalError('digest-mismatch', `${what}: the store offers ${declared} bytes, the manifest declares ${opts.expectedSize}`);
      }
      const body = 'stream' in res ? res.stream : res.body;
      if (!body) throw new ShoalError('invalid', `${what}: the store sent no body`);
      const tmp = `${destFile}.tmp-${randomBytes(6).toString('hex')}`;
      const size = await writeVerified(body, tmp, { digest, expectedSize: opts.expectedSize, onBytes: opts.onBytes, what, durable: opts.durable ?? true });
      await rename(tmp, destFile).catch(async (e: unknown) => {
        await rm(tmp, { force: true });
        throw e;
      });
      return { size };
    },

    async pushBlob(repo, digest, size, openSource, opts = {}) {
      checkRepo(repo);
      checkDigest(digest);
      const what = `blob ${digest} to ${repo}`;
      if ((await client.hasBlob(repo, digest)) !== undefined) return 'exists';

      const uploads = `/v2/${repo}/blobs/uploads/`;
      let location: string | undefined;
      if (opts.mountFrom !== undefined) {
        checkRepo(opts.mountFrom);
        const url = urlFor(uploads);
        url.searchParams.set('mount', digest);
        url.searchParams.set('from', opts.mountFrom);
        const res = await call('POST', url, `mount ${what} from ${opts.mountFrom}`, [201, 202], { signal: opts.signal });
        await res.body?.cancel();
        if (res.status === 201) return 'mounted';
        location = res.headers.get('location') ?? undefined; // the registry started an upload instead
      }

      const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
      if (size <= chunkSize && location === undefined) {
        // One request: POST ?digest= with the whole body (the spec's monolithic upload).
        const body = await readAll(openSource(), size, digest, what);
        const url = urlFor(uploads);
        url.searchParams.set('digest', digest);
        const res = await call('POST', url, `upload ${what}`, [201, 202], { headers: { 'content-type': 'application/octet-stream' }, body, signal: opts.signal });
        await res.body?.cancel();
        if (res.status === 201) {
          opts.onBytes?.(size);
          return 'uploaded';
        }
        // 202: the registry opened a session instead of taking the body; PUT it there.
        const loc = uploadLocation(res, what);
        const put = withDigest(loc, digest);
        const done = await call('PUT', put, `upload ${what}`, [201], { headers: { 'content-type': 'application/octet-stream' }, body, signal: opts.signal });
        await done.body?.cancel();
        opts.onBytes?.(size);
        return 'uploaded';
      }

      if (location === undefined) {
        const res = await call('POST', urlFor(uploads), `upload ${what}`, [202], { signal: opts.signal });
        await res.body?.cancel();
        location = uploadLocation(res, what);
      }
      const hash = createHash('sha256');
      let offset = 0;
      try {
        for await (const chunk of chunksOf(openSource(), chunkSize)) {
          if (offset + chunk.length > size) throw new ShoalError('digest-mismatch', `${what}: the source has more than the ${size} bytes declared`);
          hash.update(chunk);
          const res = await call('PATCH', new URL(location, baseUrl + '/'), `upload ${what}`, [202, 204], {
            headers: {
              'content-type': 'application/octet-stream',
              'content-range': `${offset}-${offset + chunk.length - 1}`,
            },
            body: chunk,
            signal: opts.signal,
          });
          await res.body?.cancel();
          location = uploadLocation(res, what);
          offset += chunk.length;
          opts.onBytes?.(chunk.length);
        }
        const actual = `sha256:${hash.digest('hex')}`;
        if (offset !== size || actual !== digest) {
          throw new ShoalError('digest-mismatch', `${what}: the source has ${offset} bytes hashing to ${actual}, expected ${size} bytes ${digest}`);
        }
        const res = await call('PUT', withDigest(location, digest), `upload ${what}`, [201], { signal: opts.signal });
        await res.body?.cancel();
        return 'uploaded';
      } catch (e) {
        // Best effort: tell the registry to drop the half-done session.
        await send('DELETE', new URL(location, baseUrl + '/'), `cancel upload ${what}`)
          .then((r) => r.body?.cancel())
          .catch(() => undefined);
        throw e;
      }
    },

    async getManifest(repo, reference, accept = [...manifestMediaTypes, ...indexMediaTypes]) {
      checkRepo(repo);
      checkReference(reference);
      const what = `manifest ${repo}:${reference}`;
      const res = await send('GET', urlFor(`/v2/${repo}/manifests/${reference}`), what, { headers: { accept: accept.join(', ') } });
      if (res.status === 404) {
        await res.body?.cancel();
        return undefined;
      }
      if (res.status !== 200) throw await responseError(res, what);
      const bytes = await readLimited(res, MAX_MANIFEST_BYTES, what);
      const digest: Digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      if (isDigest(reference) && reference !== digest) {
        throw new ShoalError('digest-mismatch', `${what}: the store sent a manifest hashing to ${digest}`);
      }
      const header = res.headers.get('docker-content-digest');
      if (header !== null && header !== digest) {
        throw new ShoalError('digest-mismatch', `${what}: the store says ${header} but the manifest hashes to ${digest}`);
      }
      let mediaType = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
      if (mediaType === '' || mediaType === 'application/json' || mediaType === 'application/octet-stream') {
        try {
          const own = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType;
          if (typeof own === 'string') mediaType = own;
        } catch {
          // left to the caller's parser to report
        }
      }
      return { bytes, mediaType, digest };
    },

    async putManifest(repo, reference, bytes, mediaType) {
      checkRepo(repo);
      checkReference(reference);
      const what = `manifest ${repo}:${reference}`;
      if (bytes.length > MAX_MANIFEST_BYTES) throw new ShoalError('too-large', `${what}: ${bytes.length} bytes, more than ${MAX_MANIFEST_BYTES}`);
      const digest: Digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      if (isDigest(reference) && reference !== digest) throw new ShoalError('digest-mismatch', `${what}: the manifest hashes to ${digest}`);
      const res = await call('PUT', urlFor(`/v2/${repo}/manifests/${reference}`), `push ${what}`, [200, 201], {
        headers: { 'content-type': mediaType },
        body: bytes,
      });
      await res.body?.cancel();
      const header = res.headers.get('docker-content-digest');
      if (header !== null && header !== digest) {
        throw new ShoalError('digest-mismatch', `push ${what}: the store recorded ${header}, the manifest hashes to ${digest}`);
      }
      return digest;
    },

    async deleteManifest(repo, reference) {
      checkRepo(repo);
      checkReference(reference);
      const res = await call('DELETE', urlFor(`/v2/${repo}/manifests/${reference}`), `delete manifest ${repo}:${reference}`, [200, 202, 204]);
      await res.body?.cancel();
    },

    async listTags(repo) {
      checkRepo(repo);
      return listPaged(`/v2/${repo}/tags/list?n=1000`, 'tags', `tags of ${repo}`);
    },

    async catalog() {
      return listPaged('/v2/_catalog?n=1000', 'repositories', 'catalog');
    },
  };
  return client;

  function uploadLocation(res: Response, what: string): string {
    const loc = res.headers.get('location');
    if (!loc) throw new ShoalError('invalid', `${what}: the store's upload reply has no Location`);
    return loc;
  }
  function withDigest(location: string, digest: Digest): URL {
    const url = new URL(location, baseUrl + '/');
    url.searchParams.set('digest', digest);
    return url;
  }
}

// ---------------------------------------------------------------------------------
// Streaming helpers

/**
 * Writes a web stream to `file`, hashing as it goes; fails (and removes the file)
 * when the bytes do not match. Writes are batched and overlap the next reads.
 */
async function writeVerified(
  body: AsyncIterable<Uint8Array>,
  file: string,
  opts: { digest: Digest; expectedSize: number | undefined; onBytes: ((n: number) => void) | undefined; what: string; durable: boolean },
): Promise<number> {
  const fh = await open(file, 'w');
  const hash = createHash('sha256');
  let size = 0;
  let batch: Uint8Array[] = [];
  let batchBytes = 0;
  let inflight: Promise<unknown> = Promise.resolve();
  const iterator = body[Symbol.asyncIterator]();
  try {
    for (;;) {
      const { done, value } = await iterator.next();
      if (done) break;
      size += value.length;
      if (opts.expectedSize !== undefined && size > opts.expectedSize) {
        throw new ShoalError('digest-mismatch', `${opts.what}: the store sent more than the ${opts.expectedSize} bytes declared`);
      }
      hash.update(value);
      batch.push(value);
      batchBytes += value.length;
      opts.onBytes?.(value.length);
      if (batchBytes >= 1024 * 1024) {
        await inflight;
        const out = batch;
        batch = [];
        batchBytes = 0;
        inflight = fh.writev(out);
      }
    }
    await inflight;
    if (batch.length > 0) await fh.writev(batch);
    const actual = `sha256:${hash.digest('hex')}`;
    if (opts.expectedSize !== undefined && size !== opts.expectedSize) {
      throw new ShoalError('digest-mismatch', `${opts.what}: the store sent ${size} bytes, ${opts.expectedSize} declared`);
    }
    if (actual !== opts.digest) {
      throw new ShoalError('digest-mismatch', `${opts.what}: the bytes received hash to ${actual}`, { detail: { expected: opts.digest, actual } });
    }
    if (opts.durable) await fh.datasync();
    await fh.close();
    return size;
  } catch (e) {
    await inflight.catch(() => undefined);
    await iterator.return?.().catch(() => undefined);
    await fh.close().catch(() => undefined);
    await rm(file, { force: true });
    throw e;
  }
}

/** Layer downloads: kept-alive connections per store, up to 16 at once; made on first use, so it trusts the CA a role set at start (--tls-ca). */
let blobAgentMade: Agent | undefined;
const blobAgent = (): Agent => (blobAgentMade ??= new Agent({ connections: 16, ...(undiciConnect() === undefined ? {} : { connect: undiciConnect()! }) }));

interface StreamReply {
  status: number;
  headers: { get(name: string): string | null };
  stream: Dispatcher.ResponseData['body'];
  cancel(): Promise<void>;
}

/** GET with undici's request (a Node stream body); a status other than 200 becomes the same ShoalError fetch's path gives. */
async function httpGet(url: URL, what: string, requestHeaders: Record<string, string>, signal: AbortSignal | undefined, dispatcher: Dispatcher | undefined): Promise<StreamReply> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, { method: 'GET', dispatcher: dispatcher ?? blobAgent(), headers: requestHeaders, ...(signal ? { signal } : {}) });
  } catch (e) {
    throw signal?.aborted ? e : networkError(e, what, url.origin);
  }
  const headers = {
    get: (name: string) => {
      const v = res.headers[name.toLowerCase()];
      return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
    },
  };
  if (res.statusCode === 200) return { status: 200, headers, stream: res.body, cancel: async () => void res.body.destroy() };
  throw await responseError({ status: res.statusCode, arrayBuffer: () => res.body.arrayBuffer() }, what);
}

async function readAll(source: Readable, size: number, digest: Digest, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of source) {
    const b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
    n += b.length;
    if (n > size) {
      source.destroy();
      throw new ShoalError('digest-mismatch', `${what}: the source has more than the ${size} bytes declared`);
    }
    chunks.push(b);
  }
  const body = Buffer.concat(chunks, n);
  const actual = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  if (n !== size || actual !== digest) {
    throw new ShoalError('digest-mismatch', `${what}: the source has ${n} bytes hashing to ${actual}, expected ${size} bytes ${digest}`);
  }
  return body;
}

/** Re-chunks a stream into buffers of exactly `size` bytes (the last may be shorter). */
async function* chunksOf(source: Readable, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const c of source) {
    let b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
    while (b.length > 0) {
      const take = Math.min(size - have, b.length);
      parts.push(b.subarray(0, take));
      have += take;
      b = b.subarray(take);
      if (have === size) {
        yield Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}

// ---------------------------------------------------------------------------------
// Errors

function networkError(e: unknown, what: string, baseUrl: string): ShoalError {
  if (e instanceof ShoalError) return e;
  const err = e as Error & { cause?: { code?: string; message?: string } };
  if (err.name === 'AbortError' || err.name === 'TimeoutError') return new ShoalError('timeout', `${what}: ${err.name === 'TimeoutError' ? 'timed out' : 'aborted'}`, { cause: e });
  const code = err.cause?.code ?? '';
  const reason = err.cause?.message ?? err.message;
  // The egress guard's refusal says what to do about it: keep its words.
  return new ShoalError('unavailable', `cannot reach the store at ${baseUrl} (${what}): ${code === 'ESHOALEGRESS' ? reason : code || reason}`, { cause: e, detail: { code } });
}

const REGISTRY_CODES: Record<string, ErrorCode> = {
  BLOB_UNKNOWN: 'not-found',
  BLOB_UPLOAD_UNKNOWN: 'not-found',
  MANIFEST_UNKNOWN: 'not-found',
  NAME_UNKNOWN: 'not-found',
  MANIFEST_BLOB_UNKNOWN: 'invalid',
  BLOB_UPLOAD_INVALID: 'invalid',
  MANIFEST_INVALID: 'invalid',
  NAME_INVALID: 'invalid',
  TAG_INVALID: 'invalid',
  SIZE_INVALID: 'invalid',
  RANGE_INVALID: 'invalid',
  DIGEST_INVALID: 'digest-mismatch',
  UNAUTHORIZED: 'unauthorized',
  DENIED: 'forbidden',
  UNSUPPORTED: 'unsupported',
  TOOMANYREQUESTS: 'unavailable',
};

function codeForStatus(status: number): ErrorCode {
  if (status === 400) return 'invalid';
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not-found';
  if (status === 405 || status === 415) return 'unsupported';
  if (status === 409) return 'conflict';
  if (status === 413) return 'too-large';
  if (status === 416) return 'invalid';
  if (status === 429 || status === 502 || status === 503) return 'unavailable';
  if (status === 504) return 'timeout';
  return 'internal';
}

/** Builds a ShoalError from a registry reply: its `errors` list, or Shoal's `error`. */
/** What responseError reads of a reply: a fetch Response or an undici request's. */
interface ErrorReply {
  status: number;
  arrayBuffer(): Promise<ArrayBuffer>;
}

async function responseError(res: ErrorReply, what: string): Promise<ShoalError> {
  let text = '';
  try {
    text = Buffer.from(await res.arrayBuffer()).subarray(0, ERROR_BODY_LIMIT).toString('utf8');
  } catch {
    // the body is only for the message
  }
  let code = codeForStatus(res.status);
  let message = '';
  let detail: unknown;
  try {
    const body = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string; detail?: unknown }>; error?: { code?: string; message?: string } };
    const first = body.errors?.[0];
    if (first) {
      if (first.code && REGISTRY_CODES[first.code]) code = REGISTRY_CODES[first.code]!;
      message = [first.code, first.message].filter(Boolean).join(': ');
      detail = body.errors;
    } else if (body.error?.message) {
      message = body.error.message;
      if (typeof body.error.code === 'string' && isErrorCode(body.error.code)) code = body.error.code;
    }
  } catch {
    message = text.trim().slice(0, 200);
  }
  return new ShoalError(code, `${what}: HTTP ${res.status}${message ? ` ${message}` : ''}`, { detail });
}

// ---------------------------------------------------------------------------------
// Whole images

/** Runs `fn` over `items`, at most `limit` at once; the first failure stops the rest. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, signal: AbortSignal) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  const abort = new AbortController();
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!, abort.signal);
      } catch (e) {
        if (failure === undefined) failure = { error: e };
        abort.abort();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure !== undefined) throw failure.error;
  return results;
}

function referenceOf(ref: ImageRef): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

export interface PullProgress {
  digest: Digest;
  /** Bytes of this blob received so far. */
  bytes: number;
  total: number;
}

export interface PullOptions {
  concurrency?: number;
  platform?: Platform;
  /** Name the image gets in the layout's index.json (default: the tag; null for none). */
  refName?: string | null;
  onProgress?(p: PullProgress): void;
  signal?: AbortSignal;
  /** fsync each blob before it gets its name (default true). */
  durable?: boolean;
}

export interface PullResult {
  /** The image manifest's digest (after choosing the platform from an index). */
  manifestDigest: Digest;
  /** Bytes downloaded (blobs the layout already had are not counted). */
  bytes: number;
  /** Blobs downloaded. */
  blobs: number;
  /** Blobs the layout already had. */
  skipped: number;
}

/**
 * Pulls `ref` into an OCI layout directory (created or added to): the image manifest
 * (an index is resolved to the platform's manifest), its config and its layers, in
 * parallel, largest first, skipping blobs the layout has, verifying every digest.
 */
export async function pullImage(client: RegistryClient, ref: ImageRef, dest: { layoutDir: string }, opts: PullOptions = {}): Promise<PullResult> {
  const name = formatImageRef(ref);
  const top = await client.getManifest(ref.repository, referenceOf(ref));
  if (top === undefined) throw new ShoalError('not-found', `image ${name} not found in the store at ${client.baseUrl}`);
  const resolved = await resolveImageManifest(
    {
      async readManifest(desc) {
        if (desc.digest === top.digest) return top.bytes;
        const m = await client.getManifest(ref.repository, desc.digest);
        if (m === undefined) throw new ShoalError('not-found', `image ${name}: manifest ${desc.digest} named by its index is missing from the store`);
        if (m.bytes.length !== desc.size) throw new ShoalError('digest-mismatch', `image ${name}: manifest ${desc.digest} has ${m.bytes.length} bytes, the index declares ${desc.size}`);
        return m.bytes;
      },
    },
    { mediaType: top.mediaType, digest: top.digest, size: top.bytes.length },
    `image ${name}`,
    opts.platform,
  );
  const writer = await createLayoutWriter(dest.layoutDir, { durable: opts.durable ?? true });
  const blobs = uniqueBlobs([resolved.manifest.config, ...resolved.manifest.layers]).sort((a, b) => b.size - a.size);
  let bytes = 0;
  let downloaded = 0;
  let skipped = 0;
  await mapLimit(blobs, opts.concurrency ?? client.concurrency, async (blob, signal) => {
    const digest = blob.digest as Digest;
    if (await writer.hasBlob(digest, blob.size)) {
      skipped++;
      opts.onProgress?.({ digest, bytes: blob.size, total: blob.size });
      return;
    }
    let got = 0;
    const combined = opts.signal ? AbortSignal.any([signal, opts.signal]) : signal;
    const { size } = await client.downloadBlob(ref.repository, digest, writer.blobPath(digest), {
      expectedSize: blob.size,
      signal: combined,
      durable: opts.durable ?? true,
      onBytes: (n) => {
        got += n;
        opts.onProgress?.({ digest, bytes: got, total: blob.size });
      },
    });
    bytes += size;
    downloaded++;
  });
  await writer.addBlob(resolved.bytes, { digest: resolved.descriptor.digest, size: resolved.bytes.length });
  const refName = opts.refName === undefined ? ref.tag : opts.refName ?? undefined;
  const desc: Descriptor = { mediaType: resolved.descriptor.mediaType, digest: resolved.descriptor.digest, size: resolved.bytes.length };
  if (resolved.descriptor.platform) desc.platform = resolved.descriptor.platform;
  writer.setRef(refName, desc);
  await writer.finish();
  return { manifestDigest: resolved.descriptor.digest, bytes, blobs: downloaded, skipped };
}

export interface PushOptions {
  concurrency?: number;
  platform?: Platform;
  /** A repository of the same store to mount blobs from instead of uploading them. */
  mountFrom?: string;
  chunkSize?: number;
  onProgress?(p: PullProgress): void;
}

export interface PushResult {
  manifestDigest: Digest;
  /** Blobs whose bytes were sent. */
  uploaded: number;
  /** Blobs the store had already or mounted. */
  skipped: number;
  /** Bytes sent. */
  bytes: number;
}

/**
 * Pushes one image of an OCI layout (the entry named `reference`, or the only one;
 * an index is resolved to the platform's manifest) to `ref`: blobs first, in
 * parallel, then the manifest under ref's tag (or digest).
 */
export async function pushImage(
  client: RegistryClient,
  source: { layoutDir: string; reference?: string },
  ref: ImageRef,
  opts: PushOptions = {},
): Promise<PushResult> {
  const layout = await readLayout(source.layoutDir);
  const top = layout.resolve(source.reference);
  const resolved = await resolveImageManifest(layout, top, `${source.layoutDir}${source.reference ? `:${source.reference}` : ''}`, opts.platform);
  if (ref.digest !== undefined && ref.digest !== resolved.descriptor.digest) {
    throw new ShoalError('digest-mismatch', `push to ${formatImageRef(ref)}: the image's manifest is ${resolved.descriptor.digest}`);
  }
  const blobs = uniqueBlobs([resolved.manifest.config, ...resolved.manifest.layers]);
  for (const b of blobs) {
    const have = await layout.hasBlob(b.digest as Digest);
    if (have === undefined) throw new ShoalError('not-found', `${source.layoutDir}: blob ${b.digest} (${b.mediaType}) named by the manifest is missing`);
    if (have !== b.size) throw new ShoalError('digest-mismatch', `${source.layoutDir}: blob ${b.digest} has ${have} bytes, the manifest declares ${b.size}`);
  }
  const result = await pushBlobsAndManifest(client, ref, blobs, (d) => layout.openBlob(d), resolved.bytes, resolved.descriptor.mediaType, opts);
  return result;
}

/** Shared by pushImage and importImage: blobs in parallel, then the manifest. */
export async function pushBlobsAndManifest(
  client: RegistryClient,
  ref: ImageRef,
  blobs: readonly Descriptor[],
  openBlob: (digest: Digest) => Readable,
  manifestBytes: Uint8Array,
  manifestMediaType: string,
  opts: PushOptions = {},
): Promise<PushResult> {
  let uploaded = 0;
  let skipped = 0;
  let bytes = 0;
  await mapLimit([...blobs].sort((a, b) => b.size - a.size), opts.concurrency ?? client.concurrency, async (blob, signal) => {
    const digest = blob.digest as Digest;
    let sent = 0;
    const outcome = await client.pushBlob(ref.repository, digest, blob.size, () => openBlob(digest), {
      ...(opts.mountFrom !== undefined ? { mountFrom: opts.mountFrom } : {}),
      ...(opts.chunkSize !== undefined ? { chunkSize: opts.chunkSize } : {}),
      signal,
      onBytes: (n) => {
        sent += n;
        opts.onProgress?.({ digest, bytes: sent, total: blob.size });
      },
    });
    if (outcome === 'uploaded') {
      uploaded++;
      bytes += blob.size;
    } else {
      skipped++;
      opts.onProgress?.({ digest, bytes: blob.size, total: blob.size });
    }
  });
  const manifestDigest = await client.putManifest(ref.repository, ref.tag ?? referenceOf(ref), manifestBytes, manifestMediaType);
  return { manifestDigest, uploaded, skipped, bytes };
}

function uniqueBlobs(list: readonly Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  const out: Descriptor[] = [];
  for (const d of list) {
    if (!isDigest(d.digest)) throw new ShoalError('invalid', `not a sha256 digest: ${JSON.stringify(d.digest)}`);
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    out.push(d);
  }
  return out;
}
