// Helpers for the layer tests: archives written entry by entry with tar-stream (so a test
// can write exactly the hostile entry it means), temp dirs, and a tree snapshot to compare.
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readdir, readFile, readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pack as tarPack, extract as tarExtract } from 'tar-stream';
import { removeTree } from '../../src/image/layer-unpack.ts';

export interface TarEntry {
  name: string;
  type?: 'file' | 'link' | 'symlink' | 'directory' | 'block-device' | 'character-device' | 'fifo';
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  linkname?: string;
  content?: string | Buffer;
  devmajor?: number;
  devminor?: number;
  /** Force a PAX header (needed for names tar-stream would otherwise truncate, like NUL). */
  pax?: Record<string, string>;
}

const DEFAULT_MTIME = new Date(1_700_000_000_000);

export async function makeTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const reading = (async () => {
    for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const typeBits = type === 'directory' ? 0o040000 : type === 'symlink' ? 0o120000 : 0o100000;
    const header = {
      name: e.name,
      type,
      mode: typeBits | (e.mode ?? (type === 'directory' ? 0o755 : 0o644)),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: e.mtime ?? DEFAULT_MTIME,
      linkname: e.linkname ?? '',
      devmajor: e.devmajor ?? 0,
      devminor: e.devminor ?? 0,
      ...(e.pax ? { pax: e.pax } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      pack.entry(header, type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await reading;
  return Buffer.concat(chunks);
}

/** A GNU tar long-name member ('L') followed by a file whose real name is `name`. */
export function gnuLongNameFile(name: string, content: string): Buffer {
  const nameBytes = Buffer.from(name + '\0');
  const header = (n: string, typeflag: string, size: number): Buffer => {
    const b = Buffer.alloc(512);
    b.write(n, 0);
    b.write('0000644\0', 100);
    b.write('0000000\0', 108);
    b.write('0000000\0', 116);
    b.write(size.toString(8).padStart(11, '0') + '\0', 124);
    b.write('14533047000\0', 136);
    b.write('        ', 148);
    b.write(typeflag, 156);
    b.write('ustar  \0', 257);
    let sum = 0;
    for (const byte of b) sum += byte;
    b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    return b;
  };
  const pad = (n: number): Buffer => Buffer.alloc((512 - (n % 512)) % 512);
  const body = Buffer.from(content);
  return Buffer.concat([
    header('././@LongLink', 'L', nameBytes.length),
    nameBytes,
    pad(nameBytes.length),
    header(name.slice(0, 99), '0', body.length),
    body,
    pad(body.length),
    Buffer.alloc(1024),
  ]);
}

/** The buffer as a stream of small chunks, so the parser sees entries split across writes. */
export function streamOf(buf: Buffer, chunk = 4096): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunk) parts.push(buf.subarray(i, i + chunk));
  return Readable.from(parts);
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-layer-test-'));
  try {
    return await fn(dir);
  } finally {
    await removeTree(dir); // also through read-only directories when not root
  }
}

export interface TreeNode {
  type: 'file' | 'directory' | 'symlink' | 'char' | 'other';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha256: string | undefined;
  linkname: string | undefined;
  ino: number;
  mtimeMs: number;
  rdev: number;
}

/** Every path below `root` with what a comparison needs (lstat, never following links). */
export async function snapshotTree(root: string): Promise<Map<string, TreeNode>> {
  const out = new Map<string, TreeNode>();
  const visit = async (rel: string): Promise<void> => {
    for (const name of (await readdir(rel === '' ? root : join(root, rel))).sort()) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const abs = join(root, path);
      const st = await lstat(abs);
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : 'other';
      out.set(path, {
        type,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        size: type === 'file' ? st.size : 0,
        sha256: type === 'file' ? await readFile(abs).then((b) => createHash('sha256').update(b).digest('hex'), () => 'unreadable') : undefined,
        linkname: type === 'symlink' ? await readlink(abs) : undefined,
        ino: st.ino,
        mtimeMs: st.mtimeMs,
        rdev: st.rdev,
      });
      if (type === 'directory') await visit(path);
    }
  };
  await visit('');
  return out;
}

/** The names and types of a layer's entries, in archive order. */
export async function listTar(tar: Buffer): Promise<Array<{ name: string; type: string; linkname: string | null; uid: number; gid: number; mtime: number }>> {
  const ex = tarExtract();
  const out: Array<{ name: string; type: string; linkname: string | null; uid: number; gid: number; mtime: number }> = [];
  const done = (async () => {
    for await (const entry of ex) {
      const h = entry.header;
      out.push({ name: h.name, type: h.type ?? 'file', linkname: h.linkname ?? null, uid: h.uid, gid: h.gid, mtime: h.mtime.getTime() });
      entry.resume();
    }
  })();
  ex.end(tar);
  await done;
  return out;
}
