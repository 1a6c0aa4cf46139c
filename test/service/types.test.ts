// The compiler checks handlers and clients against the service definitions. Runs the
// TypeScript compiler on copies of the fixtures with the `@ts-expect-error` directives
// blanked out, and matches every diagnostic to the code and text its directive names:
// no missing one, no extra one, and none at all in the well-typed fixture.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURES = join(ROOT, 'test/service/fixtures');
const TSC = join(ROOT, 'node_modules/.bin/tsc');

interface Expected {
  line: number;
  code: string;
  text: string;
}

interface Diagnostic {
  file: string;
  line: number;
  code: string;
  message: string;
}

/** Copies a fixture with its directives blanked (so line numbers stay) and relative imports made absolute. */
async function prepare(name: string, outDir: string): Promise<{ path: string; expected: Expected[] }> {
  const text = await readFile(join(FIXTURES, name), 'utf8');
  const expected: Expected[] = [];
  const lines = text.split('\n').map((line, i) => {
    const m = /^\s*\/\/ @ts-expect-error (TS\d+) (.+)$/.exec(line);
    if (m === null) return line;
    expected.push({ line: i + 2, code: m[1]!, text: m[2]!.trim() });
    return '//';
  });
  const body = lines.join('\n').replace(/from '(\.{1,2}\/[^']+)'/g, (_all, spec: string) => `from '${join(FIXTURES, spec)}'`);
  const path = join(outDir, name);
  await writeFile(path, body);
  return { path, expected };
}

function parse(output: string): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  for (const line of output.split('\n')) {
    const m = /^(.+?)\((\d+),(\d+)\): error (TS\d+): (.*)$/.exec(line);
    if (m !== null) diagnostics.push({ file: m[1]!, line: Number(m[2]), code: m[4]!, message: m[5]! });
    else if (line.startsWith(' ') && diagnostics.length > 0) diagnostics[diagnostics.length - 1]!.message += `\n${line.trim()}`;
  }
  return diagnostics;
}

test('the compiler rejects miswired handlers and clients with the expected diagnostics, and accepts well-typed ones', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-types-'));
  try {
    const ok = await prepare('types-ok.ts', dir);
    const bad = await prepare('types-miswired.ts', dir);
    assert.equal(ok.expected.length, 0);
    assert.ok(bad.expected.length >= 10, `the miswired fixture has ${bad.expected.length} cases`);

    const base = JSON.parse(await readFile(join(ROOT, 'tsconfig.json'), 'utf8')) as { compilerOptions: Record<string, unknown> };
    await writeFile(join(dir, 'package.json'), '{"type":"module"}\n');
    await writeFile(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { ...base.compilerOptions, typeRoots: [join(ROOT, 'node_modules/@types')] },
        files: [ok.path, bad.path],
      }),
    );
    let output = '';
    try {
      const r = await run(TSC, ['--noEmit', '--pretty', 'false', '-p', join(dir, 'tsconfig.json')], { cwd: dirname(dir), maxBuffer: 16 << 20 });
      output = r.stdout + r.stderr;
    } catch (e) {
      output = String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '');
    }
    const diagnostics = parse(output);
    const inOk = diagnostics.filter((d) => d.file.endsWith('types-ok.ts'));
    assert.deepEqual(inOk, [], `the well-typed fixture must check clean:\n${output}`);
    const inBad = diagnostics.filter((d) => d.file.endsWith('types-miswired.ts'));
    assert.equal(inBad.length + inOk.length, diagnostics.length, `diagnostics in other files:\n${output}`);

    for (const e of bad.expected) {
      const at = inBad.filter((d) => d.line === e.line);
      assert.ok(at.length > 0, `line ${e.line}: expected ${e.code} (${e.text}), the compiler said nothing there:\n${output}`);
      assert.ok(
        at.some((d) => d.code === e.code && d.message.includes(e.text)),
        `line ${e.line}: expected ${e.code} containing ${JSON.stringify(e.text)}, got:\n${at.map((d) => `${d.code}: ${d.message}`).join('\n')}`,
      );
    }
    const unexpected = inBad.filter((d) => !bad.expected.some((e) => e.line === d.line));
    assert.deepEqual(unexpected, [], 'diagnostics on lines no directive names');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
