// Vetting layers of an image that is to run: once per layer digest, when the image is
// first resolved for a deployment (never on the push path), with the verdict kept on
// disk so a restart does not read the layer again:
//
//   <dir>/<hex>   {"ok":true,"diffId":"sha256:…"} or {"ok":false,"code":…,"message":…}
//
// (An older store wrote the bare diffId, or nothing: both read as passed.) A verdict is
// about the blob alone; the diffId an image's config claims is compared with the one
// the verdict remembers, so a config lying about a layer is refused without a re-read.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, type Digest, isShoalError, ShoalError, type ErrorCode } from '../../protocol/index.ts';
import { readIfExists, writeAtomic } from './layout.ts';

/**
 * Reads one layer and throws a ShoalError to refuse it; may return the layer's diffId
 * (sha256 of the uncompressed tar), which is remembered with the verdict.
 */
export type VetLayer = (digest: Digest, mediaType: string) => Promise<void | { diffId?: string }>;

export type Verdict = { ok: true; diffId: string } | { ok: false; code: ErrorCode; message: string; field?: string };

export interface LayerToVet {
  digest: Digest;
  mediaType: string;
  /** What the image config claims; '' or undefined: no claim. */
  diffId: string | undefined;
}

export interface LayerVetting {
  /** Vets each layer not vetted before; throws a ShoalError naming the first refused layer (`layers/<i>`). */
  check(layers: LayerToVet[]): Promise<void>;
  /** The remembered verdict, if any. */
  verdict(digest: Digest): Promise<Verdict | undefined>;
  /** Forgets a verdict (gc removed the blob). */
  forget(digest: Digest): Promise<void>;
}

/** Refusals that depend only on the blob's bytes: worth remembering. Others (I/O, a vanished blob) are retried. */
const LASTING: readonly ErrorCode[] = ['invalid', 'too-large', 'unsupported', 'digest-mismatch'];

export function parseVerdict(text: string): Verdict | undefined {
  if (!text.startsWith('{')) return { ok: true, diffId: text };
  try {
    const v = JSON.parse(text) as Verdict;
    if (v.ok === true && typeof v.diffId === 'string') return v;
    if (v.ok === false && typeof v.code === 'string' && typeof v.message === 'string') return v;
  } catch {
    // A torn or foreign file: treated as no verdict, so the layer is vetted again.
  }
  return undefined;
}

/** Without `vetLayer`, check() passes every layer (verdicts left by an earlier run are still forgotten by gc). */
export function createLayerVetting(options: { dir: string; vetLayer?: VetLayer | undefined }): LayerVetting {
  const vetLayer = options.vetLayer;
  const path = (d: Digest) => join(options.dir, digestHex(d));
  const inflight = new Map<Digest, Promise<Verdict>>();

  const verdict = async (d: Digest): Promise<Verdict | undefined> => {
    const text = await readIfExists(path(d));
    return text === undefined ? undefined : parseVerdict(text);
  };

  const vetOnce = (d: Digest, mediaType: string): Promise<Verdict> => {
    const running = inflight.get(d);
    if (running) return running;
    const run = (async (): Promise<Verdict> => {
      const known = await verdict(d);
      if (known) return known;
      let v: Verdict;
      try {
        const r = await vetLayer!(d, mediaType);
        v = { ok: true, diffId: r?.diffId ?? '' };
      } catch (e) {
        if (!isShoalError(e) || !LASTING.includes(e.code)) throw e;
        v = { ok: false, code: e.code, message: e.message, ...(e.field === undefined ? {} : { field: e.field }) };
      }
      await writeAtomic(path(d), JSON.stringify(v));
      return v;
    })();
    inflight.set(d, run);
    const clear = () => inflight.delete(d);
    run.then(clear, clear);
    return run;
  };

  return {
    verdict,
    async check(layers) {
      if (!vetLayer) return;
      for (const [i, layer] of layers.entries()) {
        const v = await vetOnce(layer.digest, layer.mediaType);
        if (!v.ok) {
          throw new ShoalError(v.code, `layer ${i} (${layer.digest}) refused: ${v.message}`, {
            field: `layers/${i}`,
            ...(v.field === undefined ? {} : { detail: { field: v.field } }),
          });
        }
        if (v.diffId && layer.diffId && v.diffId !== layer.diffId) {
          throw new ShoalError('invalid', `layer ${layer.digest}: the config says diffId ${layer.diffId}, the layer's is ${v.diffId}`, {
            field: `config/rootfs/diff_ids/${i}`,
          });
        }
      }
    },
    forget: (d) => rm(path(d), { force: true }),
  };
}
