// The tail of an instance's log file, read from its end (logs can be large).
import { open } from 'node:fs/promises';

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
