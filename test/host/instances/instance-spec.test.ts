import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildEnv, buildSpec, NOBODY, resolveUser, SOCKET_DIR_INSIDE } from '../../../src/host/instances/instance-spec.ts';
import type { RootfsSpec } from '../../../src/protocol/oci.ts';
import { plan } from '../fixtures/fakes.ts';

const rootfs: RootfsSpec = {
  manifestDigest: 'sha256:aa',
  configDigest: 'sha256:bb',
  layers: [],
  process: { args: ['/bin/app'], env: ['PATH=/x', 'A=image', 'B=image', 'BROKEN'], cwd: '', user: undefined },
};
const paths = { socketDir: '/d/sock', socketPath: '/d/sock/app.sock', importsDir: '/d/sock/imports', logFile: '/d/log', stateDir: '/d/driver' };

test('env: the image, then the plan, then Shoal, which wins', () => {
  const env = buildEnv(rootfs.process.env, plan({ env: { B: 'plan' } }), 'echo-1', '/run/shoal');
  assert.deepEqual(env, ['PATH=/x', 'A=image', 'B=plan', 'SHOAL_LISTEN=/run/shoal/app.sock', 'SHOAL_IMPORTS=/run/shoal/imports', 'SHOAL_SERVICE=echo', 'SHOAL_VERSION=1', 'SHOAL_INSTANCE=echo-1']);
  assert.ok(buildEnv([], plan(), 'x-1', '/s').includes('PATH=/usr/local/bin:/usr/bin:/bin'), 'a default PATH');
});

test('spec: the image program unless the plan gives args; limits in bytes; host paths without isolation', () => {
  const base = { id: 'echo-1', rootfs, rootPath: '/root', paths, user: { uid: 1, gid: 2 } };
  const s = buildSpec({ ...base, plan: plan(), hostPaths: false });
  assert.deepEqual(s.args, ['/bin/app']);
  assert.equal(s.cwd, '/');
  assert.equal(s.resources.memoryBytes, 64 * 1024 * 1024);
  assert.ok(s.env.includes(`SHOAL_LISTEN=${SOCKET_DIR_INSIDE}/app.sock`));
  assert.equal(s.listenSocket, '/d/sock/app.sock', 'the host-side socket whose fd is passed in');
  assert.equal(s.importsDir, '/d/sock/imports');
  assert.equal(s.resources.diskBytes, undefined, 'no bound unless the driver bounds the root');
  assert.equal(buildSpec({ ...base, plan: plan(), hostPaths: false, boundedRoot: true }).resources.diskBytes, 64 * 1024 * 1024, 'default 64 MiB');
  const flat = buildSpec({ ...base, plan: plan({ args: ['/bin/other', '-v'] }), hostPaths: true });
  assert.deepEqual(flat.args, ['/bin/other', '-v']);
  assert.ok(flat.env.includes('SHOAL_LISTEN=/d/sock/app.sock'));
  assert.throws(
    () => buildSpec({ ...base, rootfs: { ...rootfs, process: { ...rootfs.process, args: [] } }, plan: plan(), hostPaths: false }),
    (e: any) => e.code === 'invalid' && e.field === 'args',
  );
});

test('user: numbers as given, names from the image, nobody when unset, unknown names refused', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'shoal-spec-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  await mkdir(join(root, 'etc'));
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n');
  await writeFile(join(root, 'etc/group'), 'root:x:0:\nstaff:x:50:\n');
  assert.deepEqual(await resolveUser(root, undefined), NOBODY);
  assert.deepEqual(await resolveUser(root, '1000'), { uid: 1000, gid: 1001 }, 'gid from passwd by uid');
  assert.deepEqual(await resolveUser(root, '4242'), { uid: 4242, gid: 4242 });
  assert.deepEqual(await resolveUser(root, 'app'), { uid: 1000, gid: 1001 });
  assert.deepEqual(await resolveUser(root, 'app:staff'), { uid: 1000, gid: 50 });
  assert.deepEqual(await resolveUser(root, '7:8'), { uid: 7, gid: 8 });
  await assert.rejects(resolveUser(root, 'ghost'), (e: any) => e.code === 'invalid' && /ghost/.test(e.message));
  await assert.rejects(resolveUser(root, 'app:nogroup'), (e: any) => e.code === 'invalid' && /nogroup/.test(e.message));
  await assert.rejects(resolveUser(join(root, 'missing'), 'app'), (e: any) => e.code === 'invalid', 'no passwd: no names');
});

test('spec: a plan on TCP $PORT sets PORT (Shoal wins over the image) and asks the driver for the bridge', () => {
  const base = { id: 'web-1', rootfs: { ...rootfs, process: { ...rootfs.process, env: ['PORT=1'] } }, rootPath: '/root', paths, user: { uid: 1, gid: 2 } };
  const s = buildSpec({ ...base, plan: plan({ listen: { port: 8080 } }), hostPaths: false });
  assert.equal(s.tcpPort, 8080);
  assert.deepEqual(s.env.filter((kv) => kv.startsWith('PORT=')), ['PORT=8080']);
  const socketOnly = buildSpec({ ...base, plan: plan(), hostPaths: false });
  assert.equal('tcpPort' in socketOnly, false);
  assert.deepEqual(socketOnly.env.filter((kv) => kv.startsWith('PORT=')), ['PORT=1'], 'the image’s own PORT is left alone');
});

test('a component image runs only on the driver its label names', () => {
  const base = { id: 'echo-1', rootfs: { ...rootfs, driver: 'isolate' }, rootPath: '/root', paths, user: { uid: 1, gid: 2 }, hostPaths: false };
  assert.throws(
    () => buildSpec({ ...base, plan: plan({ driver: 'runc' }) }),
    (e: any) => e.code === 'invalid' && e.field === 'driver' && /isolate component/.test(e.message),
  );
  assert.deepEqual(buildSpec({ ...base, plan: plan({ driver: 'isolate' }) }).args, ['/bin/app']);
});
