// The route table, the token format, roles, the verifier's cache and the state-directory token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createRegistryVerifier,
  credentialOf,
  ensureAdminToken,
  ensureTokenFile,
  hashToken,
  mayInvoke,
  mintToken,
  parseTtl,
  requirementFor,
  roleAllows,
  tokenId,
} from '../../../src/provider/auth/index.ts';
import { openRegistry } from '../../../src/provider/registry/index.ts';
import type { ApiTokenRecord } from '../../../src/provider/registry/index.ts';

test('requirementFor: each route needs what the table says; unknown routes need admin', () => {
  const cases: Array<[string, string, unknown]> = [
    ['GET', '/healthz', { kind: 'open' }],
    ['GET', '/metrics', { kind: 'role', role: 'read', route: '/metrics' }],
    ['POST', '/api/v1/services', { kind: 'role', role: 'deploy', route: '/api/v1/services' }],
    ['DELETE', '/api/v1/services/echo', { kind: 'role', role: 'deploy', route: '/api/v1/services/:name', service: 'echo' }],
    ['POST', '/api/v1/services/echo/deployments', { kind: 'role', role: 'deploy', route: '/api/v1/services/:name/deployments', service: 'echo' }],
    ['GET', '/api/v1/events?service=echo', { kind: 'role', role: 'read', route: '/api/v1/events' }],
    ['POST', '/api/v1/hosts', { kind: 'join', route: '/api/v1/hosts' }],
    ['PUT', '/api/v1/farms/aw', { kind: 'role', role: 'deploy', route: '/api/v1/farms/:name', service: 'aw' }],
    ['DELETE', '/api/v1/tokens/abc', { kind: 'role', role: 'admin', route: '/api/v1/tokens/:id' }],
    ['GET', '/v2/', { kind: 'pull', route: '/v2/' }],
    ['HEAD', '/v2/library/echo/blobs/sha256:00', { kind: 'pull', route: '/v2/<name>/blobs' }],
    ['GET', '/v2/a/b/manifests/1', { kind: 'pull', route: '/v2/<name>/manifests' }],
    ['PATCH', '/v2/a/b/blobs/uploads/xyz', { kind: 'role', role: 'deploy', route: '/v2/<name>/blobs/uploads' }],
    ['PUT', '/v2/a/manifests/1', { kind: 'role', role: 'deploy', route: '/v2/<name>/manifests' }],
    ['GET', '/v2/_catalog', { kind: 'role', role: 'read', route: '/v2/_catalog' }],
    ['GET', '/v2/shoal-state/echo/blobs/sha256:00', { kind: 'role', role: 'deploy', route: '/v2/<name>/blobs' }],
    ['HEAD', '/v2/shoal-state/a/b/manifests/sha256:00', { kind: 'role', role: 'deploy', route: '/v2/<name>/manifests' }],
    ['GET', '/v2/token?scope=x', { kind: 'token-endpoint' }],
    ['POST', '/api/v1/gc', { kind: 'role', role: 'deploy', route: '/api/v1/gc' }],
    ['POST', '/s/echo/Echo', { kind: 'service', service: 'echo' }],
    ['POST', '/x/aw/processing/Processed', { kind: 'farm', farm: 'aw' }],
    ['PUT', '/api/v1/services/echo/scale', { kind: 'role', role: 'deploy', route: '/api/v1/services/:name/scale', service: 'echo' }],
    ['DELETE', '/api/v1/instances/echo-1', { kind: 'role', role: 'deploy', route: '/api/v1/instances/:id' }],
    ['GET', '/ui', { kind: 'open' }],
    ['GET', '/ui/', { kind: 'open' }],
    ['GET', '/ui/assets/app.js', { kind: 'open' }],
    ['POST', '/ui/session', { kind: 'join', route: '/ui/session' }],
    ['DELETE', '/ui/session', { kind: 'open' }],
    ['GET', '/ui/events', { kind: 'role', role: 'read', route: '/ui/events' }],
    ['POST', '/ui/assets/app.js', { kind: 'role', role: 'admin', route: '/ui/assets/app.js' }],
    ['POST', '/api/v1/unknown', { kind: 'role', role: 'admin', route: '/api/v1/unknown' }],
    ['GET', '/', { kind: 'role', role: 'admin', route: '/' }],
  ];
  for (const [method, path, want] of cases) assert.deepEqual(requirementFor(method, path), want, `${method} ${path}`);
});

test('tokens: format, hash, credentials from Bearer and Basic, roles, scopes, ttl', () => {
  const t = mintToken();
  assert.equal(tokenId(t.secret), t.id);
  assert.equal(t.hash, hashToken(t.secret));
  assert.equal(t.hash.length, 64);
  assert.notEqual(mintToken().secret, t.secret);
  assert.equal(tokenId('shoal_xyz_abc'), undefined);
  assert.equal(credentialOf({ authorization: `Bearer ${t.secret}` }), t.secret);
  assert.equal(credentialOf({ authorization: `Basic ${Buffer.from(`anyone:${t.secret}`).toString('base64')}` }), t.secret);
  assert.equal(credentialOf({ authorization: 'Digest x' }), undefined);
  assert.equal(credentialOf({}), undefined);
  assert.deepEqual(
    (['admin', 'deploy', 'read', 'invoke'] as const).map((r) => [roleAllows(r, 'admin'), roleAllows(r, 'deploy'), roleAllows(r, 'read')]),
    [
      [true, true, true],
      [false, true, true],
      [false, false, true],
      [false, false, false],
    ],
  );
  assert.equal(mayInvoke('invoke', ['a'], 'a'), true);
  assert.equal(mayInvoke('invoke', ['a'], 'b'), false);
  assert.equal(mayInvoke('read', undefined, 'a'), false);
  assert.equal(mayInvoke('deploy', undefined, 'a'), true);
  assert.deepEqual(['90s', '15m', '12h', '30d', '7', '0', 'x'].map(parseTtl), [90, 900, 43200, 2592000, 7, undefined, undefined]);
});

test('verifier: control calls read the source each time; messages may use a verdict cached for the ttl; forget drops it', async () => {
  const t = mintToken();
  let record: ApiTokenRecord | undefined = { id: t.id, hash: t.hash, role: 'invoke', services: undefined, note: undefined, createdAt: 0, expiresAt: undefined, revokedAt: undefined };
  let reads = 0;
  let now = 1000;
  const v = createRegistryVerifier({
    tokens: {
      async getApiToken() {
        reads++;
        return record;
      },
    },
    cacheTtlMs: 500,
    now: () => now,
  });
  assert.equal((await v.verify(t.secret)).ok, true);
  assert.equal((await v.verify(t.secret)).ok, true);
  assert.equal(reads, 1, 'cached');
  record = { ...record!, revokedAt: 1000 };
  assert.deepEqual(await v.verify(t.secret, { fresh: true }), { ok: false, reason: 'revoked' });
  assert.equal(reads, 2);
  assert.deepEqual(await v.verify(t.secret), { ok: false, reason: 'revoked' }, 'the fresh verdict replaced the cached one');
  assert.equal(reads, 2);
  v.forget(t.id);
  await v.verify(t.secret);
  assert.equal(reads, 3, 'forgotten: read again');
  now += 600;
  await v.verify(t.secret);
  assert.equal(reads, 4, 'past the ttl: read again');
  now += 600;
  assert.deepEqual(await v.verify(`${t.secret.slice(0, -1)}x`), { ok: false, reason: 'unknown' }, 'a wrong secret for a real id');
  assert.deepEqual(await v.verify('garbage'), { ok: false, reason: 'malformed' });
});

test('the state directory token: made once (dir 0700, file 0600), kept, remade for a database that never saw it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-state-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const state = join(dir, 'state');
  const registry = await openRegistry({ url: join(dir, 'one.db') });
  t.after(() => registry.close());
  const first = await ensureAdminToken(state, registry);
  assert.equal(first.created, true);
  assert.equal((await stat(state)).mode & 0o777, 0o700);
  assert.equal((await stat(first.path)).mode & 0o777, 0o600);
  assert.equal((await readFile(first.path, 'utf8')).trim(), first.secret);
  assert.equal((await registry.getApiToken(tokenId(first.secret)!))?.role, 'admin');
  const again = await ensureAdminToken(state, registry);
  assert.deepEqual([again.created, again.secret], [false, first.secret]);

  const other = await openRegistry({ url: join(dir, 'two.db') });
  t.after(() => other.close());
  const remade = await ensureAdminToken(state, other);
  assert.equal(remade.created, true);
  assert.notEqual(remade.secret, first.secret);

  const file = await ensureTokenFile(join(state, 'store-token'));
  assert.equal(file.created, true);
  assert.equal((await stat(file.path)).mode & 0o777, 0o600);
  assert.equal((await ensureTokenFile(file.path)).secret, file.secret);
});

test('a service definition says its access, and the registered description keeps it (default token)', async () => {
  const { defineService, toServiceDescription, Type } = await import('../../../src/service/index.ts');
  const { validateServiceDescription } = await import('../../../src/protocol/service.ts');
  const ops = { Ping: { input: Type.Object({}), output: Type.Object({}) } };
  const open = defineService({ name: 'open', version: '1', operations: ops, access: 'public' });
  const closed = defineService({ name: 'closed', version: '1', operations: ops });
  assert.equal(validateServiceDescription(toServiceDescription(open, { image: 'x:1' })).access, 'public');
  assert.equal(validateServiceDescription(toServiceDescription(closed, { image: 'x:1' })).access, 'token');
  assert.throws(() => validateServiceDescription({ ...toServiceDescription(closed, { image: 'x:1' }), access: 'everyone' }), /\/access/);
});
