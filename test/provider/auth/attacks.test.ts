// Issue 9's outsider, against a provider with its store mounted (what `shoal up` serves on
// one port): every call that changes or lists something is refused without a token (401)
// and with a token of the wrong role (403), with a JSON body; nothing changed. Tokens are
// stored hashed; revocation holds at once, on a second provider on the same database too;
// mutating calls land in the audit trail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createBlobStore, createImageStore, createRegistryClient, createStoreApp } from '../../../src/image/index.ts';
import { startProvider, type Provider } from '../../../src/provider/index.ts';
import { createApiToken } from '../../../src/provider/auth/index.ts';
import { MediaType } from '../../../src/protocol/oci.ts';
import { stateRepository } from '../../../src/protocol/index.ts';
import { digestOf, type Digest } from '../../../src/protocol/digest.ts';
import { makeConfig, makeLayer, makeManifest } from '../../image/store-fixtures.ts';
import { ECHO_TEST_SERVICE, startFakeHost } from '../fixtures/fake-host.ts';
import { FAST, until } from '../fixtures/provider.ts';

interface Platform {
  provider: Provider;
  dir: string;
  database: string;
  tokens: { admin: string; deploy: string; read: string; invoke: string };
  start(): Promise<Provider>;
}

async function startPlatform(t: { after(fn: () => Promise<void>): void }): Promise<Platform> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-auth-'));
  const storeDir = join(dir, 'store');
  const blobs = createBlobStore({ dir: storeDir });
  const store = createStoreApp({ store: createImageStore({ dir: storeDir, blobs }), blobs });
  const host = await startFakeHost();
  const database = join(dir, 'shoal.db');
  const providers: Provider[] = [];
  const start = async () => {
    const p = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database, store, joinToken: 'join-token-for-tests', tuning: FAST });
    providers.push(p);
    return p;
  };
  const provider = await start();
  t.after(async () => {
    await Promise.all(providers.map((p) => p.close()));
    await host.close();
    await rm(dir, { recursive: true, force: true });
  });
  const mint = async (role: 'admin' | 'deploy' | 'read' | 'invoke') => (await createApiToken(provider.registry, { role })).secret;
  const tokens = { admin: await mint('admin'), deploy: await mint('deploy'), read: await mint('read'), invoke: await mint('invoke') };

  // The echo image, pushed with a deploy token through the mounted store.
  const client = createRegistryClient({ baseUrl: provider.url, token: tokens.deploy });
  const layer = await makeLayer({ 'app/hello.txt': 'hello' });
  const config = makeConfig([layer.diffId], { Cmd: ['/bin/true'] });
  await client.pushBlob('echo', layer.digest, layer.size, () => Readable.from([layer.gz]));
  await client.pushBlob('echo', digestOf(config) as Digest, config.length, () => Readable.from([config]));
  await client.putManifest('echo', '1', makeManifest(config, [layer], MediaType.ociManifest), MediaType.ociManifest);

  await provider.registerHost({ controlUrl: host.controlUrl, token: host.token });
  await provider.registerService({ ...ECHO_TEST_SERVICE, access: 'public' });
  return { provider, dir, database, tokens, start };
}

async function call(base: string, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: the assertion on body.error says so
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

const FARM = {
  format: 'shoal.farm/v1',
  name: 'evil',
  services: {},
  nodes: [],
  exports: [],
  crashRules: [],
};

/** [what, method, path, body, the least role that may do it] */
const ATTACKS: ReadonlyArray<[string, string, string, unknown, 'read' | 'deploy' | 'admin']> = [
  ['re-register echo with another image', 'POST', '/api/v1/services', { ...ECHO_TEST_SERVICE, image: 'evil:1', access: 'public' }, 'deploy'],
  ['remove echo', 'DELETE', '/api/v1/services/echo', undefined, 'deploy'],
  ['deploy echo', 'POST', '/api/v1/services/echo/deployments', { count: 2 }, 'deploy'],
  ['apply a farm', 'PUT', '/api/v1/farms/evil', FARM, 'deploy'],
  ['remove a farm', 'DELETE', '/api/v1/farms/evil', undefined, 'deploy'],
  ['start a push', 'POST', '/v2/echo/blobs/uploads/', undefined, 'deploy'],
  ['put a manifest', 'PUT', '/v2/echo/manifests/evil', '{}', 'deploy'],
  ['delete a manifest', 'DELETE', '/v2/echo/manifests/1', undefined, 'deploy'],
  ['retag', 'POST', '/api/v1/tags', { source: 'echo:1', target: 'echo:evil' }, 'deploy'],
  ['delete an image', 'DELETE', '/api/v1/images?ref=echo:1', undefined, 'deploy'],
  ['delete a repository', 'DELETE', '/api/v1/repositories?name=echo', undefined, 'deploy'],
  ['gc', 'POST', '/api/v1/gc', {}, 'deploy'],
  ['make a token', 'POST', '/api/v1/tokens', { role: 'admin' }, 'admin'],
  ['list tokens', 'GET', '/api/v1/tokens', undefined, 'admin'],
  ['read the audit trail', 'GET', '/api/v1/audit', undefined, 'admin'],
  ['list hosts', 'GET', '/api/v1/hosts', undefined, 'read'],
  ['list instances', 'GET', '/api/v1/instances', undefined, 'read'],
  ['list events', 'GET', '/api/v1/events', undefined, 'read'],
  ['read metrics', 'GET', '/metrics', undefined, 'read'],
  ['list services', 'GET', '/api/v1/services', undefined, 'read'],
  ['list deployments', 'GET', '/api/v1/deployments', undefined, 'read'],
  ['list farms', 'GET', '/api/v1/farms', undefined, 'read'],
  ['list images', 'GET', '/api/v1/images', undefined, 'read'],
  ['list repositories', 'GET', '/v2/_catalog', undefined, 'read'],
];
const WEAKER = { read: ['invoke'], deploy: ['invoke', 'read'], admin: ['invoke', 'read', 'deploy'] } as const;

test('every attack is refused: 401 without a token, 403 with a weaker role, JSON bodies, nothing changed', async (t) => {
  const p = await startPlatform(t);
  const base = p.provider.url;
  for (const [what, method, path, body, least] of ATTACKS) {
    for (const token of [undefined, 'shoal_000000000000_' + 'A'.repeat(43), 'not-a-token']) {
      const r = await call(base, method, path, body, token);
      assert.equal(r.status, 401, `${what} with ${token ?? 'no token'}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body?.error?.code, 'unauthorized', what);
      assert.equal(r.body.error.field, 'authorization');
      assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer realm=/, what);
    }
    for (const weaker of WEAKER[least]) {
      const r = await call(base, method, path, body, p.tokens[weaker]);
      assert.equal(r.status, 403, `${what} with a ${weaker} token: ${JSON.stringify(r.body)}`);
      assert.equal(r.body?.error?.code, 'forbidden', what);
      assert.match(r.body.error.message, new RegExp(`needs a ${least} token`));
    }
  }
  // Nothing changed: echo is still version 1 on echo:1, its tag is there, no farm, no token made.
  const echo = await p.provider.registry.getService('echo');
  assert.equal(echo?.description.image, 'echo:1');
  const client = createRegistryClient({ baseUrl: base });
  assert.ok(await client.getManifest('echo', '1'), 'anonymous pulls are allowed by default, and the tag is still there');
  assert.equal(await client.getManifest('echo', 'evil'), undefined);
  assert.equal(p.provider.farms.list().length, 0);
  assert.equal((await p.provider.registry.listApiTokens()).length, 4);

  // The right roles get through (read lists; deploy registers).
  assert.equal((await call(base, 'GET', '/api/v1/hosts', undefined, p.tokens.read)).status, 200);
  assert.equal((await call(base, 'GET', '/metrics', undefined, p.tokens.read)).status, 200);
  const v2 = await call(base, 'POST', '/api/v1/services', { ...ECHO_TEST_SERVICE, version: '2', access: 'public' }, p.tokens.deploy);
  assert.equal(v2.status, 201, JSON.stringify(v2.body));
  assert.equal((await call(base, 'GET', '/api/v1/tokens', undefined, p.tokens.admin)).body.tokens.length, 4);
  // Open: health and the API description.
  assert.equal((await call(base, 'GET', '/healthz')).status, 200);
  assert.equal((await call(base, 'GET', '/openapi.json')).status, 200);
});

test("a captured state is not an image: anonymous pulls and read tokens cannot read one (it holds a service's memory)", async (t) => {
  const p = await startPlatform(t);
  const memory = Buffer.from('the memory of a running service, with its secrets');
  const digest = digestOf(memory) as Digest;
  const repo = stateRepository('echo');
  const deploy = createRegistryClient({ baseUrl: p.provider.url, token: p.tokens.deploy });
  await deploy.pushBlob(repo, digest, memory.length, () => Readable.from([memory]));
  const path = `/v2/${repo}/blobs/${digest}`;
  const anonymous = await fetch(`${p.provider.url}${path}`);
  assert.equal(anonymous.status, 401, 'anonymous image pulls are open here, states are not');
  for (const weaker of ['invoke', 'read'] as const) {
    const r = await fetch(`${p.provider.url}${path}`, { headers: { authorization: `Bearer ${p.tokens[weaker]}` } });
    assert.equal(r.status, 403, weaker);
    assert.ok(!Buffer.from(await r.arrayBuffer()).includes(memory));
  }
  const ok = await fetch(`${p.provider.url}${path}`, { headers: { authorization: `Bearer ${p.tokens.deploy}` } });
  assert.equal(ok.status, 200);
  assert.deepEqual(Buffer.from(await ok.arrayBuffer()), memory);
  // An image beside it stays anonymously readable.
  assert.equal((await fetch(`${p.provider.url}/v2/echo/manifests/1`)).status, 200);
});

test('anonymous pulls can be turned off: then reading images needs a read token', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-auth-pull-'));
  const blobs = createBlobStore({ dir });
  const store = createStoreApp({ store: createImageStore({ dir, blobs }), blobs });
  const provider = await startProvider({
    listen: { host: '127.0.0.1', port: 0 },
    database: join(dir, 'shoal.db'),
    store,
    joinToken: 'join-token-for-tests',
    auth: { anonymousPull: false },
  });
  t.after(async () => {
    await provider.close();
    await rm(dir, { recursive: true, force: true });
  });
  const read = (await createApiToken(provider.registry, { role: 'read' })).secret;
  for (const path of ['/v2/', '/v2/echo/manifests/1', '/api/v1/images/resolve?ref=echo:1']) {
    const r = await call(provider.url, 'GET', path);
    assert.equal(r.status, 401, path);
    assert.equal(r.body.error.code, 'unauthorized');
  }
  assert.equal((await call(provider.url, 'GET', '/v2/', undefined, read)).status, 200);
  assert.equal((await call(provider.url, 'GET', '/v2/echo/manifests/1', undefined, read)).status, 404, 'through the gate, to the store');
});

test('tokens: the database holds hashes only; revocation holds at once, on another provider too', async (t) => {
  const p = await startPlatform(t);
  const made = await call(p.provider.url, 'POST', '/api/v1/tokens', { role: 'deploy', ttlSeconds: 3600, note: 'ci' }, p.tokens.admin);
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const secret: string = made.body.secret;
  const id: string = made.body.token.id;
  assert.match(secret, /^shoal_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
  assert.equal(made.body.token.role, 'deploy');
  assert.ok(made.body.token.expiresAt > Date.now());

  // Stored hashed: no secret in the database files, the hash is there.
  const files = [p.database, `${p.database}-wal`];
  const bytes = Buffer.concat(await Promise.all(files.map((f) => readFile(f).catch(() => Buffer.alloc(0)))));
  for (const s of [secret, ...Object.values(p.tokens)]) assert.equal(bytes.includes(s), false, 'a token secret is in the database');
  const record = await p.provider.registry.getApiToken(id);
  assert.ok(record && bytes.includes(record.hash), 'its hash is');
  const listed = await call(p.provider.url, 'GET', '/api/v1/tokens', undefined, p.tokens.admin);
  assert.equal(JSON.stringify(listed.body).includes(secret), false);
  assert.equal(JSON.stringify(listed.body).includes(record.hash), false, 'the API shows neither secrets nor hashes');

  const second = await p.start();
  for (const base of [p.provider.url, second.url]) assert.equal((await call(base, 'GET', '/api/v1/services', undefined, secret)).status, 200);
  const revoked = await call(p.provider.url, 'DELETE', `/api/v1/tokens/${id}`, undefined, p.tokens.admin);
  assert.equal(revoked.status, 200);
  for (const base of [p.provider.url, second.url]) {
    const r = await call(base, 'GET', '/api/v1/services', undefined, secret);
    assert.equal(r.status, 401, base);
    assert.match(r.body.error.message, /revoked/);
  }
  assert.equal((await call(p.provider.url, 'DELETE', `/api/v1/tokens/${id}`, undefined, p.tokens.admin)).status, 404, 'revoked once');
  assert.equal((await call(p.provider.url, 'POST', '/api/v1/tokens', { role: 'read', services: ['echo'] }, p.tokens.admin)).status, 400, 'scopes are for invoke tokens');

  // An expired token is refused.
  const expired = await createApiToken(p.provider.registry, { role: 'admin', ttlSeconds: 1 }, Date.now() - 5000);
  assert.match((await call(p.provider.url, 'GET', '/api/v1/hosts', undefined, expired.secret)).body.error.message, /expired/);
});

test('audit: refused and accepted mutating calls are recorded with token, role, route, service, address and status', async (t) => {
  const p = await startPlatform(t);
  const base = p.provider.url;
  const since = Date.now();
  await call(base, 'DELETE', '/api/v1/services/echo'); // no token
  await call(base, 'DELETE', '/api/v1/services/echo', undefined, p.tokens.read); // wrong role
  await call(base, 'POST', '/api/v1/services', { ...ECHO_TEST_SERVICE, version: '3', access: 'public' }, p.tokens.deploy);
  await call(base, 'GET', '/api/v1/services', undefined, p.tokens.read); // reads are not audited
  const deployId = p.tokens.deploy.split('_')[1];
  const readId = p.tokens.read.split('_')[1];

  const admin = (path: string) => call(base, 'GET', path, undefined, p.tokens.admin);
  await until('three audit rows', async () => (await admin(`/api/v1/audit?service=echo&since=${since}`)).body.entries.length === 3);
  const rows = (await admin(`/api/v1/audit?service=echo&since=${since}`)).body.entries as any[];
  assert.deepEqual(
    rows.map((r) => [r.method, r.route, r.service, r.status, r.tokenId, r.role]),
    [
      ['DELETE', '/api/v1/services/:name', 'echo', 401, undefined, undefined],
      ['DELETE', '/api/v1/services/:name', 'echo', 403, readId, 'read'],
      ['POST', '/api/v1/services', 'echo', 201, deployId, 'deploy'],
    ],
  );
  for (const r of rows) {
    assert.match(r.address, /127\.0\.0\.1/);
    assert.ok(r.at >= since && r.at <= Date.now());
    assert.equal(JSON.stringify(r).includes(p.tokens.deploy), false, 'never the secret');
  }
  assert.equal((await admin(`/api/v1/audit?service=other`)).body.entries.length, 0, 'filtered by service');
  assert.equal((await admin(`/api/v1/audit?service=echo&until=${since}`)).body.entries.length, 0, 'filtered by time');
  assert.equal((await admin('/api/v1/audit?since=yesterday')).status, 400);
  // The store's pushes are audited too (the fixture's own push, with the deploy token).
  const pushes = (await p.provider.registry.listAudit({ tokenId: deployId, limit: 1000 })).filter((e) => e.route.startsWith('/v2/'));
  assert.ok(pushes.some((e) => e.method === 'PUT' && e.route === '/v2/<name>/manifests' && e.status === 201), JSON.stringify(pushes));
});

test('consumer access: a token service refuses messages without an invoke, deploy or admin token; scopes hold; revocation is immediate', async (t) => {
  const p = await startPlatform(t);
  const base = p.provider.url;
  await p.provider.registerService({ ...ECHO_TEST_SERVICE, name: 'private' }); // access defaults to token
  assert.equal((await p.provider.registry.getService('private'))?.description.access, 'token', 'the default is stored explicitly');
  const msg = { message: 'hi' };
  assert.equal((await call(base, 'POST', '/s/echo/Echo', msg)).status, 200, 'echo is public');
  const anon = await call(base, 'POST', '/s/private/Echo', msg);
  assert.equal(anon.status, 401);
  assert.equal(anon.body.error.code, 'unauthorized');
  assert.equal((await call(base, 'POST', '/s/private/Echo', msg, p.tokens.read)).status, 403, 'read tokens do not invoke');
  const other = await createApiToken(p.provider.registry, { role: 'invoke', services: ['echo'] });
  assert.equal((await call(base, 'POST', '/s/private/Echo', msg, other.secret)).status, 403, 'scoped to another service');
  const scoped = await call(base, 'POST', '/api/v1/tokens', { role: 'invoke', services: ['private'] }, p.tokens.admin);
  const ok = await call(base, 'POST', '/s/private/Echo', msg, scoped.body.secret);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal((await call(base, 'POST', '/s/private/Echo', msg, p.tokens.invoke)).status, 200, 'unscoped invoke');
  assert.equal((await call(base, 'DELETE', `/api/v1/tokens/${scoped.body.token.id}`, undefined, p.tokens.admin)).status, 200);
  assert.equal((await call(base, 'POST', '/s/private/Echo', msg, scoped.body.secret)).status, 401, 'revoked here: refused at once');
  // A service registered on another provider a moment ago is checked from the registry.
  const second = await p.start();
  await second.registerService({ ...ECHO_TEST_SERVICE, name: 'fresh' });
  assert.equal((await call(base, 'POST', '/s/fresh/Echo', msg)).status, 401);
});
