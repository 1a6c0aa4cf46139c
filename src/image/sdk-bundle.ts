// Bundling a TypeScript service written against shoal/service into the few files its
// image overlay needs, so it runs on the bare node template (one `node` binary, no
// node_modules, no build tools):
//
//   /app/<the service's own files>.mjs       types stripped, `.ts` imports now `.mjs`
//   /app/.shoal/src/service/*.mjs …          the SDK (and the few protocol files it uses)
//   /app/node_modules/@sinclair/typebox/     TypeBox's CommonJS build packed into ONE
//                                            module, plus one ESM facade per subpath used
//
// Why not copy the .ts files and let Node strip them at start-up, or copy TypeBox's ESM
// build as it is? Start-up time is on the cold-start path: measured on this machine
// (min of 25), `node` with nothing 36 ms; the SDK's imports as 218 ESM files plus
// run-time type stripping 198 ms; stripped ahead and TypeBox packed into one file 74 ms.
// Why not esbuild? It would need a native binary per platform for a job this small:
// stripping is Node's own (module.stripTypeScriptTypes, the same code that runs our .ts
// in development, so what runs in the image is what was tested), and packing CommonJS
// modules into one table of functions keeps CommonJS semantics exactly.
//
// Imports are followed by a small lexer (comments, strings, templates and regular
// expressions are skipped). Only node: built-ins, @sinclair/typebox and shoal/service
// can be imported from outside the service's files; anything else fails the build, not
// the first request.
import { createRequire, isBuiltin, stripTypeScriptTypes } from 'node:module';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ShoalError } from '../protocol/index.ts';
import type { ImageRef } from '../protocol/index.ts';
import { buildImage, type BuildResult } from './image-build.ts';
import type { RegistryClient } from './registry-client.ts';
import { statIfExists } from './fs-util.ts';

export interface BundleOptions {
  /** The service's entry file (.ts, .mts, .mjs or .js): the program the image runs. */
  entry: string;
  /** A missing or empty directory; it becomes the overlay's source tree (holds `app/…`). */
  outDir: string;
}

export interface BundleResult {
  /** Files written, relative to outDir (`app/service.mjs`, …), sorted. */
  files: string[];
  /** Their bytes in all. */
  bytes: number;
  /** The entry's path inside the image. */
  entry: string;
  /** The command that runs it. */
  cmd: string[];
}

/** Where the app lives in the image. */
const APP = 'app';
const SDK_DIR = '.shoal';
const NODE = '/usr/local/bin/node';
const TYPEBOX = '@sinclair/typebox';
/** The package root: src/image/ (dist/image/ in the published package) is two levels down. */
const SHOAL_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Shoal's own modules: src/*.ts in the checkout, dist/*.js (compiled) once installed. */
const SHOAL_SRC = fileURLToPath(new URL('../', import.meta.url));
/**
 * Shoal's own files, wherever this copy runs from: a checkout running dist/ still bundles
 * services (the examples) that import src/ by relative path, and those are the SDK too.
 */
const SHOAL_OWN = [SHOAL_SRC, join(SHOAL_ROOT, 'src') + sep, join(SHOAL_ROOT, 'dist') + sep];
const isShoalOwn = (path: string): boolean => SHOAL_OWN.some((dir) => path.startsWith(dir));
const SDK_ENTRY = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../service/index.ts' : '../service/index.js', import.meta.url));
/** Bare specifiers that name the SDK. */
const SDK_SPECIFIERS: Record<string, string> = { 'shoal/service': SDK_ENTRY };

type Kind = 'ts' | 'js' | 'json';

interface SourceFile {
  path: string;
  kind: Kind;
  /** JavaScript (types stripped), or the JSON text. */
  code: string;
  imports: Array<{ start: number; end: number; target: Target }>;
}

type Target = { type: 'local'; path: string } | { type: 'keep' } | { type: 'typebox'; subpath: string };

export async function bundleService(options: BundleOptions): Promise<BundleResult> {
  const entry = resolve(options.entry);
  const entryStat = await statIfExists(entry);
  if (!entryStat?.isFile()) throw new ShoalError('invalid', `bundle: entry ${options.entry} is not a file`, { field: 'entry' });
  const outDir = resolve(options.outDir);
  const existing = await readdir(outDir).catch(() => []);
  if (existing.length > 0) throw new ShoalError('conflict', `bundle: output directory ${outDir} is not empty`, { field: 'outDir' });

  // 1. Follow the entry's imports.
  const sources = new Map<string, SourceFile>();
  const typeboxSubpaths = new Set<string>();
  const queue: Array<{ path: string; from?: string; spec?: string }> = [{ path: entry }];
  while (queue.length > 0) {
    const { path, from, spec } = queue.pop()!;
    if (sources.has(path)) continue;
    if (from !== undefined && !(await statIfExists(path))?.isFile()) {
      throw new ShoalError('not-found', `bundle: ${from} imports ${JSON.stringify(spec)}, but ${path} is not a file`, { field: 'entry' });
    }
    const file = await readSource(path);
    sources.set(path, file);
    for (const imp of file.imports) {
      if (imp.target.type === 'local') queue.push({ path: imp.target.path, from: path, spec: file.code.slice(imp.start, imp.end) });
      else if (imp.target.type === 'typebox') typeboxSubpaths.add(imp.target.subpath);
    }
  }

  // 2. Where each file goes: the SDK under /app/.shoal, the service's own files under
  //    /app relative to their common directory.
  const own = [...sources.keys()].filter((p) => !isShoalOwn(p));
  const ownRoot = commonDir(own.length > 0 ? own : [entry]);
  const outPath = new Map<string, string>();
  for (const path of sources.keys()) {
    const rel = isShoalOwn(path) ? join(SDK_DIR, relative(SHOAL_ROOT, path)) : relative(ownRoot, path);
    const first = rel.split(sep)[0];
    if (!isShoalOwn(path) && (first === SDK_DIR || first === 'node_modules')) {
      throw new ShoalError('conflict', `bundle: ${path} would land in /${APP}/${first}, which the bundle keeps for itself`, { field: 'entry' });
    }
    outPath.set(path, join(APP, toMjs(rel)));
  }

  // 3. Write the files with their local imports pointing at the new places.
  const out = new Map<string, string | Buffer>();
  for (const file of sources.values()) {
    const at = outPath.get(file.path)!;
    let code = file.code;
    for (const imp of [...file.imports].sort((a, b) => b.start - a.start)) {
      if (imp.target.type !== 'local') continue;
      let spec = relative(dirname(at), outPath.get(imp.target.path)!).split(sep).join('/');
      if (!spec.startsWith('./') && !spec.startsWith('../')) spec = `./${spec}`;
      code = code.slice(0, imp.start) + spec + code.slice(imp.end);
    }
    out.set(at, code);
  }
  if (typeboxSubpaths.size > 0) {
    for (const [name, content] of await packTypebox([...typeboxSubpaths].sort())) out.set(join(APP, 'node_modules', TYPEBOX, name), content);
  }

  let bytes = 0;
  for (const [rel, content] of out) {
    const path = join(outDir, rel);
    await mkdirs(outDir, dirname(rel));
    await writeFile(path, content);
    await chmod(path, 0o644); // the service runs as nobody: every file must be readable
    bytes += typeof content === 'string' ? Buffer.byteLength(content) : content.length;
  }
  const entryInImage = `/${outPath.get(entry)!.split(sep).join('/')}`;
  return { files: [...out.keys()].map((p) => p.split(sep).join('/')).sort(), bytes, entry: entryInImage, cmd: [NODE, entryInImage] };
}

/** A service image: the bundle of `entry` as an overlay on `template`, run as its command. */
export async function buildServiceImage(options: {
  client: RegistryClient;
  entry: string;
  template: ImageRef;
  ref: ImageRef;
  owner?: { uid: number; gid: number };
  env?: string[];
  workDir?: string;
}): Promise<BuildResult & { bundle: BundleResult }> {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(join(options.workDir ?? tmpdir(), 'shoal-bundle-'));
  try {
    const bundle = await bundleService({ entry: options.entry, outDir: join(dir, 'root') });
    const built = await buildImage({
      client: options.client,
      source: join(dir, 'root'),
      template: options.template,
      ref: options.ref,
      ...(options.owner ? { owner: options.owner } : {}),
      ...(options.workDir ? { workDir: options.workDir } : {}),
      process: { cmd: bundle.cmd, workdir: `/${APP}`, ...(options.env ? { env: options.env } : {}) },
    });
    return { ...built, bundle };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function mkdirs(root: string, rel: string): Promise<void> {
  // Each directory 0755 whatever the umask, so nobody can walk to the files.
  let at = root;
  await mkdir(at, { recursive: true });
  for (const part of rel.split(sep)) {
    if (part === '' || part === '.') continue;
    at = join(at, part);
    await mkdir(at, { recursive: true });
    await chmod(at, 0o755);
  }
}

function toMjs(path: string): string {
  const ext = extname(path);
  return ext === '.ts' || ext === '.mts' || ext === '.js' ? path.slice(0, -ext.length) + '.mjs' : path;
}

function commonDir(paths: string[]): string {
  let dir = dirname(paths[0]!);
  for (const p of paths) while (!(p.startsWith(dir + sep) || dirname(p) === dir)) dir = dirname(dir);
  return dir;
}

async function readSource(path: string): Promise<SourceFile> {
  const ext = extname(path);
  const kind: Kind | undefined = ext === '.ts' || ext === '.mts' ? 'ts' : ext === '.js' || ext === '.mjs' ? 'js' : ext === '.json' ? 'json' : undefined;
  if (kind === undefined) {
    throw new ShoalError('unsupported', `bundle: ${path}: only .ts, .mts, .mjs, .js and .json files can be bundled (CommonJS and JSX are not)`, { field: 'entry' });
  }
  const text = await readFile(path, 'utf8');
  if (kind === 'json') return { path, kind, code: text, imports: [] };
  const code = kind === 'ts' ? stripTypes(text, path) : text;
  const imports = findImports(code).flatMap((imp) => {
    if (imp.kind === 'require') return []; // an ESM file has no require() of its own to follow
    return [{ start: imp.start, end: imp.end, target: classify(imp.value, path) }];
  });
  return { path, kind, code, imports };
}

function stripTypes(text: string, path: string): string {
  // The stripper is Node's own; it warns that it is experimental, once, on stderr.
  const emit = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    if (String(warning instanceof Error ? warning.message : warning).includes('stripTypeScriptTypes')) return;
    (emit as (...a: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    // strip mode replaces types with spaces, so offsets (and line numbers in stack traces) stay.
    return stripTypeScriptTypes(text, { mode: 'strip', sourceUrl: path });
  } catch (e) {
    throw new ShoalError('invalid', `bundle: ${path}: ${(e as Error).message} (only erasable TypeScript runs without a build step: no enum, namespace or parameter properties)`, {
      field: 'entry',
      cause: e,
    });
  } finally {
    process.emitWarning = emit;
  }
}

function classify(spec: string, from: string): Target {
  if (spec.startsWith('./') || spec.startsWith('../') || spec.startsWith('/')) return { type: 'local', path: resolve(dirname(from), spec) };
  if (spec.startsWith('file:')) return { type: 'local', path: fileURLToPath(new URL(spec)) };
  if (isBuiltin(spec)) return { type: 'keep' };
  if (spec === TYPEBOX || spec.startsWith(`${TYPEBOX}/`)) return { type: 'typebox', subpath: spec.slice(TYPEBOX.length + 1) };
  const sdk = SDK_SPECIFIERS[spec];
  if (sdk !== undefined) return { type: 'local', path: sdk };
  throw new ShoalError('unsupported', `bundle: ${from} imports ${JSON.stringify(spec)}, which an instance cannot load: only node: built-ins, ${TYPEBOX} and shoal/service are bundled`, {
    field: 'entry',
  });
}

// ---------------------------------------------------------------------------------
// TypeBox: its CommonJS build as one ES module holding a table of module functions
// (Node's own CommonJS wrapper, so the modules behave exactly as under require), and
// an ESM facade per subpath naming the exports that subpath has.

async function packTypebox(subpaths: string[]): Promise<Map<string, string | Buffer>> {
  const req = createRequire(import.meta.url);
  const { root, version } = await packageRoot(req.resolve(TYPEBOX, { paths: [SHOAL_ROOT] }), TYPEBOX);
  const modules = new Map<string, { deps: Record<string, string>; code: string }>();
  const idOf = (path: string) => relative(root, path).split(sep).join('/');

  const walk = async (path: string): Promise<void> => {
    const id = idOf(path);
    if (modules.has(id)) return;
    const code = (await readFile(path, 'utf8')).replace(/^#!.*/, '');
    const deps: Record<string, string> = {};
    modules.set(id, { deps, code });
    for (const imp of findImports(code)) {
      if (imp.kind !== 'require') continue;
      if (!imp.value.startsWith('.')) throw new ShoalError('unsupported', `bundle: ${path} requires ${JSON.stringify(imp.value)}, outside ${TYPEBOX}`);
      const target = await resolveCjs(resolve(dirname(path), imp.value));
      deps[imp.value] = idOf(target);
      await walk(target);
    }
  };

  const facades = new Map<string, string>();
  const exportsMap: Record<string, string> = {};
  for (const sub of subpaths) {
    const spec = sub === '' ? TYPEBOX : `${TYPEBOX}/${sub}`;
    let main: string;
    try {
      main = req.resolve(spec, { paths: [SHOAL_ROOT] });
    } catch (e) {
      throw new ShoalError('not-found', `bundle: ${spec} is not a module ${TYPEBOX} offers`, { field: 'entry', cause: e });
    }
    await walk(main);
    const names = Object.keys(req(main) as object).filter((n) => n !== 'default' && n !== '__esModule').sort();
    const file = sub === '' ? 'index.mjs' : `${sub.replaceAll('/', '__')}.mjs`;
    facades.set(file, facade(idOf(main), names));
    exportsMap[sub === '' ? '.' : `./${sub}`] = `./${file}`;
  }

  let pack = `// ${TYPEBOX} ${version} (MIT, see LICENSE): its CommonJS build packed into one module by shoal (src/image/sdk-bundle.ts).\n`;
  pack += 'const defs = {\n';
  for (const id of [...modules.keys()].sort()) {
    const m = modules.get(id)!;
    pack += `${JSON.stringify(id)}: [${JSON.stringify(m.deps)}, function (exports, require, module, __filename, __dirname) {\n${m.code}\n}],\n`;
  }
  pack += `};
const cache = new Map();
export function load(id) {
  let m = cache.get(id);
  if (m !== undefined) return m.exports;
  const def = defs[id];
  if (def === undefined) throw new Error('${TYPEBOX}: no module ' + id + ' in this bundle');
  m = { exports: {} };
  cache.set(id, m);
  const [deps, fn] = def;
  fn.call(m.exports, m.exports, (spec) => load(deps[spec]), m, id, id.slice(0, id.lastIndexOf('/')));
  return m.exports;
}
`;
  const files = new Map<string, string | Buffer>();
  files.set('package.json', `${JSON.stringify({ name: TYPEBOX, version, license: 'MIT', type: 'module', exports: exportsMap }, null, 2)}\n`);
  files.set('typebox.mjs', pack);
  for (const [name, code] of facades) files.set(name, code);
  for (const license of ['license', 'LICENSE', 'license.md', 'LICENSE.md']) {
    const text = await readFile(join(root, license)).catch(() => undefined);
    if (text !== undefined) {
      files.set('LICENSE', text);
      break;
    }
  }
  return files;
}

/** The directory of the package.json named `name` above `file`. */
async function packageRoot(file: string, name: string): Promise<{ root: string; version: string }> {
  for (let dir = dirname(file); dir !== dirname(dir); dir = dirname(dir)) {
    const text = await readFile(join(dir, 'package.json'), 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    const pkg = JSON.parse(text) as { name?: string; version?: string };
    if (pkg.name === name) return { root: dir, version: pkg.version ?? '0.0.0' };
  }
  throw new ShoalError('not-found', `bundle: cannot find the package.json of ${name} above ${file}`);
}

async function resolveCjs(path: string): Promise<string> {
  for (const candidate of [path, `${path}.js`, `${path}.json`, join(path, 'index.js')]) {
    if ((await statIfExists(candidate))?.isFile()) return candidate;
  }
  throw new ShoalError('not-found', `bundle: cannot resolve ${path} in ${TYPEBOX}`);
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

function facade(id: string, names: string[]): string {
  const lines = [`import { load } from './typebox.mjs';`, `const m = load(${JSON.stringify(id)});`, 'export default m;'];
  const exported: string[] = [];
  names.forEach((name, i) => {
    lines.push(`const e${i} = m[${JSON.stringify(name)}];`);
    exported.push(`e${i} as ${IDENTIFIER.test(name) ? name : JSON.stringify(name)}`);
  });
  if (exported.length > 0) lines.push(`export { ${exported.join(', ')} };`);
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------
// Finding import specifiers in JavaScript.

export interface FoundImport {
  /** Offsets of the specifier's text, inside its quotes. */
  start: number;
  end: number;
  value: string;
  kind: 'static' | 'dynamic' | 'require';
}

// After these, a `/` starts a regular expression rather than dividing.
const REGEX_AFTER_WORDS = new Set(['return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do', 'else', 'yield', 'await']);

/**
 * The string-literal specifiers of `import … from 'x'`, `export … from 'x'`,
 * `import 'x'`, `import('x')` and `require('x')`, skipping comments, strings, template
 * text and regular expressions.
 */
export function findImports(code: string): FoundImport[] {
  const found: FoundImport[] = [];
  const n = code.length;
  let i = 0;
  // What the last significant token was: decides whether `/` is division or a regex.
  let last: 'value' | 'word' | 'dot' | 'punct' = 'punct';
  let lastWord = '';
  // Open template literals: the brace depth at which each `${` started.
  const templates: number[] = [];
  let depth = 0;

  const skipSpace = (from: number): number => {
    let j = from;
    for (;;) {
      while (j < n && /\s/.test(code[j]!)) j++;
      if (code.startsWith('//', j)) {
        const e = code.indexOf('\n', j);
        j = e === -1 ? n : e + 1;
      } else if (code.startsWith('/*', j)) {
        const e = code.indexOf('*/', j + 2);
        j = e === -1 ? n : e + 2;
      } else return j;
    }
  };
  const readString = (from: number): { end: number; value: string } | undefined => {
    const q = code[from];
    if (q !== '"' && q !== "'") return undefined;
    let j = from + 1;
    let value = '';
    while (j < n && code[j] !== q) {
      if (code[j] === '\\') return undefined; // an escaped specifier: leave it alone
      if (code[j] === '\n') return undefined;
      value += code[j];
      j++;
    }
    return j < n ? { end: j, value } : undefined;
  };
  const skipTemplateText = (from: number): number => {
    // from is just after ` or }: returns the index after the closing ` or after ${
    let j = from;
    while (j < n) {
      const c = code[j];
      if (c === '\\') j += 2;
      else if (c === '`') {
        return j + 1;
      } else if (c === '$' && code[j + 1] === '{') {
        templates.push(depth);
        depth++;
        return j + 2;
      } else j++;
    }
    return n;
  };

  while (i < n) {
    const c = code[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '/' && code[i + 1] === '/') {
      const e = code.indexOf('\n', i);
      i = e === -1 ? n : e + 1;
      continue;
    }
    if (c === '/' && code[i + 1] === '*') {
      const e = code.indexOf('*/', i + 2);
      i = e === -1 ? n : e + 2;
      continue;
    }
    if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < n && code[j] !== c) j += code[j] === '\\' ? 2 : 1;
      i = j + 1;
      last = 'value';
      continue;
    }
    if (c === '`') {
      i = skipTemplateText(i + 1);
      last = 'value';
      continue;
    }
    if (c === '{') {
      depth++;
      i++;
      last = 'punct';
      continue;
    }
    if (c === '}') {
      depth--;
      if (templates.length > 0 && templates[templates.length - 1] === depth) {
        templates.pop();
        i = skipTemplateText(i + 1);
        last = 'value';
      } else {
        i++;
        last = 'value'; // usually the end of a block or object: `/` after it divides
      }
      continue;
    }
    if (c === '/') {
      const regex = last === 'punct' || (last === 'word' && REGEX_AFTER_WORDS.has(lastWord));
      if (regex) {
        let j = i + 1;
        let inClass = false;
        while (j < n && code[j] !== '\n') {
          const d = code[j];
          if (d === '\\') j += 2;
          else {
            if (d === '[') inClass = true;
            else if (d === ']') inClass = false;
            else if (d === '/' && !inClass) break;
            j++;
          }
        }
        j++;
        while (j < n && /[a-z]/i.test(code[j]!)) j++; // flags
        i = j;
        last = 'value';
      } else {
        i++;
        last = 'punct';
      }
      continue;
    }
    if (/[A-Za-z_$]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w$]/.test(code[j]!)) j++;
      const word = code.slice(i, j);
      const afterDot = last === 'dot';
      i = j;
      last = 'word';
      lastWord = word;
      if (afterDot) continue; // obj.import(…), obj.require(…), x.from
      if (word === 'from' || word === 'import') {
        const k = skipSpace(j);
        const s = readString(k);
        if (s !== undefined) {
          found.push({ start: k + 1, end: s.end, value: s.value, kind: 'static' });
          i = s.end + 1;
          last = 'value';
          continue;
        }
      }
      if (word === 'import' || word === 'require') {
        const k = skipSpace(j);
        if (code[k] === '(') {
          const k2 = skipSpace(k + 1);
          const s = readString(k2);
          if (s !== undefined) {
            const after = skipSpace(s.end + 1);
            if (code[after] === ')' || code[after] === ',') {
              found.push({ start: k2 + 1, end: s.end, value: s.value, kind: word === 'import' ? 'dynamic' : 'require' });
              i = s.end + 1;
              last = 'value';
            }
          }
        }
      }
      continue;
    }
    if (/[0-9]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w.]/.test(code[j]!)) j++;
      i = j;
      last = 'value';
      continue;
    }
    if (c === ')' || c === ']') {
      i++;
      last = 'value';
      continue;
    }
    if (code.startsWith('...', i)) {
      i += 3;
      last = 'punct';
      continue;
    }
    if (c === '.') {
      i++;
      last = 'dot';
      continue;
    }
    i++;
    last = 'punct';
  }
  return found;
}
