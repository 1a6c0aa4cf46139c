// Bundling a TypeScript service for the bare node template: what lands in the overlay,
// that it runs with nothing but `node` (no node_modules, no type stripping), and what
// the bundler refuses.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { bundleService, findImports } from '../../src/image/sdk-bundle.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { startChildService } from '../fixtures/child-service.ts';
import { post } from '../fixtures/instance-client.ts';

const ECHO = fileURLToPath(new URL('../../examples/echo/service.ts', import.meta.url));
const SDK = fileURLToPath(new URL('../../src/service/index.ts', import.meta.url));

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), 'shoal-bundle-test-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Runs a bundled entry with plain node from inside the bundle; returns its socket and a stop function. */
async function runBundle(root: string, entryInImage: string): Promise<{ socket: string; stderr: () => string; stop(): Promise<number | null> }> {
  const running = await startChildService(join(root, entryInImage), { socket: join(root, 'app.sock'), cwd: join(root, 'app'), env: { PATH: process.env.PATH ?? '' }, stderr: 'pipe' });
  return {
    socket: running.socket,
    stderr: running.stderr,
    async stop() {
      running.child.kill('SIGTERM');
      return (await running.exited)[0];
    },
  };
}

describe('findImports', () => {
  test('finds static, side-effect, re-export, dynamic and require specifiers with their offsets', () => {
    const code = [
      `import a from './a.ts';`,
      `import { b, type c } from "./b.ts";`,
      `import './side.ts';`,
      `export * from '../d.ts';`,
      `export { e } from 'node:fs';`,
      `const f = await import('./f.ts');`,
      `const g = require("./g");`,
      `import json from './h.json' with { type: 'json' };`,
    ].join('\n');
    const found = findImports(code);
    assert.deepEqual(
      found.map((f) => [f.value, f.kind]),
      [
        ['./a.ts', 'static'],
        ['./b.ts', 'static'],
        ['./side.ts', 'static'],
        ['../d.ts', 'static'],
        ['node:fs', 'static'],
        ['./f.ts', 'dynamic'],
        ['./g', 'require'],
        ['./h.json', 'static'],
      ],
    );
    for (const f of found) assert.equal(code.slice(f.start, f.end), f.value);
  });

  test('skips comments, strings, templates, regular expressions and method calls', () => {
    const code = [
      `// import x from './comment.ts'`,
      `/* export * from './block.ts' */`,
      `const s = "import y from './string.ts'";`,
      'const t = `import z from \'./template.ts\' ${ "nested" + `import(\'./inner.ts\')` }`;',
      `const r = /from '.\\/regex.ts'/g;`,
      `loader.import('./method.ts'); obj.require('./method2');`,
      `const q = a / b; import real from './real.ts';`,
      `const notLiteral = import('./x' + name);`,
    ].join('\n');
    assert.deepEqual(
      findImports(code).map((f) => f.value),
      ['./real.ts'],
    );
  });
});

describe('bundleService: echo', () => {
  let out: string;
  let result: Awaited<ReturnType<typeof bundleService>>;
  before(async () => {
    out = join(work, 'echo');
    result = await bundleService({ entry: ECHO, outDir: out });
  });

  test('writes the service, the SDK and one packed TypeBox; small; no .ts left', async () => {
    assert.equal(result.entry, '/app/service.mjs');
    assert.deepEqual(result.cmd, ['/usr/local/bin/node', '/app/service.mjs']);
    assert.ok(result.files.includes('app/service.mjs'));
    assert.ok(result.files.includes('app/echo.mjs'));
    assert.ok(result.files.includes('app/.shoal/src/service/index.mjs'));
    assert.ok(result.files.includes('app/.shoal/src/protocol/errors.mjs'));
    assert.ok(result.files.includes('app/node_modules/@sinclair/typebox/typebox.mjs'));
    assert.ok(result.files.includes('app/node_modules/@sinclair/typebox/LICENSE'));
    assert.ok(!result.files.some((f) => f.endsWith('.ts')), result.files.join(' '));
    // Nothing from other parts of the platform: only what the SDK needs.
    assert.deepEqual(
      result.files.filter((f) => f.startsWith('app/.shoal/')),
      ['app/.shoal/src/protocol/errors.mjs', ...['client', 'define', 'describe', 'errors', 'index', 'log', 'serve'].map((n) => `app/.shoal/src/service/${n}.mjs`)],
    );
    let gz = 0;
    for (const f of result.files) gz += gzipSync(await readFile(join(out, f))).length;
    console.log(`echo bundle: ${result.files.length} files, ${result.bytes} bytes, ${gz} bytes gzipped file by file`);
    assert.ok(result.bytes < 1024 * 1024, `${result.bytes} bytes`);
    assert.ok(gz < 150 * 1024, `${gz} bytes gzipped`);
  });

  test('is the same bytes every time (so the overlay digest is stable)', async () => {
    const again = await bundleService({ entry: ECHO, outDir: join(work, 'echo-again') });
    assert.deepEqual(again.files, result.files);
    for (const f of result.files) assert.ok((await readFile(join(out, f))).equals(await readFile(join(work, 'echo-again', f))), f);
  });

  test('runs with plain node and nothing else: Echo answers, bad input is 400 naming the field, no type stripping warning', async () => {
    const running = await runBundle(out, result.entry);
    try {
      const echo = await post(running.socket, 'Echo', { message: 'bundled' });
      assert.equal(echo.status, 200);
      assert.deepEqual(echo.json, { message: 'bundled' });
      const bad = await post(running.socket, 'Echo', { message: 1 });
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error.field, '/message');
      const inspect = await post(running.socket, 'Inspect', {});
      assert.equal(typeof inspect.json.pid, 'number');
    } finally {
      assert.equal(await running.stop(), 0);
    }
    assert.doesNotMatch(running.stderr(), /ExperimentalWarning|strip/i);
  });
});

describe('bundleService: a service of several files', () => {
  test('keeps the layout of its own files, maps shoal/service, JSON and TypeBox subpaths', async () => {
    const src = join(work, 'project');
    await mkdir(join(src, 'svc'), { recursive: true });
    await mkdir(join(src, 'shared'), { recursive: true });
    await writeFile(join(src, 'shared', 'names.ts'), `export const greeting = (name: string): string => \`hello \${name}\`;\n`);
    await writeFile(join(src, 'shared', 'config.json'), '{"times": 2}\n');
    await writeFile(
      join(src, 'svc', 'main.ts'),
      [
        `import { defineService, serve, Type } from 'shoal/service';`,
        `import { Value } from '@sinclair/typebox/value';`,
        `import { greeting } from '../shared/names.ts';`,
        `import config from '../shared/config.json' with { type: 'json' };`,
        `interface Unused { x: number }`,
        `const Hello = defineService({ name: 'hello', version: '1', operations: {`,
        `  Hi: { input: Type.Object({ name: Type.String({ default: 'you' }) }), output: Type.Object({ text: Type.String() }) } } });`,
        `await serve(Hello, { Hi: ({ name }) => ({ text: Array(config.times).fill(greeting(name)).join(' ') + ' ' + JSON.stringify(Value.Default(Type.Object({ n: Type.Number({ default: 1 }) }), {})) }) });`,
      ].join('\n'),
    );
    const out = join(work, 'project-out');
    const r = await bundleService({ entry: join(src, 'svc', 'main.ts'), outDir: out });
    assert.equal(r.entry, '/app/svc/main.mjs');
    for (const f of ['app/svc/main.mjs', 'app/shared/names.mjs', 'app/shared/config.json', 'app/node_modules/@sinclair/typebox/value.mjs']) assert.ok(r.files.includes(f), f);
    const pkg = JSON.parse(await readFile(join(out, 'app/node_modules/@sinclair/typebox/package.json'), 'utf8'));
    assert.deepEqual(Object.keys(pkg.exports).sort(), ['.', './compiler', './value']);
    const main = await readFile(join(out, 'app/svc/main.mjs'), 'utf8');
    assert.match(main, /from '\.\.\/\.shoal\/src\/service\/index\.mjs'/);
    assert.match(main, /from '\.\.\/shared\/names\.mjs'/);
    assert.doesNotMatch(main, /interface Unused/);

    const running = await runBundle(out, r.entry);
    try {
      const hi = await post(running.socket, 'Hi', { name: 'ada' });
      assert.equal(hi.status, 200);
      assert.deepEqual(hi.json, { text: 'hello ada hello ada {"n":1}' });
    } finally {
      assert.equal(await running.stop(), 0);
    }
  });
});

describe('bundleService: refusals', () => {
  const write = async (name: string, code: string) => {
    const dir = await mkdtemp(join(work, 'bad-'));
    await writeFile(join(dir, name), code);
    return join(dir, name);
  };
  const refuses = async (entry: string, outDir: string, code: string, pattern: RegExp) =>
    assert.rejects(bundleService({ entry, outDir }), (e: unknown) => e instanceof ShoalError && e.code === code && pattern.test(e.message));

  test('an import the image cannot load, naming the file and the specifier', async () => {
    const entry = await write('main.ts', `import { Hono } from 'hono';\nexport const x = Hono;\n`);
    await refuses(entry, join(work, 'o1'), 'unsupported', /main\.ts imports "hono", which an instance cannot load/);
  });

  test('TypeScript that cannot be stripped (enum)', async () => {
    const entry = await write('main.ts', `enum Color { Red }\nconsole.log(Color.Red);\n`);
    await refuses(entry, join(work, 'o2'), 'invalid', /main\.ts: .*enum/);
  });

  test('CommonJS, a missing entry, a non-empty output directory, a missing local import', async () => {
    await refuses(await write('main.cjs', `module.exports = 1;\n`), join(work, 'o3'), 'unsupported', /only \.ts, \.mts, \.mjs, \.js and \.json/);
    await refuses(join(work, 'nope.ts'), join(work, 'o4'), 'invalid', /is not a file/);
    const nonEmpty = join(work, 'o5');
    await mkdir(nonEmpty);
    await writeFile(join(nonEmpty, 'x'), '');
    await refuses(ECHO, nonEmpty, 'conflict', /not empty/);
    await refuses(await write('main.ts', `import './missing.ts';\n`), join(work, 'o6'), 'not-found', /main\.ts imports "\.\/missing\.ts", but .*missing\.ts is not a file/);
  });

  test('shoal/service is the SDK entry', async () => {
    const entry = await write('main.ts', `import { Type } from 'shoal/service';\nconsole.log(Type.String().type);\n`);
    const r = await bundleService({ entry, outDir: join(work, 'o7') });
    assert.ok(r.files.some((f) => f === 'app/.shoal/src/service/index.mjs'));
    assert.ok(SDK.endsWith('src/service/index.ts'));
  });
});
