// What every handler of the distribution API shares: the error type and its mapping
// from store errors, the request body as a Node stream, and the small reply shapes.
import { Readable } from 'node:stream';
import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';
import { isDigest, type Digest, isShoalError, type ShoalError, isRepositoryName, isTagName } from '../../protocol/index.ts';

export type RegistryEnv = { Bindings: Partial<HttpBindings> };

export const API_VERSION = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;

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

export class RegistryError extends Error {
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
export function alreadySent(): Response {
  const r = new Response(null, { headers: { 'x-hono-already-sent': 'true' } });
  void r.body;
  return r;
}

export function empty(status: number, headers: Record<string, string>): Response {
  return new Response(null, { status, headers: { ...API_VERSION, 'Content-Length': '0', ...headers } });
}

export function checkName(name: string): void {
  if (!isRepositoryName(name)) {
    throw new RegistryError(400, 'NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`, { name });
  }
}

export function checkDigestParam(d: string | undefined): Digest {
  if (!d || !isDigest(d)) throw new RegistryError(400, 'DIGEST_INVALID', `invalid or missing digest ${JSON.stringify(d ?? '')}`, { digest: d });
  return d;
}

export function checkReference(reference: string): void {
  if (!isDigest(reference) && !isTagName(reference)) {
    throw new RegistryError(400, isDigestLike(reference) ? 'DIGEST_INVALID' : 'TAG_INVALID', `invalid reference ${JSON.stringify(reference)}`, { reference });
  }
}

/** The request body as a Node stream: the raw IncomingMessage when served by node. */
export function bodyOf(c: Context<RegistryEnv>): Readable {
  const incoming = c.env?.incoming;
  if (incoming) return incoming;
  const body = c.req.raw.body;
  return body ? Readable.fromWeb(body as import('node:stream/web').ReadableStream<Uint8Array>) : Readable.from([]);
}

export function hasBody(c: Context<RegistryEnv>): boolean {
  const len = c.req.header('content-length');
  if (len !== undefined) return Number(len) > 0;
  return c.req.header('transfer-encoding') !== undefined || (c.env?.incoming === undefined && c.req.raw.body !== null);
}

export async function readSmallBody(c: Context<RegistryEnv>, limit: number): Promise<Buffer> {
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
}

export function isDigestLike(s: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:/.test(s);
}

/** Maps a store error to the distribution error code and status. */
export function toRegistryError(e: unknown): RegistryError {
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
