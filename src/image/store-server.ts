// The store as a process (`shoal store`) or in-process (`shoal up`, tests): the OCI
// distribution API under /v2/, the control API under /api/v1/, /openapi.json and
// /healthz, on a plain node:http server (Hono through @hono/node-server's request
// listener, so blob handlers can reach the raw request and response).
import { createReadStream } from 'node:fs';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { checkBindAddress, createListener, hardenServer, type TlsIdentity } from '../http/index.ts';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import { createBlobStore, type BlobStore } from './blob-store.ts';
import { createControlApp } from './control-api.ts';
import { createImageStore, type ImageStore, type VetLayer } from './image-store.ts';
import { checkLayer } from './layer-unpack.ts';
import { createRegistryApp, type RegistryEnv } from './registry-api.ts';

export interface StoreLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface StoreAppOptions {
  store: ImageStore;
  blobs?: BlobStore;
  limits?: { maxBlobBytes?: number };
  logger?: StoreLogger;
}

/** The whole store as one Hono app: mount it in a bigger server with app.route('/', …). */
export function createStoreApp(options: StoreAppOptions): Hono<RegistryEnv> {
  const app = new Hono<RegistryEnv>();
  app.route('/', createRegistryApp({ store: options.store, ...(options.blobs ? { blobs: options.blobs } : {}), ...(options.limits ? { limits: options.limits } : {}), ...(options.logger ? { logger: options.logger } : {}) }));
  app.route('/', createControlApp({ store: options.store, ...(options.logger ? { logger: options.logger } : {}) }));
  return app;
}

/**
 * Vets a layer of an image about to run with the same checks the host's unpacker makes
 * (no `..`, no absolute paths, nothing written through a symlink, size and entry
 * limits), and returns its diffId. Reads the blob once, writes nothing. The store calls
 * it once per layer digest, when an image is first resolved (never on the push path).
 */
export function layerVetter(blobs: BlobStore): VetLayer {
  return async (digest, mediaType) => {
    const stats = await checkLayer(createReadStream(blobs.path(digest)), { mediaType });
    return { diffId: stats.diffId };
  };
}

export interface StartStoreOptions {
  dataDir: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Serve HTTPS (required on a non-loopback host unless `insecure`). */
  tls?: TlsIdentity | undefined;
  /** Allow plain HTTP on a non-loopback host (with a warning on stderr). */
  insecure?: boolean;
  /** 0 (default): the OS picks. */
  port?: number;
  /** Vets layers when an image is resolved. Default: layerVetter (checkLayer from layer-unpack.ts). false: none. */
  vetLayer?: VetLayer | false;
  limits?: { maxBlobBytes?: number; maxManifestBytes?: number };
  /** Chunked uploads idle for longer than this are cancelled (default 1 h). */
  uploadTtlMs?: number;
  logger?: StoreLogger;
  /**
   * Runs before every request and calls `next` only for those it lets through: the API
   * token check (src/provider/auth's gate, wired by `shoal store`). Unset: no check.
   */
  gate?: { handle(req: IncomingMessage, res: ServerResponse, next: () => void): void };
}

export interface RunningStore {
  /** http://HOST:PORT */
  url: string;
  store: ImageStore;
  blobs: BlobStore;
  server: Server;
  close(): Promise<void>;
}

export async function startStore(options: StartStoreOptions): Promise<RunningStore> {
  const host = options.host ?? '127.0.0.1';
  checkBindAddress('the store', host, { tls: options.tls !== undefined, insecure: options.insecure });
  const blobs = createBlobStore({ dir: options.dataDir });
  const vetLayer = options.vetLayer === false ? undefined : (options.vetLayer ?? layerVetter(blobs));
  const store = createImageStore({
    dir: options.dataDir,
    blobs,
    ...(vetLayer ? { vetLayer } : {}),
    ...(options.limits?.maxManifestBytes ? { limits: { maxManifestBytes: options.limits.maxManifestBytes } } : {}),
  });
  const app = createStoreApp({
    store,
    blobs,
    ...(options.limits?.maxBlobBytes ? { limits: { maxBlobBytes: options.limits.maxBlobBytes } } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
  const listener = getRequestListener(app.fetch);
  const gate = options.gate;
  const server = createListener({ tls: options.tls }, gate === undefined ? listener : (req, res) => gate.handle(req, res, () => void listener(req, res)));
  // Layers can be gigabytes on a slow link: no cap on a whole request, only on silence.
  hardenServer(server, { requestTimeoutMs: 0, jsonBodies: ['/api/'] });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `${options.tls === undefined ? 'http' : 'https'}://${host.includes(':') ? `[${host}]` : host}:${port}`;

  const ttl = options.uploadTtlMs ?? 60 * 60_000;
  await blobs.expireUploads(ttl).catch((e: unknown) => options.logger?.warn({ err: e, dataDir: options.dataDir }, 'expiring old uploads at start failed'));
  const timer = setInterval(
    () => {
      blobs.expireUploads(ttl).catch((e: unknown) => options.logger?.warn({ err: e }, 'expiring uploads failed'));
    },
    Math.min(ttl, 10 * 60_000),
  );
  timer.unref();
  options.logger?.info({ url, dataDir: options.dataDir }, 'store listening');

  let closed: Promise<void> | undefined;
  return {
    url,
    store,
    blobs,
    server,
    close() {
      closed ??= new Promise<void>((resolve) => {
        clearInterval(timer);
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
