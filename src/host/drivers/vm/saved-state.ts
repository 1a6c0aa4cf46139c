// A VM's saved state: one tar of the RAM as QEMU's migration stream (zstd) and the disk
// overlay at that moment (zstd), with annotations that say what it fits (instance.ts).
// Restoring unpacks it to host-owned paths with bounds, since a state may come from any host.
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { isShoalError, ShoalError } from '../../../protocol/index.ts';
import { delay } from '../shared/proc.ts';
import type { Qmp } from './qmp.ts';
import { compressFrom, decompressTo } from './zstd.ts';

export const VM_STATE_MEDIA_TYPE = 'application/vnd.shoal.state.vm.v1.tar';
/** The device line's version: a saved state restores only into the same (2: the status disk). */
export const VM_STATE_FORMAT = '2';
/** The state's entries: the disk overlay at the capture, and QEMU's stream of the RAM. */
export const DISK_ENTRY = 'disk.qcow2.zst';
export const MEMORY_ENTRY = 'memory.zst';
/**
 * Beyond the guest's RAM in its saved stream: page headers (8 bytes a page) and device
 * state; it bounds the stream decompressed at a restore and compressed at a capture.
 */
export const STATE_STREAM_SLACK_BYTES = 64 * 1024 * 1024;
/** For the disk overlay (Node's zstd; the RAM goes through zstd.ts): 1 MiB, not zlib's 16 KiB. */
export const ZSTD_CHUNKS = { chunkSize: 1 << 20 };

/** Until QEMU has sent all of the RAM (a capture's migrate to receiveOnce). */
export async function waitMigration(qmp: Qmp): Promise<void> {
  for (;;) {
    const m = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    if (m.status === 'completed') return;
    if (m.status === 'failed' || m.status === 'cancelled') throw new ShoalError('internal', `saving the VM's memory failed: ${m['error-desc'] ?? m.status} (QEMU's own message is in the instance log)`);
    await delay(5);
  }
}

/**
 * One connection on a fresh loopback port, compressed by zstd into `file` (at most
 * `maxBytes`). The port is open only while a capture runs, and only the first connection
 * is taken. `close()` ends the wait when no connection came (QEMU's migrate failed first).
 */
export async function receiveOnce(file: string, maxBytes: number): Promise<{ port: number; done: Promise<void>; close(): void }> {
  const server = createServer({ pauseOnConnect: true });
  const stop = new AbortController();
  let connected = false;
  const done = new Promise<void>((resolve, reject) => {
    server.once('connection', (sock: Socket) => {
      connected = true;
      server.close();
      compressFrom(sock, file, maxBytes, stop.signal).then(resolve, reject);
    });
    server.once('close', () => connected || reject(new ShoalError('internal', "QEMU never connected to send the VM's memory")));
    server.on('error', reject);
  });
  // A capture that failed before it waited for `done` must not leave it unhandled.
  done.catch(() => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const a = server.address();
  return {
    port: typeof a === 'object' && a ? a.port : 0,
    done,
    // Also ends a zstd still running: whoever holds the connection open keeps no process or file.
    close: () => {
      server.close();
      stop.abort();
    },
  };
}

/** A tar of the named files (already compressed) in the order given, 0600: the saved state's one file. */
export async function packState(file: string, entries: Record<string, string>): Promise<void> {
  const pack = tar.pack();
  const out = pipeline(pack, createWriteStream(file, { mode: 0o600 }));
  for (const [name, path] of Object.entries(entries)) {
    const size = (await stat(path)).size;
    await new Promise<void>((resolve, reject) => {
      const entry = pack.entry({ name, size, mode: 0o600 }, (e) => (e ? reject(e) : resolve()));
      createReadStream(path).on('error', reject).pipe(entry);
    });
  }
  pack.finalize();
  await out;
}

/**
 * Unpacks a saved state's entries, decompressed, to `targets`, each no larger than its
 * bound (a small compressed entry must not fill the disk); unknown entries are refused.
 * The memory is decompressed too: QEMU loads a file at disk speed, where the same stream
 * fed through a pipe took most of a resume.
 */
export async function unpackState(file: string, targets: Record<string, { path: string; maxBytes: number }>, onWritten?: (name: string) => void): Promise<void> {
  const extract = tar.extract();
  const seen = new Set<string>();
  // Why the extraction was stopped: the pipeline itself may only say "Premature close" or
  // "write EPIPE" (zstd ended early), which comes before zstd's own exit says why.
  let refused: Error | undefined;
  // The entry being written: the tar may end (no end-of-archive blocks) before zstd has.
  let current: Promise<void> = Promise.resolve();
  extract.on('entry', (header, stream, next) => {
    const target = Object.hasOwn(targets, header.name) ? targets[header.name] : undefined;
    if (!target || header.type !== 'file' || seen.has(header.name)) {
      refused = new ShoalError('invalid', `unexpected entry ${JSON.stringify(header.name)} in a vm state`, { field: 'state' });
      stream.destroy();
      extract.destroy(refused);
      return;
    }
    seen.add(header.name);
    current = decompressTo(stream, target.path, target.maxBytes, header.name).then(
      () => {
        onWritten?.(header.name);
        next();
      },
      (e: unknown) => {
        refused ??= e as Error;
        extract.destroy(refused);
      },
    );
  });
  let failed: unknown;
  await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), extract).catch((e: unknown) => (failed = e ?? new Error('failed')));
  await current;
  if (refused) throw refused;
  if (failed !== undefined) {
    const e = failed as Error & { syscall?: string };
    // The host's own trouble (a read error) as it is; the archive's (truncated, malformed) is the state's.
    throw isShoalError(e) || e.syscall !== undefined ? e : new ShoalError('invalid', `the vm state is not a whole tar: ${e.message}`, { field: 'state' });
  }
  for (const name of Object.keys(targets)) if (!seen.has(name)) throw new ShoalError('invalid', `vm state lacks ${name}`, { field: 'state' });
}
