// docs/ARCHITECTURE.md must not rot silently: every repository path it names exists, every
// `name()` it names occurs in a file named beside it (the same paragraph, list item or table
// row; anywhere under src/ when none is named), and the picture's arrows are the checker's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOC = readFileSync(join(ROOT, 'docs/ARCHITECTURE.md'), 'utf8');

/** Paths under these folders are checked; `<name>` placeholders are skipped. */
const PATH = /\b((?:src|test|docs)\/[A-Za-z0-9_./-]*[A-Za-z0-9_/])/g;
/** `name()`, `a.b.name()`: the last segment must occur as a word. */
const NAME = /`((?:[A-Za-z_$][\w$]*\.)*([A-Za-z_$][\w$]*))\(\)`/g;

/** Paragraphs, top-level list items and table rows: the unit a name is looked up in. */
function blocks(text: string): string[] {
  const out: string[] = [];
  let current: string[] = [];
  const flush = () => {
    if (current.length > 0) out.push(current.join('\n'));
    current = [];
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '') flush();
    else if (/^(\d+\.\s|-\s|\|)/.test(line)) {
      flush();
      current.push(line);
    } else current.push(line);
  }
  flush();
  return out;
}

function pathsIn(block: string): string[] {
  return [...block.matchAll(PATH)].map((m) => m[1]!).filter((p) => !p.includes('<'));
}

function filesUnder(path: string): string[] {
  const full = join(ROOT, path);
  if (!statSync(full).isDirectory()) return [full];
  return readdirSync(full, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile() && d.name.endsWith('.ts'))
    .map((d) => join(d.parentPath, d.name));
}

const cache = new Map<string, string>();
function textOf(file: string): string {
  let t = cache.get(file);
  if (t === undefined) cache.set(file, (t = readFileSync(file, 'utf8')));
  return t;
}

function occursIn(name: string, files: readonly string[]): boolean {
  const word = new RegExp(`(?<![\\w$])${name.replace(/\$/g, '\\$')}(?![\\w$])`);
  return files.some((f) => word.test(textOf(f)));
}

test('every path the architecture page names exists', () => {
  const paths = new Set(pathsIn(DOC));
  assert.ok(paths.size > 40, `expected the page to name its files, found ${paths.size}`);
  const missing = [...paths].filter((p) => !existsSync(join(ROOT, p)));
  assert.deepEqual(missing, [], 'paths in docs/ARCHITECTURE.md that do not exist');
});

test('every name() on the architecture page occurs in a file named beside it', () => {
  const allSrc = filesUnder('src');
  const wrong: string[] = [];
  let checked = 0;
  for (const block of blocks(DOC)) {
    const files = pathsIn(block)
      .filter((p) => existsSync(join(ROOT, p)))
      .flatMap(filesUnder);
    for (const m of block.matchAll(NAME)) {
      checked++;
      const name = m[2]!;
      const where = files.length > 0 ? files : allSrc;
      if (!occursIn(name, where)) wrong.push(`${m[1]}() not in ${files.length > 0 ? pathsIn(block).join(', ') : 'src/'}`);
    }
  }
  assert.ok(checked > 60, `expected the page to name its functions, found ${checked}`);
  assert.deepEqual(wrong, [], 'names in docs/ARCHITECTURE.md not found where the page says');
});

test('the lookup rejects a name that is not where the page says', () => {
  // The check itself must be able to fail: a made-up name, and a real name in the wrong file.
  assert.equal(occursIn('createNoSuchThing', filesUnder('src/provider/router.ts')), false);
  assert.equal(occursIn('createRouter', filesUnder('src/host/data-plane/forwarder.ts')), false);
  assert.equal(occursIn('createRouter', filesUnder('src/provider/router.ts')), true);
});

test("the picture's arrows are the dependency checker's arrows", () => {
  const require = createRequire(import.meta.url);
  const config = require(join(ROOT, '.dependency-cruiser.cjs')) as { arrows: Record<string, string[]> };
  const allowed = Object.entries(config.arrows)
    .flatMap(([from, tos]) => tos.map((to) => `${from} -> ${to}`))
    .sort();
  const dot = readFileSync(join(ROOT, 'docs/architecture.dot'), 'utf8');
  const drawn = [...dot.matchAll(/^\s*([a-z]+)\s*->\s*([a-z]+)\s*;/gm)].map((m) => `${m[1]} -> ${m[2]}`).sort();
  assert.deepEqual(drawn, allowed, 'docs/architecture.dot must draw exactly the arrows of .dependency-cruiser.cjs (then re-render the SVG)');
  const svg = readFileSync(join(ROOT, 'docs/architecture.svg'), 'utf8');
  for (const part of Object.keys(config.arrows)) assert.match(svg, new RegExp(`>${part}<`), `the SVG shows no node ${part}: re-render it`);
});
