// The host's layer cache: each image layer pulled once, unpacked once, kept by digest,
// and evicted least-recently-used (among layers no live instance uses) under a byte budget.
//
// Two shapes, one per kind of driver:
//   overlay  cache/layers/<hex>      one directory per layer, overlay whiteouts: the lower
//                                    directories of an overlayfs root (runc)
//   flat     cache/flat/<manifest>   the image's layers applied in order into one tree, built
//                                    from cache/blobs/<hex> (the compressed blobs): for drivers
//                                    that cannot mount (process)
//
// Concurrent deployments that need the same layer share one in-flight pull; the bytes
// count against the deployment that started it (the others see the layer as cached).
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PullStats } from '../protocol/index.ts';
import { isDigest } from '../protocol/index.ts';

export interface LayerDescriptor {
  digest: string;
  diffId: string;
  size: number;
  mediaType: string;
}

/** Where layers come from: writes the blob to destFile, verifying its digest. */
export type BlobFetcher = (digest: string, destFile: string, onBytes: (n: number) => void) => Promise<void>;

/** Unpacks one compressed layer file into `dest`, which does not exist yet (atomically, overlay whiteouts). */
export type LayerUnpacker = (file: string, dest: string, options: { mediaType: string; expectDiffId: string }) => Promise<void>;

/** Applies compressed layer files in order (lowest first) into the fresh directory `dest`, atomically. */
export type LayerFlattener = (layers: Array<{ file: string; mediaType: string; diffId: string }>, dest: string) => Promise<void>;

export type CacheMode = 'overlay' | 'flat';

export interface CachedEntry {
  key: string;
  kind: 'layer' | 'blob' | 'flat';
  digest: string;
  size: number;
  lastUsed: number;
  refs: number;
}

/** Timings in performance.now() milliseconds; undefined when nothing was done or awaited. */
export interface PrepareTimings {
  pull: [number, number] | undefined;
  unpack: [number, number] | undefined;
}

export interface PreparedRoot {
  /** overlay: layer directories, lowest first. */
  lowerDirs: string[];
  /** flat: the tree to run from. */
  flatDir: string | undefined;
  stats: PullStats;
  timings: PrepareTimings;
  /** Lets the cache evict these layers again (idempotent). */
  release(): void;
}

export interface LayerCache {
  readonly dir: string;
  readonly budgetBytes: number;
  /** Reads what an earlier run left (drops partial entries). */
  open(): Promise<void>;
  prepare(
    image: { manifestDigest: string; layers: LayerDescriptor[] },
    fetchBlob: BlobFetcher,
    mode: CacheMode,
  ): Promise<PreparedRoot>;
  /** Marks entries as used by a live instance (re-adoption after a restart). */
  retain(image: { manifestDigest: string; layers: LayerDescriptor[] }, mode: CacheMode): PreparedRoot | undefined;
  entries(): CachedEntry[];
  totalBytes(): number;
  /** Waits for in-flight evictions. */
  settle(): Promise<void>;
}

interface Work {
  downloadEnd: number | undefined;
  unpackStart: number | undefined;
  unpackEnd: number | undefined;
}

export interface LayerCacheOptions {
  dir: string;
  budgetBytes: number;
  unpack: LayerUnpacker;
  flatten: LayerFlattener;
  onEvict?: (entry: CachedEntry) => void;
  onError?: (message: string, error: unknown) => void;
}

const KIND_DIR = { layer: 'layers', blob: 'blobs', flat: 'flat' } as const;

export function createLayerCache(options: LayerCacheOptions): LayerCache {
  const { dir, budgetBytes, unpack, flatten } = options;
  const entries = new Map<string, CachedEntry>();
  // One promise per key for whatever is being done to it (fetch or eviction).
  const inflight = new Map<string, Promise<Work>>();
  const evictions = new Set<Promise<unknown>>();
  let total = 0;
  let tick = 0;

  const hex = (digest: string): string => {
    if (!isDigest(digest)) throw new Error(`not a sha256 digest: ${digest}`);
    return digest.slice(7);
  };
  const keyOf = (kind: CachedEntry['kind'], digest: string): string => `${kind}-${hex(digest)}`;
  const pathOf = (kind: CachedEntry['kind'], digest: string): string => join(dir, KIND_DIR[kind], hex(digest));
  const metaPath = (key: string): string => join(dir, 'meta', `${key}.json`);
  const tmpPath = (): string => join(dir, 'tmp', randomBytes(6).toString('hex'));
  // A monotonic use counter keeps LRU order exact even within one millisecond.
  const touch = (e: CachedEntry): void => {
    e.lastUsed = Date.now() * 1000 + (tick++ % 1000);
  };

  const add = async (kind: CachedEntry['kind'], digest: string): Promise<CachedEntry> => {
    const key = keyOf(kind, digest);
    const size = await sizeOf(pathOf(kind, digest));
    const entry: CachedEntry = { key, kind, digest, size, lastUsed: 0, refs: 0 };
    touch(entry);
    await writeFile(metaPath(key), JSON.stringify({ key, kind, digest, size }));
    entries.set(key, entry);
    total += size;
    return entry;
  };

  const evict = (): void => {
    if (total <= budgetBytes) return;
    const candidates = [...entries.values()].filter((e) => e.refs === 0 && !inflight.has(e.key)).sort((a, b) => a.lastUsed - b.lastUsed);
    for (const e of candidates) {
      if (total <= budgetBytes) break;
      entries.delete(e.key);
      total -= e.size;
      const path = pathOf(e.kind, e.digest);
      const job = (async (): Promise<Work> => {
        try {
          await rm(metaPath(e.key), { force: true });
          const trash = tmpPath();
          await rename(path, trash);
          await rm(trash, { recursive: true, force: true });
          options.onEvict?.(e);
        } catch (err) {
          options.onError?.(`evicting ${e.key}`, err);
        }
        return { downloadEnd: undefined, unpackStart: undefined, unpackEnd: undefined };
      })();
      inflight.set(e.key, job);
      const done = job.finally(() => {
        if (inflight.get(e.key) === job) inflight.delete(e.key);
        evictions.delete(done);
      });
      evictions.add(done);
    }
  };

  /**
   * Makes sure `kind/digest` is in the cache and takes a reference on it. `produce` does
   * the work when it is missing. Returns whether this call did the work.
   */
  const ensure = async (
    kind: CachedEntry['kind'],
    digest: string,
    produce: () => Promise<Work>,
  ): Promise<{ entry: CachedEntry; work: Work | undefined; mine: boolean }> => {
    const key = keyOf(kind, digest);
    let joined: Work | undefined;
    for (;;) {
      const cached = entries.get(key);
      if (cached) {
        cached.refs++;
        touch(cached);
        return { entry: cached, work: joined, mine: false };
      }
      const pending = inflight.get(key);
      if (!pending) break;
      // A failed fetch fails its joiners too; a finished eviction leaves no entry and we fetch.
      const w = await pending;
      if (w.unpackEnd !== undefined || w.downloadEnd !== undefined) joined = w;
    }
    const job = produce().then(async (w) => {
      const entry = await add(kind, digest);
      entry.refs++; // held from the moment it exists, so no eviction can slip in
      return { w, entry };
    });
    const asWork = job.then((r) => r.w);
    inflight.set(key, asWork);
    // Only the bookkeeping hangs off this branch; the failure itself reaches the caller
    // (`await job` below) and every joiner (`await pending` above).
    asWork.catch(() => {}).finally(() => {
      if (inflight.get(key) === asWork) inflight.delete(key);
    });
    const { w, entry } = await job;
    evict(); // the cache grew; make room among what nobody holds
    return { entry, work: w, mine: true };
  };

  const releaser = (held: CachedEntry[]): (() => void) => {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const e of held) {
        e.refs = Math.max(0, e.refs - 1);
        touch(e);
      }
      evict();
    };
  };

  const fetchBlobTo = async (layer: LayerDescriptor, fetchBlob: BlobFetcher, dest: string, stats: PullStats): Promise<number> => {
    await mkdir(join(dir, 'tmp'), { recursive: true });
    await fetchBlob(layer.digest, dest, (n) => {
      stats.bytes += n;
    });
    return performance.now();
  };

  const ensureLayer = async (
    layer: LayerDescriptor,
    fetchBlob: BlobFetcher,
    stats: PullStats,
  ): Promise<{ entry: CachedEntry; work: Work | undefined }> => {
    const r = await ensure('layer', layer.digest, async () => {
      const file = tmpPath();
      try {
        const downloadEnd = await fetchBlobTo(layer, fetchBlob, file, stats);
        const unpackStart = performance.now();
        await unpack(file, pathOf('layer', layer.digest), { mediaType: layer.mediaType, expectDiffId: layer.diffId });
        return { downloadEnd, unpackStart, unpackEnd: performance.now() };
      } finally {
        await rm(file, { force: true });
      }
    });
    if (r.mine) stats.layersFetched++;
    else stats.layersCached++;
    return r;
  };

  const ensureBlob = async (
    layer: LayerDescriptor,
    fetchBlob: BlobFetcher,
    stats: PullStats,
  ): Promise<{ entry: CachedEntry; work: Work | undefined }> => {
    const r = await ensure('blob', layer.digest, async () => {
      const file = tmpPath();
      try {
        const downloadEnd = await fetchBlobTo(layer, fetchBlob, file, stats);
        await mkdir(join(dir, KIND_DIR.blob), { recursive: true });
        await rename(file, pathOf('blob', layer.digest));
        return { downloadEnd, unpackStart: undefined, unpackEnd: undefined };
      } catch (e) {
        await rm(file, { force: true });
        throw e;
      }
    });
    if (r.mine) stats.layersFetched++;
    else stats.layersCached++;
    return r;
  };

  const timingsOf = (start: number, works: Array<Work | undefined>, extraUnpack?: [number, number]): PrepareTimings => {
    let pullEnd: number | undefined;
    let unpackStart: number | undefined;
    let unpackEnd: number | undefined;
    for (const w of works) {
      if (!w) continue;
      if (w.downloadEnd !== undefined) pullEnd = Math.max(pullEnd ?? 0, w.downloadEnd);
      if (w.unpackStart !== undefined) unpackStart = Math.min(unpackStart ?? Infinity, w.unpackStart);
      if (w.unpackEnd !== undefined) unpackEnd = Math.max(unpackEnd ?? 0, w.unpackEnd);
    }
    if (extraUnpack) {
      unpackStart = Math.min(unpackStart ?? Infinity, extraUnpack[0]);
      unpackEnd = Math.max(unpackEnd ?? 0, extraUnpack[1]);
    }
    return {
      pull: pullEnd === undefined ? undefined : [start, pullEnd],
      unpack: unpackStart === undefined || unpackEnd === undefined ? undefined : [unpackStart, unpackEnd],
    };
  };

  const retainSync = (image: { manifestDigest: string; layers: LayerDescriptor[] }, mode: CacheMode): PreparedRoot | undefined => {
    const keys = mode === 'overlay' ? image.layers.map((l) => keyOf('layer', l.digest)) : [keyOf('flat', image.manifestDigest)];
    const held = keys.map((k) => entries.get(k));
    if (held.some((e) => e === undefined)) return undefined;
    const list = held as CachedEntry[];
    for (const e of list) {
      e.refs++;
      touch(e);
    }
    return {
      lowerDirs: mode === 'overlay' ? image.layers.map((l) => pathOf('layer', l.digest)) : [],
      flatDir: mode === 'flat' ? pathOf('flat', image.manifestDigest) : undefined,
      stats: { bytes: 0, layersFetched: 0, layersCached: image.layers.length },
      timings: { pull: undefined, unpack: undefined },
      release: releaser(list),
    };
  };

  return {
    dir,
    budgetBytes,
    async open() {
      for (const d of ['meta', 'tmp', ...Object.values(KIND_DIR)]) await mkdir(join(dir, d), { recursive: true });
      await rm(join(dir, 'tmp'), { recursive: true, force: true });
      await mkdir(join(dir, 'tmp'));
      const known = new Set<string>();
      for (const name of await readdir(join(dir, 'meta'))) {
        if (!name.endsWith('.json')) continue;
        try {
          const m = JSON.parse(await readFile(join(dir, 'meta', name), 'utf8')) as { key: string; kind: CachedEntry['kind']; digest: string; size: number };
          if (!(m.kind in KIND_DIR) || keyOf(m.kind, m.digest) !== m.key) throw new Error('bad meta');
          await lstat(pathOf(m.kind, m.digest));
          const entry: CachedEntry = { key: m.key, kind: m.kind, digest: m.digest, size: m.size, lastUsed: 0, refs: 0 };
          touch(entry);
          entries.set(m.key, entry);
          total += m.size;
          known.add(`${KIND_DIR[m.kind]}/${m.digest.slice(7)}`);
        } catch (e) {
          // A meta file without its entry (or unreadable) describes nothing: drop it.
          options.onError?.(`dropping the cache entry of ${name}`, e);
          await rm(join(dir, 'meta', name), { force: true });
        }
      }
      // Anything without a meta file is a partial write from a crash.
      for (const d of Object.values(KIND_DIR)) {
        for (const name of await readdir(join(dir, d))) {
          if (!known.has(`${d}/${name}`)) await rm(join(dir, d, name), { recursive: true, force: true });
        }
      }
    },

    async prepare(image, fetchBlob, mode) {
      const start = performance.now();
      const stats: PullStats = { bytes: 0, layersFetched: 0, layersCached: 0 };
      if (mode === 'overlay') {
        const results = await Promise.allSettled(image.layers.map((l) => ensureLayer(l, fetchBlob, stats)));
        const held = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.entry] : []));
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) {
          releaser(held)();
          throw failed.reason;
        }
        return {
          lowerDirs: image.layers.map((l) => pathOf('layer', l.digest)),
          flatDir: undefined,
          stats,
          timings: timingsOf(
            start,
            results.map((r) => (r.status === 'fulfilled' ? r.value.work : undefined)),
          ),
          release: releaser(held),
        };
      }

      // flat: blobs (shared with other images) → one tree per manifest
      const blobWorks: Array<Work | undefined> = [];
      let flatUnpack: [number, number] | undefined;
      let layersCounted = false;
      const flat = await ensure('flat', image.manifestDigest, async () => {
        const results = await Promise.allSettled(image.layers.map((l) => ensureBlob(l, fetchBlob, stats)));
        layersCounted = true;
        const blobs = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.entry] : []));
        const releaseBlobs = releaser(blobs);
        try {
          const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
          if (failed) throw failed.reason;
          for (const r of results) if (r.status === 'fulfilled') blobWorks.push(r.value.work);
          const t0 = performance.now();
          await mkdir(join(dir, KIND_DIR.flat), { recursive: true });
          await flatten(
            image.layers.map((l) => ({ file: pathOf('blob', l.digest), mediaType: l.mediaType, diffId: l.diffId })),
            pathOf('flat', image.manifestDigest),
          );
          flatUnpack = [t0, performance.now()];
          return { downloadEnd: undefined, unpackStart: t0, unpackEnd: flatUnpack[1] };
        } finally {
          releaseBlobs();
        }
      });
      if (!layersCounted) stats.layersCached += image.layers.length;
      return {
        lowerDirs: [],
        flatDir: pathOf('flat', image.manifestDigest),
        stats,
        timings: timingsOf(start, flat.mine ? blobWorks : [flat.work], flatUnpack),
        release: releaser([flat.entry]),
      };
    },

    retain: retainSync,

    entries() {
      return [...entries.values()].map((e) => ({ ...e }));
    },
    totalBytes() {
      return total;
    },
    async settle() {
      while (evictions.size > 0) await Promise.allSettled([...evictions]);
    },
  };
}

/** Bytes a file or tree takes (file sizes; directories count a block each). */
async function sizeOf(path: string): Promise<number> {
  const s = await lstat(path);
  if (!s.isDirectory()) return s.size;
  let total = 4096;
  const stack = [path];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const ent of await readdir(d, { withFileTypes: true })) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) {
        total += 4096;
        stack.push(p);
      } else {
        total += (await lstat(p)).size;
      }
    }
  }
  return total;
}

