// The manifest half of the distribution API, and the listings: manifests by tag or
// digest, the OCI 1.1 referrers of a manifest, tags of a repository, the catalog.
import type { Context } from 'hono';
import type { ImageStore } from '../image-store.ts';
import { isShoalError, MediaType } from '../../protocol/index.ts';
import {
  API_VERSION,
  checkDigestParam,
  checkName,
  checkReference,
  empty,
  readSmallBody,
  RegistryError,
  type RegistryEnv,
} from './wire.ts';

export interface ManifestHandlers {
  getManifest(c: Context<RegistryEnv>, name: string, reference: string, head: boolean): Promise<Response>;
  putManifest(c: Context<RegistryEnv>, name: string, reference: string): Promise<Response>;
  deleteManifest(name: string, reference: string): Promise<Response>;
  referrers(c: Context<RegistryEnv>, name: string, digest: string): Promise<Response>;
  listTags(c: Context<RegistryEnv>, name: string): Promise<Response>;
  catalog(c: Context<RegistryEnv>): Promise<Response>;
}

export function createManifestHandlers(options: { store: ImageStore }): ManifestHandlers {
  const { store } = options;
  const maxManifestBytes = store.limits.maxManifestBytes;

  const getManifest = async (_c: Context<RegistryEnv>, name: string, reference: string, head: boolean) => {
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

  return { getManifest, putManifest, deleteManifest, referrers, listTags, catalog };
}
