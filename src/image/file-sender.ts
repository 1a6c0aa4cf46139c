// Serving a byte range of a file to a raw Node response with reused buffers: two 1 MiB
// buffers per transfer, taken from a small free list, one being read into while the
// other is in the socket. A read stream allocates a fresh 1 MiB buffer per read, which
// the kernel must fault in and the GC must free: most of a blob GET's CPU time on a
// loaded machine (measured in bench/store.ts).
import type { FileHandle } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';

const CHUNK = 1 << 20;
const MAX_FREE = 8;
const free: Buffer[] = [];

const take = (): Buffer => free.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
const give = (b: Buffer): void => {
  if (free.length < MAX_FREE) free.push(b);
};

/** Resolves when `chunk` has left for the kernel (the buffer may be reused), rejects if the response closes first. */
function writeChunk(out: ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const onClose = () => reject(new Error('the client went away'));
    out.once('close', onClose);
    out.write(chunk, (err) => {
      out.off('close', onClose);
      if (err) reject(err);
      else resolve();
    });
  });
}

/**
 * Writes bytes `start`..`end` (inclusive) of the open file `fh` to `out` (headers
 * already written), then ends the response. Rejects when the client goes away or the
 * file is shorter than the range; the caller destroys the response then.
 */
export async function sendFileRange(fh: FileHandle, out: ServerResponse, start: number, end: number): Promise<void> {
  const bufs = [take(), take()] as const;
  let writing: Promise<void> = Promise.resolve();
  try {
    let pos = start;
    for (let i = 0; pos <= end; i++) {
      const buf = bufs[i % 2]!;
      const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, end - pos + 1), pos);
      if (bytesRead === 0) throw new Error(`file ended at byte ${pos}, before ${end + 1}`);
      // The other buffer's write must be done before this one goes, and before it is read into again.
      await writing;
      writing = writeChunk(out, buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    await writing;
    out.end();
  } finally {
    // A write still running holds a buffer: let it settle (its error is already the one thrown, or moot).
    await writing.catch(() => undefined);
    give(bufs[0]);
    give(bufs[1]);
  }
}
