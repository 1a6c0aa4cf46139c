import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenPreferring, readPorts, writePorts } from '../../src/host/listen-ports.ts';
import { listen } from '../../src/host/listen.ts';
import { recordingLogger } from './fixtures/fakes.ts';

test('ports are recorded and read back; a missing or broken record is no ports', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-ports-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const log = recordingLogger();
  assert.deepEqual(await readPorts(dir, log), {});
  await writePorts(dir, { control: 4100, data: 4101 });
  assert.deepEqual(await readPorts(dir, log), { control: 4100, data: 4101 });
  await writeFile(join(dir, 'ports.json'), '{"control": "x", "data": 70000}');
  assert.deepEqual(await readPorts(dir, log), {});
  await writeFile(join(dir, 'ports.json'), 'not json');
  assert.deepEqual(await readPorts(dir, log), {});
  assert.ok(log.lines.some((l) => l.level === 'warn'));
});

test('any port (0) takes the recorded one again; a taken one falls back to a new port; a port asked for is kept', async (t) => {
  const servers: Server[] = [];
  t.after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));
  const on = async (port: number) => {
    const s = createServer();
    servers.push(s);
    return listen(s, '127.0.0.1', port);
  };
  const log = recordingLogger();
  const first = await on(0);
  await new Promise((r) => servers.pop()!.close(r)); // the last run's port, free again
  assert.equal(await listenPreferring(0, first, on, log, 'data-plane'), first);
  // Taken now (by the server just started): a new port.
  const other = await listenPreferring(0, first, on, log, 'data-plane');
  assert.notEqual(other, first);
  assert.ok(log.lines.some((l) => l.level === 'warn' && /taken/.test(l.msg ?? '')));
  // A port asked for explicitly is not replaced by the recorded one.
  const asked = await on(0);
  await new Promise((r) => servers.pop()!.close(r));
  assert.equal(await listenPreferring(asked, first, on, log, 'control'), asked);
});
