// Image reference → digest-pinned image, cached. One resolver for whoever turns tags into
// digests before use (the provider's deployer; the host later): a fresh entry is used as
// is, an older one is used while a refresh runs in the background (so a cold start does
// not wait on the store), and one past maxStaleMs is resolved again before use. A
// digest-pinned reference names immutable content: once resolved it is never refreshed.
// A failed resolution is not cached; a failed background refresh keeps the old value and
// is logged. At most `max` resolutions are kept (oldest out first).
import type { RegistryClient } from './registry-client.ts';
import { resolveRemoteImage, type RemoteImage } from './remote-resolve.ts';
import { parseImageRef } from '../protocol/index.ts';

export interface ImageResolverOptions {
  /** The store's client, or a function giving it (a provider serving the store knows its URL only once it listens). */
  client: RegistryClient | (() => RegistryClient);
  /** A resolution older than this is refreshed in the background. */
  refreshAfterMs: number;
  /** …and older than this is resolved again before use. */
  maxStaleMs: number;
  /** Resolutions kept. Default 256. */
  max?: number;
  now?: () => number;
  log?: { warn(obj: object, msg?: string): void };
  /** How a reference is resolved (tests). Default: resolveRemoteImage against `client`. */
  resolveWith?: (client: RegistryClient, ref: string) => Promise<RemoteImage>;
}

export interface ImageResolver {
  resolve(ref: string): Promise<RemoteImage>;
  /** Drop the cached resolution (a host failed on it: a moved tag, a collected blob). */
  forget(ref: string): void;
}

interface Entry {
  at: number;
  value: Promise<RemoteImage>;
  settled: boolean;
  refreshing: boolean;
}

export function createImageResolver(options: ImageResolverOptions): ImageResolver {
  const now = options.now ?? Date.now;
  const resolveWith = options.resolveWith ?? ((client, ref) => resolveRemoteImage(client, ref));
  const clientOf = typeof options.client === 'function' ? options.client : () => options.client as RegistryClient;
  const max = options.max ?? 256;
  const entries = new Map<string, Entry>();
  const pinned = (ref: string): boolean => {
    try {
      return parseImageRef(ref, 'image', { foreign: true }).digest !== undefined;
    } catch {
      return false; // not a reference at all: resolveWith names the problem
    }
  };
  const keep = (ref: string, entry: Entry): void => {
    entries.delete(ref);
    if (entries.size >= max) entries.delete(entries.keys().next().value!);
    entries.set(ref, entry);
  };

  function fetchFresh(ref: string, current: Entry | undefined): Promise<RemoteImage> {
    if (current?.refreshing) return current.value;
    const value = resolveWith(clientOf(), ref);
    const entry: Entry = { at: now(), value, settled: false, refreshing: false };
    if (current !== undefined) {
      // Keep serving the old resolution until the new one is in.
      current.refreshing = true;
      value.then(
        () => {
          entry.settled = true;
          if (entries.get(ref) === current) keep(ref, entry);
        },
        (e: unknown) => {
          current.refreshing = false;
          options.log?.warn({ image: ref, err: (e as Error).message }, 'refreshing an image resolution failed; using the previous one');
        },
      );
      return current.value;
    }
    keep(ref, entry);
    value.then(
      () => {
        entry.settled = true;
      },
      // The caller gets the rejection; only the cache forgets it here.
      () => {
        if (entries.get(ref) === entry) entries.delete(ref);
      },
    );
    return value;
  }

  return {
    resolve(ref) {
      const hit = entries.get(ref);
      if (hit !== undefined) {
        if (!hit.settled || pinned(ref)) return hit.value;
        const age = now() - hit.at;
        if (age < options.maxStaleMs) {
          if (age >= options.refreshAfterMs) void fetchFresh(ref, hit);
          return hit.value;
        }
      }
      return fetchFresh(ref, undefined);
    },
    forget(ref) {
      entries.delete(ref);
    },
  };
}
