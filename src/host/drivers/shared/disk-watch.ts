// Tells when an instance's writable root layer is full. The bound itself is the kernel's
// (a size-limited file system: writes past it fail with ENOSPC inside); this only reports
// it, by reading the file system's free space (statfs: no I/O, microseconds) on a period.
// The path is the host-side mount point of the instance's root, which the instance cannot
// move or replace.
import { statfs } from 'node:fs/promises';

export interface DiskWatchOptions {
  /** Default 1 s. */
  periodMs?: number;
  /** Counted as full below this many free bytes (default 64 KiB: a few blocks of slack). */
  slackBytes?: number;
}

/** Calls onFull once each time the file system at `path` fills up; returns stop(). */
export function watchDiskFull(path: string, onFull: () => void, onError: (e: unknown) => void, options: DiskWatchOptions = {}): () => void {
  const slack = options.slackBytes ?? 64 * 1024;
  let full = false;
  let reported = false;
  let busy = false;
  const check = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      const s = await statfs(path);
      const free = s.bavail * s.bsize;
      if (free < slack && !full) onFull();
      full = free < slack;
    } catch (e) {
      if (!reported) onError(e);
      reported = true;
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void check(), options.periodMs ?? 1000);
  timer.unref();
  return () => clearInterval(timer);
}
