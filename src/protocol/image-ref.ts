import { ShoalError } from './errors.ts';
import { isDigest, type Digest } from './digest.ts';

/**
 * A reference to an image in a Shoal store:
 *   NAME:TAG            repository NAME, tag TAG (TAG defaults to "latest")
 *   NAME@sha256:…       repository NAME, pinned digest
 *   template://N/V      the template N at version V: repository "templates/N", tag V
 * The repository name follows the distribution spec's grammar so that skopeo and
 * other OCI tools address the same image as docker://HOST:PORT/NAME:TAG.
 */
export interface ImageRef {
  /**
   * Another registry (HOST or HOST:PORT) the image lives in; absent: the Shoal store.
   * Only service descriptions may name one (parseImageRef's `foreign` option): the
   * provider copies such an image into its store and hosts pull it from there.
   */
  registry?: string;
  repository: string;
  tag: string | undefined;
  digest: Digest | undefined;
}

const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const REPOSITORY_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const TEMPLATE_PREFIX = 'templates/';

export function isRepositoryName(name: string): boolean {
  return name.length <= 255 && REPOSITORY_RE.test(name);
}

export function isTagName(tag: string): boolean {
  return TAG_RE.test(tag);
}

// A first component with a dot or a port, or `localhost`, names a registry (Docker's rule).
const REGISTRY_RE = /^(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+|[a-zA-Z0-9-]+)(?::[0-9]{1,5})?$/;

/** Splits HOST[:PORT]/ off a reference's name when its first component names a registry. */
function splitRegistry(name: string): { registry: string | undefined; rest: string } {
  const slash = name.indexOf('/');
  if (slash <= 0) return { registry: undefined, rest: name };
  const first = name.slice(0, slash);
  if (first !== 'localhost' && !first.includes('.') && !first.includes(':')) return { registry: undefined, rest: name };
  return { registry: first, rest: name.slice(slash + 1) };
}

export function parseImageRef(text: string, field = 'reference', options: { foreign?: boolean } = {}): ImageRef {
  let rest = text.trim();
  if (rest.startsWith('template://')) {
    const body = rest.slice('template://'.length);
    const slash = body.lastIndexOf('/');
    if (slash <= 0 || slash === body.length - 1) {
      throw new ShoalError('invalid', `template reference must be template://NAME/VERSION, got ${JSON.stringify(text)}`, { field });
    }
    const repository = TEMPLATE_PREFIX + body.slice(0, slash);
    const tag = body.slice(slash + 1);
    if (!isRepositoryName(repository) || !isTagName(tag)) {
      throw new ShoalError('invalid', `bad template reference ${JSON.stringify(text)}`, { field });
    }
    return { repository, tag, digest: undefined };
  }
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) throw new ShoalError('invalid', `bad digest in reference ${JSON.stringify(text)}`, { field });
    digest = d;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isTagName(tag)) throw new ShoalError('invalid', `bad tag ${JSON.stringify(tag)} in ${JSON.stringify(text)}`, { field });
  }
  const { registry, rest: repository } = splitRegistry(rest);
  if (registry !== undefined) {
    if (!options.foreign) {
      throw new ShoalError('invalid', `${JSON.stringify(text)} names another registry (${registry}); here only images in Shoal's store are accepted (a service description may name any registry)`, { field });
    }
    if (!REGISTRY_RE.test(registry) || registry.length > 253) throw new ShoalError('invalid', `bad registry host ${JSON.stringify(registry)} in ${JSON.stringify(text)}`, { field });
  }
  if (!isRepositoryName(repository)) {
    throw new ShoalError('invalid', `bad repository name ${JSON.stringify(repository)} (lowercase letters, digits, . _ - and /)`, { field });
  }
  if (tag === undefined && digest === undefined) tag = 'latest';
  return registry === undefined ? { repository, tag, digest } : { registry: registry.toLowerCase(), repository, tag, digest };
}

export function formatImageRef(ref: ImageRef): string {
  if (ref.repository.startsWith(TEMPLATE_PREFIX) && ref.tag && !ref.digest) {
    return `template://${ref.repository.slice(TEMPLATE_PREFIX.length)}/${ref.tag}`;
  }
  return (ref.registry ? `${ref.registry}/` : '') + ref.repository + (ref.tag ? `:${ref.tag}` : '') + (ref.digest ? `@${ref.digest}` : '');
}
