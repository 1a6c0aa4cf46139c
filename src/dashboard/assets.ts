// The page's files: bundled from web/ with esbuild (Preact, htm and dagre come from npm,
// nothing from a CDN) into dist/ui/ at the package root, which git ignores. A checkout
// builds them on first use, and again when web/ changes (a hash of the sources is kept
// beside them); an installed package carries them prebuilt (`npm run build:ui`, chained
// into prepack), and without esbuild they are served as found.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

/** The package root: the nearest folder above this module with a package.json (src/ or a compiled copy). */
function packageRoot(): string {
  for (let dir = HERE; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return join(HERE, '..', '..');
  }
}

const ROOT = packageRoot();
/** The page's sources: beside this module, or under src/ when this module is a compiled copy. */
export const WEB_DIR = existsSync(join(HERE, 'web')) ? join(HERE, 'web') : join(ROOT, 'src', 'dashboard', 'web');
export const OUT_DIR = join(ROOT, 'dist', 'ui');
const STAMP = 'build.json';

export interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

export interface BuildReport {
  dir: string;
  files: Record<string, number>;
  sources: string;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
};

async function sourcesHash(): Promise<string | undefined> {
  const names = await readdir(WEB_DIR).catch(() => undefined);
  if (names === undefined) return undefined;
  const h = createHash('sha256');
  for (const n of names.sort()) h.update(n).update('\0').update(await readFile(join(WEB_DIR, n))).update('\0');
  return h.digest('hex');
}

/** Bundles web/ into `outDir` (each file written beside and renamed: parallel builds are safe). */
export async function buildAssets(outDir = OUT_DIR): Promise<BuildReport> {
  const sources = await sourcesHash();
  if (sources === undefined) throw new Error(`no dashboard sources at ${WEB_DIR}`);
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: { app: join(WEB_DIR, 'main.js') },
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2020'],
    outdir: outDir,
    write: false,
    legalComments: 'none',
    logLevel: 'silent',
  });
  const files: Record<string, Buffer> = { 'index.html': await readFile(join(WEB_DIR, 'index.html')) };
  for (const f of result.outputFiles) files[basename(f.path)] = Buffer.from(f.contents);
  await mkdir(outDir, { recursive: true });
  const tag = `.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const sizes: Record<string, number> = {};
  for (const [name, body] of Object.entries(files)) {
    await writeFile(join(outDir, name + tag), body);
    await rename(join(outDir, name + tag), join(outDir, name));
    sizes[name] = body.length;
  }
  const report: BuildReport = { dir: outDir, files: sizes, sources };
  await writeFile(join(outDir, STAMP + tag), JSON.stringify(report, null, 2));
  await rename(join(outDir, STAMP + tag), join(outDir, STAMP));
  return report;
}

async function readStamp(dir: string): Promise<BuildReport | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, STAMP), 'utf8')) as BuildReport;
  } catch {
    return undefined;
  }
}

export interface AssetSource {
  /** The named file of the page; undefined when there is none. Rejects when the page cannot be built or found. */
  get(name: string): Promise<Asset | undefined>;
}

/** Finds the built page (building it first when it is missing or stale and esbuild is here); once per process. */
export function createAssetSource(options: { dir?: string } = {}): AssetSource {
  const dir = options.dir ?? OUT_DIR;
  let loaded: Promise<Map<string, Asset>> | undefined;
  async function load(): Promise<Map<string, Asset>> {
    const [stamp, sources] = await Promise.all([readStamp(dir), sourcesHash()]);
    if (stamp === undefined || (sources !== undefined && stamp.sources !== sources)) {
      try {
        await buildAssets(dir);
      } catch (e) {
        if (stamp === undefined) throw new Error(`the dashboard is not built and cannot be built here (npm run build:ui): ${(e as Error).message}`);
        // An older build is better than none (esbuild absent in an installed package).
      }
    }
    const built = (await readStamp(dir))!;
    const assets = new Map<string, Asset>();
    for (const name of Object.keys(built.files)) {
      const body = await readFile(join(dir, name));
      assets.set(name, { body, type: TYPES[extname(name)] ?? 'application/octet-stream', etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
    }
    return assets;
  }
  return {
    async get(name) {
      loaded ??= load().catch((e: unknown) => {
        loaded = undefined; // try again on the next request
        throw e;
      });
      return (await loaded).get(name);
    },
  };
}
