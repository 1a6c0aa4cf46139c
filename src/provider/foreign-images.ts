// Images in other registries (HOST[:PORT]/NAME:TAG in a service description). At
// registration the provider copies the image into the store (src/image/foreign-image.ts)
// and stores the description with the reference pinned by digest; deployments then use the
// store's copy, mirror/<host>/<name>@<digest>, and never talk to the other registry. A
// store that lost the copy (deleted by an operator) gets it again from the other registry.
//
// Credentials for other registries: a containers-auth.json file (0600) that
// `shoal registry login` fills through the admin API, or that an operator writes (skopeo
// login --authfile makes the same format). Never logged, never in an error or the audit.
import { createRegistryClient, credentialsFor, listLogins, mirrorForeignImage, mirrorRef, mirrorRepository, removeLogin, saveLogin, authorizeRegistry, type RegistryClient } from '../image/index.ts';
import { formatImageRef, parseImageRef, ShoalError, type Digest, type ImageRef } from '../protocol/index.ts';
import { dirname, join } from 'node:path';
import { createEgressDispatcher } from '../http/index.ts';
import type { Logger } from './host-pool.ts';

export interface ForeignImagesOptions {
  /** The credentials file (containers-auth.json format). */
  authFile: string;
  /** The store's URL. */
  storeUrl: () => string;
  /** A token that may push to the store, made when a copy needs one; undefined: copies are refused. */
  pushToken: () => Promise<string | undefined>;
  log: Logger;
  /**
   * Registries on private addresses (loopback, RFC 1918, link-local) the operator allows,
   * as host or host:port. Every other private address is refused: the image a deploy token
   * names, its token realm and its redirects must not reach the provider's own network.
   */
  allowPrivate?: readonly string[];
  /** Copies running at once (default 2); each stages up to 8 GiB of layers on disk. */
  maxConcurrentCopies?: number;
  /** Registrations waiting for a copy slot (default 8); past it, a 503 at once. */
  maxWaitingCopies?: number;
  /** Where layers wait between the registries (default: a directory beside authFile). */
  stagingDir?: string;
}

export interface ForeignImages {
  /** A description's image as it is stored: another registry's reference is copied and pinned by digest; the store's are unchanged. */
  pin(image: string, field: string): Promise<string>;
  /** The store's reference for a description's image (copying a pinned foreign image again if the store lost it). */
  storeRefFor(image: string): Promise<string>;
  /** Checks the credentials against the registry, then keeps them. */
  login(host: string, credentials: { username: string; password: string }): Promise<void>;
  logout(host: string): Promise<boolean>;
  logins(): Promise<Array<{ host: string; username: string }>>;
}

const HOST_RE = /^(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::[0-9]{1,5})?$/;
const PATH_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/;

/**
 * What a login covers: `HOST[:PORT]` (every repository there) or `HOST[:PORT]/NAMESPACE`
 * (only repositories under it). A deploy token can name any image, so a login for a whole
 * host lends the operator's credentials to every repository on it: scope it.
 */
export function checkRegistryHost(scope: string): string {
  const h = scope.trim().toLowerCase().replace(/\/+$/, '');
  const slash = h.indexOf('/');
  const host = slash < 0 ? h : h.slice(0, slash);
  const path = slash < 0 ? undefined : h.slice(slash + 1);
  if (h.length === 0 || h.length > 253 || !HOST_RE.test(host) || (path !== undefined && !PATH_RE.test(path))) {
    throw new ShoalError('invalid', `not a registry login scope: ${JSON.stringify(scope)} (HOST[:PORT] or HOST[:PORT]/NAMESPACE)`, { field: 'host' });
  }
  return h;
}

export function createForeignImages(options: ForeignImagesOptions): ForeignImages {
  const { authFile, log } = options;
  const egress = createEgressDispatcher({ allow: options.allowPrivate ?? [] });
  const stagingDir = options.stagingDir ?? join(dirname(authFile), 'mirror-staging');
  // Registrations are network input: many at once must not fill the disk with staged layers.
  const slots = createCopySlots(options.maxConcurrentCopies ?? 2, options.maxWaitingCopies ?? 8);

  async function pushClient(): Promise<RegistryClient> {
    const token = await options.pushToken();
    if (token === undefined) {
      throw new ShoalError('unsupported', 'this provider cannot copy images into its store (no store push token: SHOAL_STORE_PUSH_TOKEN)', { field: 'image' });
    }
    return createRegistryClient({ baseUrl: options.storeUrl(), userAgent: 'shoal-provider-mirror', token });
  }

  async function copy(ref: ImageRef, field: string): Promise<Digest> {
    const started = performance.now();
    const credentials = await credentialsFor(authFile, ref.registry!, ref.repository);
    const release = await slots.take(field);
    let m: Awaited<ReturnType<typeof mirrorForeignImage>>;
    try {
      m = await mirrorForeignImage({ store: await pushClient(), ref, credentials, field, dispatcher: egress, stagingDir });
    } finally {
      release();
    }
    log.info({ image: formatImageRef(ref), digest: m.digest, bytes: m.bytes, ms: Math.round(performance.now() - started) }, 'copied an image from another registry into the store');
    return m.digest;
  }

  return {
    async pin(image, field) {
      const ref = parseImageRef(image, field, { foreign: true });
      if (ref.registry === undefined) return image;
      // Pinned and copied already (a farm applied again, a description registered twice): nothing to fetch.
      if (ref.digest !== undefined && (await storeHas(ref as ImageRef & { digest: Digest }))) return image;
      // The platform's image manifest: an index's digest would name what the store does not keep.
      const digest = await copy(ref, field);
      return formatImageRef({ ...ref, digest });
    },
    async storeRefFor(image) {
      const ref = parseImageRef(image, 'image', { foreign: true });
      if (ref.registry === undefined) return image;
      if (ref.digest === undefined) return mirrorRef({ ...ref, digest: await copy(ref, 'image') });
      const pinned = { ...ref, digest: ref.digest };
      const local = mirrorRef(pinned);
      if (!(await storeHas(pinned))) {
        log.warn({ image }, 'the store lost its copy of an image from another registry; copying it again');
        const again = await copy(ref, 'image');
        if (again !== ref.digest) throw new ShoalError('digest-mismatch', `image ${image}: the registry now serves ${again}`, { field: 'image' });
      }
      return local;
    },
    async login(host, credentials) {
      const h = checkRegistryHost(host);
      if (credentials.username.length === 0 || credentials.username.length > 1024 || credentials.username.includes(':')) {
        throw new ShoalError('invalid', 'username must be 1 to 1024 characters without ":"', { field: 'username' });
      }
      if (credentials.password.length === 0 || credentials.password.length > 16384) throw new ShoalError('invalid', 'password must be 1 to 16384 characters', { field: 'password' });
      // Checked before it is kept: a wrong password fails here, not at the first registration.
      const slash = h.indexOf('/');
      const registryHost = slash < 0 ? h : h.slice(0, slash);
      const repository = slash < 0 ? 'library/shoal-login-check' : `${h.slice(slash + 1)}/shoal-login-check`;
      await authorizeRegistry({ host: registryHost, repository, credentials, field: 'password', dispatcher: egress });
      await saveLogin(authFile, h, credentials);
      log.info({ registry: h, username: credentials.username }, 'registry login kept');
    },
    logout: (host) => removeLogin(authFile, checkRegistryHost(host)),
    logins: () => listLogins(authFile),
  };

  async function storeHas(ref: ImageRef & { digest: Digest }): Promise<boolean> {
    const token = await options.pushToken();
    const store = createRegistryClient({ baseUrl: options.storeUrl(), userAgent: 'shoal-provider-mirror', ...(token === undefined ? {} : { token }) });
    return (await store.getManifest(mirrorRepository(ref), ref.digest)) !== undefined;
  }
}

/** A counting semaphore with a bounded waiting line: past it, callers are refused at once. */
export function createCopySlots(max: number, maxWaiting: number): { take(field: string): Promise<() => void> } {
  let running = 0;
  const waiting: Array<() => void> = [];
  const release = (): void => {
    const next = waiting.shift();
    if (next !== undefined) next();
    else running--;
  };
  return {
    async take(field) {
      if (running < max) {
        running++;
        return release;
      }
      if (waiting.length >= maxWaiting) {
        throw new ShoalError('unavailable', `${running} image copies are running and ${waiting.length} wait; try again shortly`, { field });
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
      return release;
    },
  };
}
