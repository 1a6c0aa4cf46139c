// The blob half of the distribution API: downloads (ranges, HEAD) and uploads
// (monolithic, chunked, cross-repository mount). Blob bodies are the hot path: uploads
// are read from the raw Node request straight into the blob store, downloads go from
// the file to the raw Node response through reused buffers (file-sender.ts).
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { Context } from 'hono';
import type { BlobStore, Upload } from '../blob-store.ts';
import { sendFileRange } from '../file-sender.ts';
import { isDigest, type Digest } from '../../protocol/index.ts';
import { parseRange, uploadRange } from './paths.ts';
import {
  alreadySent,
  API_VERSION,
  bodyOf,
  checkDigestParam,
  checkName,
  empty,
  hasBody,
  RegistryError,
  type RegistryEnv,
} from './wire.ts';

export interface BlobHandlers {
  getBlob(c: Context<RegistryEnv>, name: string, digest: string, head: boolean): Promise<Response>;
  startUpload(c: Context<RegistryEnv>, name: string): Promise<Response>;
  patchUpload(c: Context<RegistryEnv>, name: string, id: string): Promise<Response>;
  finishUpload(c: Context<RegistryEnv>, name: string, id: string): Promise<Response>;
  uploadStatus(name: string, id: string): Promise<Response>;
  cancelUpload(name: string, id: string): Promise<Response>;
}

export interface BlobHandlerOptions {
  blobs: BlobStore;
  maxBlobBytes: number;
  logger?: { warn(obj: object, msg?: string): void } | undefined;
}

/** A web Response (HEAD, empty blobs, or no raw Node response to write to). */
function webResponse(status: number, headers: Record<string, string>, body: Readable | undefined): Response {
  const web = body ? (Readable.toWeb(body) as unknown as ReadableStream) : null;
  return new Response(web, { status, headers: { ...API_VERSION, ...headers } });
}

export function createBlobHandlers(options: BlobHandlerOptions): BlobHandlers {
  const { blobs, maxBlobBytes } = options;

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
    if (head || !out || info.size === 0) return webResponse(status, headers, head ? undefined : await blobs.open(digest, range ?? {}));
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
      // Touched: a mount is an upload, and gc --min-age spares recent uploads.
      if (isDigest(mount) && (await blobs.touch(mount))) return created(name, mount);
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

  return {
    getBlob,
    startUpload,
    patchUpload,
    finishUpload,
    async uploadStatus(name, id) {
      checkName(name);
      return empty(204, uploadHeaders(name, await findUpload(id)));
    },
    async cancelUpload(name, id) {
      checkName(name);
      await (await findUpload(id)).cancel();
      return empty(204, {});
    },
  };
}
