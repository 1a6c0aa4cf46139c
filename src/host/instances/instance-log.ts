// The tail of an instance's log file, read from its end (logs can be large).
import { open, stat } from 'node:fs/promises';

/** The last `lines` lines; '' when the instance has written no log (yet). */
export async function tailLines(file: string, lines: number): Promise<string> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw e;
  }
  try {
    const { size } = await fh.stat();
    const want = Math.min(size, Math.max(64 * 1024, lines * 512));
    const buf = Buffer.alloc(want);
    await fh.read(buf, 0, want, size - want);
    const all = buf.toString('utf8').split('\n');
    if (all.at(-1) === '') all.pop();
    return all.slice(-lines).join('\n') + (all.length > 0 ? '\n' : '');
  } finally {
    await fh.close();
  }
}

/**
 * The last `tail` lines, then what the instance appends, as it comes (`shoal logs -f`).
 * Polls the file's size: an instance log is one appending writer, and polling needs no
 * watcher that could miss events on overlay or network file systems. Ends when `signal`
 * aborts or the file goes (the instance was removed).
 */
export async function* followLog(file: string, tail: number, signal: AbortSignal, pollMs = 250): AsyncGenerator<string> {
  let offset = await sizeOf(file);
  const first = await tailLines(file, tail);
  if (first !== '') yield first;
  while (!signal.aborted) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, pollMs);
      signal.addEventListener('abort', done, { once: true });
      function done(): void {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
    });
    if (signal.aborted) return;
    const size = await sizeOf(file);
    if (size === undefined) return;
    if (offset === undefined || size < offset) offset = 0; // made since, or truncated
    if (size === offset) continue;
    const fh = await open(file, 'r');
    try {
      const buf = Buffer.alloc(Math.min(size - offset, 1 << 20));
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      offset += bytesRead;
      yield buf.subarray(0, bytesRead).toString('utf8');
    } finally {
      await fh.close();
    }
  }
}

async function sizeOf(file: string): Promise<number | undefined> {
  try {
    return (await stat(file)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
