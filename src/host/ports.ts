// What the instance manager needs from outside, as small interfaces: a logger, a source of
// images, a mounter and a way to open import sockets. startHost passes the real ones;
// tests pass fakes.
import type { RootfsSpec } from '../protocol/index.ts';
import type { BlobFetcher } from './layer-cache.ts';

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

export interface ImageSource {
  /** Turns the plan's image reference into what to run, and a way to fetch its layers. */
  resolve(store: string, image: string): Promise<{ rootfs: RootfsSpec; fetchBlob: BlobFetcher }>;
}

export interface Mounter {
  mountOverlay(options: {
    lowerDirs: string[];
    upperDir: string;
    workDir: string;
    target: string;
    sizeBytes?: number | undefined;
    idmap?: { hostId: number; count: number } | undefined;
  }): Promise<void>;
  unmountOverlay(target: string): Promise<void>;
  /** Mount points at or below `under`. */
  listMounts(under: string): Promise<string[]>;
}

export interface ImportSockets {
  close(): Promise<void> | void;
}

export type OpenImportSockets = (
  dir: string,
  bindings: Array<{ name: string; url: string; token?: string }>,
  options: { uid?: number; gid?: number },
) => Promise<ImportSockets>;

