// An instance's log file with a size cap, for drivers whose output passes through the agent
// (wasm, isolate, vm, process). Same policy as the runc shim's logger (native/shim): at
// `maxBytes` the file is renamed to `<file>.1` (replacing the previous one) and a new one
// started, so an instance holds at most twice `maxBytes` of host disk.
//
// Writes never queue without bound: while the file is behind by more than `maxPendingBytes`,
// further output is dropped and counted, and one marker line says how much was lost. A
// hostile instance can lose its own log lines, never grow the agent's memory.
import { open, rename, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';

/** The runc shim's cap (src/host/drivers/shared/native.ts). */
export const DEFAULT_LOG_MAX_BYTES = 8 * 1024 * 1024;
const DEFAULT_MAX_PENDING_BYTES = 1024 * 1024;

export interface CappedLogOptions {
  maxBytes?: number;
  maxPendingBytes?: number;
}

export interface CappedLog {
  /** Queue output; dropped (and counted) when the writer is too far behind. */
  write(chunk: string | Uint8Array): void;
  /** Copy a stream's data into the log (never pauses the stream: output beyond the buffer is dropped). */
  attach(stream: Readable): void;
  /** Resolves when everything queued so far is on disk. */
  flush(): Promise<void>;
  /** Flushes and closes the file; later writes are ignored. */
  close(): Promise<void>;
}

export function openCappedLog(path: string, options: CappedLogOptions = {}): CappedLog {
  const maxBytes = options.maxBytes ?? DEFAULT_LOG_MAX_BYTES;
  const maxPending = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
  const queue: Buffer[] = [];
  let pendingBytes = 0;
  let dropped = 0;
  let closed = false;
  let file: FileHandle | undefined;
  let size = 0;
  let draining: Promise<void> | undefined;

  async function ensureOpen(): Promise<FileHandle> {
    if (file === undefined) {
      file = await open(path, 'a', 0o640);
      size = (await file.stat()).size;
    }
    return file;
  }

  async function put(chunk: Buffer): Promise<void> {
    const data = chunk.length > maxBytes ? chunk.subarray(0, maxBytes) : chunk;
    let fh = await ensureOpen();
    if (size > 0 && size + data.length > maxBytes) {
      await fh.close();
      file = undefined;
      await rename(path, `${path}.1`).catch(() => undefined);
      fh = await open(path, 'w', 0o640);
      file = fh;
      size = 0;
    }
    await fh.write(data);
    size += data.length;
  }

  async function drain(): Promise<void> {
    try {
      while (queue.length > 0) {
        const chunk = queue.shift() as Buffer;
        pendingBytes -= chunk.length;
        if (dropped > 0 && queue.length === 0) {
          // Room again: say what was lost, once per run of drops.
          const lost = dropped;
          dropped = 0;
          await put(Buffer.concat([chunk, Buffer.from(`\n[shoal] log truncated: ${lost} bytes of output dropped (written faster than the log keeps up)\n`)]));
        } else await put(chunk);
      }
    } catch {
      // A log that cannot be written loses its lines; the instance keeps running.
      queue.length = 0;
      pendingBytes = 0;
    } finally {
      draining = undefined;
    }
  }

  function write(chunk: string | Uint8Array): void {
    if (closed) return;
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (buf.length === 0) return;
    if (pendingBytes + buf.length > maxPending) {
      dropped += buf.length;
      return;
    }
    queue.push(buf);
    pendingBytes += buf.length;
    draining ??= drain();
  }

  async function flush(): Promise<void> {
    while (draining !== undefined) await draining;
    if (dropped > 0) {
      const lost = dropped;
      dropped = 0;
      await put(Buffer.from(`\n[shoal] log truncated: ${lost} bytes of output dropped (written faster than the log keeps up)\n`)).catch(() => undefined);
    }
  }

  return {
    write,
    attach(stream) {
      stream.on('data', (c: Buffer | string) => write(c));
      stream.on('error', () => undefined);
    },
    flush,
    async close() {
      await flush();
      closed = true;
      await file?.close().catch(() => undefined);
      file = undefined;
    },
  };
}
