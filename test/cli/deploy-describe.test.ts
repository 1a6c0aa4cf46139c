// How `shoal deploy` reads a service's definition from its own module: the module runs
// in a child with SHOAL_DESCRIBE_TO set, serve() writes the description and serves
// nothing; a module that never calls serve() is refused with what it printed.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeEntry, exampleOf } from '../../src/cli/commands/deploy.ts';

const SDK = fileURLToPath(new URL('../../src/service/index.ts', import.meta.url));
let dir: string | undefined;
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the description comes from the module without it serving or running on', async () => {
  dir = await mkdtemp(join(tmpdir(), 'dd-'));
  const entry = join(dir, 'svc.ts');
  // The interval would keep a served module alive forever: describeEntry must stop it.
  await writeFile(
    entry,
    `import { defineService, serve, Type } from ${JSON.stringify(SDK)};
const S = defineService({ name: 'tally', version: '3', operations: { Add: { input: Type.Object({ n: Type.Integer() }), output: Type.Object({ total: Type.Integer() }) } }, scaling: { idleTimeoutMs: 1000 } });
setInterval(() => {}, 1000);
const running = await serve(S, { Add: ({ n }) => ({ total: n }) }, { listen: '/nonexistent/dir/app.sock' });
console.error('served at', running.socketPath || 'nothing');
`,
  );
  const d = (await describeEntry(entry)) as { name: string; version: string; image: string; scaling: { idleTimeoutMs: number }; operations: Record<string, { input: unknown }> };
  assert.equal(d.name, 'tally');
  assert.equal(d.version, '3');
  assert.equal(d.image, 'tally:3', 'name:version when the definition names no image');
  assert.equal(d.scaling.idleTimeoutMs, 1000);
  assert.deepEqual(exampleOf(d.operations.Add!.input), { n: 0 });
});

test('a module that does not call serve() is refused, with its output', async () => {
  dir ??= await mkdtemp(join(tmpdir(), 'dd-'));
  const entry = join(dir, 'plain.ts');
  await writeFile(entry, `console.error('just a script');\n`);
  await assert.rejects(describeEntry(entry), /did not call serve\(defineService\(…\), handlers\):\njust a script/);
});
