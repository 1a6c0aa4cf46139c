// Where a runner's code and Node come from when it runs as uid 65534. A checkout or data
// directory under a 0700 parent (root's home, a `mktemp -d` directory) cannot be entered by
// that user, so the runner's few files and the Node binary are copied once into a
// root-owned, world-readable directory named by their content. Nothing there is writable by
// anyone but root, and no instance can write it.
import { createHash } from 'node:crypto';
import { chmod, copyFile, cp, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import { constants } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODULE_EXT } from './launcher-ext.ts';
import { QUICKJS_WASM } from './quickjs-engine.ts';

/** The runner's modules (runner.ts and what it imports), all in one folder. */
export const RUNNER_MODULES = ['runner', 'runner-protocol', 'engine', 'data-segments', 'quickjs-engine', 'quickjs-guest'].map((m) => m + MODULE_EXT);

/** The QuickJS packages a runner imports (for JS components), as folders under a node_modules. */
export const QUICKJS_PACKAGES = ['quickjs-emscripten-core', '@jitl/quickjs-ffi-types', '@jitl/quickjs-wasmfile-release-sync'] as const;
export { QUICKJS_WASM } from './quickjs-engine.ts';

/** The node_modules folder that holds this installation's QuickJS packages. */
export function quickjsNodeModules(): string {
  // …/node_modules/quickjs-emscripten-core/dist/index.mjs
  return dirname(dirname(dirname(fileURLToPath(import.meta.resolve('quickjs-emscripten-core')))));
}

export interface RunnerFiles {
  /** Folder holding RUNNER_MODULES (as JavaScript when copied: `ext` says which). */
  dir: string;
  /** How the modules in `dir` end: '.js' for a copy (types stripped once here), else MODULE_EXT. */
  ext: '.ts' | '.js';
  /** The Node binary to run them with. */
  node: string;
  /** node_modules folder holding QUICKJS_PACKAGES. */
  quickjs: string;
}

/** Whether uid 65534 can reach `path`: every parent searchable by others, the file readable (and executable) by others. */
export async function reachableByOthers(path: string, executable: boolean): Promise<boolean> {
  try {
    const st = await stat(path);
    if ((st.mode & 0o004) === 0 || (executable && (st.mode & 0o001) === 0)) return false;
    for (let dir = dirname(path); ; dir = dirname(dir)) {
      if (((await stat(dir)).mode & 0o001) === 0) return false;
      if (dir === dirname(dir)) return true;
    }
  } catch {
    return false;
  }
}

/**
 * The runner's files where uid 65534 can read them: in place when it already can and they
 * are JavaScript (the published package), else a copy under `base` (default
 * /var/lib/shoal/wasm-runner/<content hash>), made once. A copy of TypeScript sources is
 * stripped of its types here, once: Node stripping them in every runner it starts cost
 * ~80 ms and ~120 ms of CPU per runner.
 */
export async function runnerFilesFor(sourceDir: string, node: string, base = '/var/lib/shoal/wasm-runner', quickjs = quickjsNodeModules()): Promise<RunnerFiles> {
  const inPlace =
    MODULE_EXT === '.js' &&
    (await reachableByOthers(node, true)) &&
    (await reachableByOthers(join(quickjs, QUICKJS_WASM), false)) &&
    (await Promise.all(RUNNER_MODULES.map((m) => reachableByOthers(join(sourceDir, m), false)))).every(Boolean);
  if (inPlace) return { dir: sourceDir, node, quickjs, ext: '.js' };
  // The copy's layout is part of its name: a copy made by an older Shoal is not reused.
  const hash = createHash('sha256').update('layout: js modules + node + node_modules/quickjs\0');
  const sources = await Promise.all(RUNNER_MODULES.map((m) => readFile(join(sourceDir, m))));
  for (const s of sources) hash.update(s);
  for (const p of QUICKJS_PACKAGES) hash.update(await readFile(join(quickjs, p, 'package.json')));
  const nodeStat = await stat(node);
  hash.update(`${node}\0${nodeStat.size}\0${nodeStat.mtimeMs}\0${process.version}`);
  const dir = join(base, hash.digest('hex').slice(0, 16));
  const copied = { dir, node: join(dir, 'node'), quickjs: join(dir, 'node_modules'), ext: '.js' as const };
  if (await reachableByOthers(join(dir, 'node'), true)) return copied;
  await mkdir(base, { recursive: true, mode: 0o755 });
  await chmod(base, 0o755);
  await chmod(dirname(base), 0o711).catch(() => undefined);
  const scratch = await mkdtemp(join(base, '.new-'));
  try {
    await chmod(scratch, 0o755);
    await Promise.all(
      RUNNER_MODULES.map(async (m, i) => {
        const to = join(scratch, m.replace(/\.ts$/, '.js'));
        await writeFile(to, m.endsWith('.ts') ? toJavaScript(sources[i]!.toString('utf8')) : sources[i]!, { mode: 0o644 });
        await chmod(to, 0o644);
      }),
    );
    for (const p of QUICKJS_PACKAGES) {
      await cp(join(quickjs, p), join(scratch, 'node_modules', p), { recursive: true, filter: (src) => !src.endsWith('.map') });
    }
    await chmodTree(join(scratch, 'node_modules'));
    await copyFile(node, join(scratch, 'node'), constants.COPYFILE_FICLONE);
    await chmod(join(scratch, 'node'), 0o755);
    await rename(scratch, dir).catch(async (e: NodeJS.ErrnoException) => {
      // Another driver made it first: theirs is the same content.
      if (e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST') throw e;
      await rm(scratch, { recursive: true, force: true });
    });
  } catch (e) {
    await rm(scratch, { recursive: true, force: true });
    throw e;
  }
  return copied;
}

/** A runner module's TypeScript as JavaScript: types stripped (they are erasable only), its sibling imports renamed. */
export function toJavaScript(source: string): string {
  // Node warns once that stripTypeScriptTypes is experimental; the host's output is not the place.
  const emit = process.emitWarning;
  process.emitWarning = (() => undefined) as typeof process.emitWarning;
  let js: string;
  try {
    js = stripTypeScriptTypes(source, { mode: 'strip' });
  } finally {
    process.emitWarning = emit;
  }
  return js.replace(/(from\s*|import\s*\(\s*)(['"])\.\/([\w-]+)\.ts\2/g, '$1$2./$3.js$2');
}

/** Directories 0755, files 0644: readable by uid 65534, writable by root alone. */
async function chmodTree(path: string): Promise<void> {
  const { readdir } = await import('node:fs/promises');
  await chmod(path, 0o755);
  for (const e of await readdir(path, { withFileTypes: true })) {
    const p = join(path, e.name);
    if (e.isDirectory()) await chmodTree(p);
    else if (e.isFile()) await chmod(p, 0o644);
  }
}
