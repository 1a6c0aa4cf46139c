// Miswired farm scripts must not compile; well-typed ones must. Runs the real compiler on
// the fixtures (as `shoal apply` does) and matches each expected diagnostic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { typeCheckFarm } from '../../src/compose/typecheck.ts';

const dir = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

// The fixtures mark each miswiring with @ts-expect-error so the project's own type-check
// stays clean (and already proves each line errs). Here the marker line is blanked (line
// numbers kept) and relative imports made absolute, in a temp copy, to see the diagnostic.
async function checkWithoutMarkers(file: string): Promise<Awaited<ReturnType<typeof typeCheckFarm>>> {
  const text = await readFile(join(dir, file), 'utf8');
  const stripped = text
    .split('\n')
    .map((l) => (l.trim().startsWith('// @ts-expect-error') ? '' : l))
    .join('\n')
    .replace(/from '(\.\.?\/[^']+)'/g, (_m, rel: string) => `from '${resolve(dir, rel)}'`);
  const tmp = await mkdtemp(join(tmpdir(), 'shoal-compose-types-'));
  try {
    await writeFile(join(tmp, 'package.json'), '{ "type": "module" }\n'); // an ES module, as in the repository
    await writeFile(join(tmp, file), stripped);
    return await typeCheckFarm(join(tmp, file));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

const rejected: Array<[file: string, line: number, code: string, mentions: RegExp]> = [
  ['bad-import-type.ts', 8, 'TS2322', /"order-processing".*is not assignable to type 'Exports<ServiceDefinition<"payment"/s],
  ['bad-missing-import.ts', 8, 'TS2741', /Property 'processing' is missing/],
  ['bad-or-mixed.ts', 9, 'TS2345', /"order-processing".*is not assignable to parameter of type 'Exports<ServiceDefinition<"payment"/s],
  ['bad-export-path.ts', 8, 'TS2345', /Argument of type '"order-entry"' is not assignable to parameter of type 'ExportPath</],
  ['bad-update-type.ts', 10, 'TS2345', /"order-processing".*is not assignable to parameter of type 'Exports<ServiceDefinition<"payment"/s],
  ['bad-snapshot-driver.ts', 8, 'TS2345', /does not declare a driver that can snapshot: give defineService driver: 'wasm' or 'vm'/],
  ['bad-endpoint-type.ts', 10, 'TS2322', /Endpoint<\{ orderId: string; card: string; amount: number; \}.*is not assignable to type 'Endpoint<\{ orderId: string; items:/s],
];

for (const [file, line, code, mentions] of rejected) {
  test(`rejected: ${file}`, async () => {
    const r = await checkWithoutMarkers(file);
    assert.equal(r.ok, false, `${file} compiled but must not`);
    assert.match(r.diagnostics, new RegExp(`${file.replace('.', '\\.')}\\(${line},\\d+\\): error ${code}`));
    assert.match(r.diagnostics, mentions);
  });
}

test('bad-endpoint-type.ts: an endpoint with the wrong output is rejected too', async () => {
  const r = await checkWithoutMarkers('bad-endpoint-type.ts');
  assert.match(r.diagnostics, /bad-endpoint-type\.ts\(13,\d+\): error TS2322/);
});

test('accepted: ok-adventure.ts (the Adventure Works shape)', async () => {
  const r = await typeCheckFarm(join(dir, 'ok-adventure.ts'));
  assert.equal(r.diagnostics, '');
  assert.equal(r.ok, true);
});

test('the Adventure Works example farm type-checks', async () => {
  const r = await typeCheckFarm(join(dir, '../../../examples/adventure-works/farm.ts'));
  assert.equal(r.diagnostics, '');
});

test('accepted: ok-snapshot.ts (a snapshot of a wasm instance, restored on a crash)', async () => {
  const r = await typeCheckFarm(join(dir, 'ok-snapshot.ts'));
  assert.equal(r.diagnostics, '');
  assert.equal(r.ok, true);
});
