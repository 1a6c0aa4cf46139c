// Copying an image from another registry into a real Shoal store. The other registry
// here is a small HTTP server of the test's own (a test double: real registries cannot
// be made to misbehave on demand): it speaks distribution's Bearer token flow, and can
// send an oversized manifest, an index without this platform, or a blob larger than its
// manifest declares. (The end-to-end path against Debian's docker-registry with basic
// auth is test/integration/foreign-image.test.ts.)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { createRegistryClient, mirrorForeignImage, resolveRemoteImage, startStore, type RunningStore } from '../../src/image/index.ts';
import { authorizeRegistry, credentialsFor, listLogins, removeLogin, saveLogin } from '../../src/image/registry-auth.ts';
import { parseImageRef, type ShoalError } from '../../src/protocol/index.ts';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const TOKEN = 'a-token-for-pulls';

interface Blob {
  bytes: Buffer;
  /** Sent instead of `bytes` (a registry lying about the content). */
  send?: Buffer;
  /** Send the first bytes, then nothing more, never ending (a stalling registry). */
  stall?: boolean;
}

function image(extra: { layerSend?: Buffer; salt?: string; stall?: boolean } = {}) {
  const layer = Buffer.from(`not really a tar, never unpacked here${extra.salt ?? ''}`);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/app'] }, rootfs: { type: 'layers', diff_ids: [sha('x')] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }],
    }),
  );
  const blobs = new Map<string, Blob>([
    [sha(config), { bytes: config }],
    [sha(layer), { bytes: layer, ...(extra.layerSend ? { send: extra.layerSend } : {}), ...(extra.stall ? { stall: true } : {}) }],
  ]);
  return { manifest, blobs };
}

/** A registry of its own: Bearer tokens from /token for alice:secret, one repository `app`. */
function startFakeRegistry(manifests: Map<string, { bytes: Buffer; mediaType: string }>, blobs: Map<string, Blob>): Promise<{ server: Server; host: string; tokenRequests: string[] }> {
  const tokenRequests: string[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/token') {
      tokenRequests.push(url.search);
      const ok = req.headers.authorization === `Basic ${Buffer.from('alice:secret').toString('base64')}`;
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      return res.end(ok ? JSON.stringify({ token: TOKEN }) : '{}');
    }
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      const { port } = server.address() as AddressInfo;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${port}/token",service="fake"` });
      return res.end();
    }
    if (url.pathname === '/v2/') return res.end('{}');
    const m = /^\/v2\/app\/(manifests|blobs)\/(.+)$/.exec(url.pathname);
    if (m?.[1] === 'manifests') {
      const doc = manifests.get(m[2]!);
      if (!doc) {
        res.writeHead(404, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
      }
      res.writeHead(200, { 'content-type': doc.mediaType });
      return res.end(doc.bytes);
    }
    if (m?.[1] === 'blobs') {
      const blob = blobs.get(m[2]!);
      if (!blob) {
        res.writeHead(404);
        return res.end();
      }
      // A lying or stalling registry sends no length up front (chunked), as an endless one would.
      res.writeHead(200, { 'content-type': 'application/octet-stream', ...(blob.send || blob.stall ? {} : { 'content-length': String(blob.bytes.length) }) });
      if (blob.stall) return void res.write(blob.bytes.subarray(0, 4));
      return res.end(blob.send ?? blob.bytes);
    }
    res.writeHead(404);
    res.end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, host: `127.0.0.1:${(server.address() as AddressInfo).port}`, tokenRequests })));
}

describe('images from another registry', () => {
  let dir: string;
  let store: RunningStore;
  const servers: Server[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-foreign-'));
    store = await startStore({ dataDir: join(dir, 'store') });
  });
  after(async () => {
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function registry(manifests: Map<string, { bytes: Buffer; mediaType: string }>, blobs: Map<string, Blob>) {
    const r = await startFakeRegistry(manifests, blobs);
    servers.push(r.server);
    return r;
  }
  const client = () => createRegistryClient({ baseUrl: store.url });
  const alice = { username: 'alice', password: 'secret' };

  it('copies an image through the Bearer token flow, pinned by digest, into mirror/<host>/<name>', async () => {
    const { manifest, blobs } = image();
    const reg = await registry(new Map([['1', { bytes: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json' }]]), blobs);
    const ref = parseImageRef(`${reg.host}/app:1`, 'image', { foreign: true });
    const m = await mirrorForeignImage({ store: client(), ref, credentials: alice });
    assert.equal(m.digest, sha(manifest));
    assert.equal(m.storeRef, `mirror/${reg.host.replace(':', '-')}/app@${sha(manifest)}`);
    assert.ok(m.bytes > 0);
    assert.match(reg.tokenRequests[0] ?? '', /scope=repository%3Aapp%3Apull/);
    const resolved = await resolveRemoteImage(client(), m.storeRef);
    assert.deepEqual(resolved.process.args, ['/bin/app']);
    // A second copy moves nothing.
    assert.equal((await mirrorForeignImage({ store: client(), ref, credentials: alice })).bytes, 0);
  });

  it('takes a pinned digest, and picks linux/amd64 from an index (pinning the platform manifest)', async () => {
    const { manifest, blobs } = image({ salt: 'multi' });
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha('other'), size: 5, platform: { os: 'linux', architecture: 'arm64' } },
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length, platform: { os: 'linux', architecture: 'amd64' } },
        ],
      }),
    );
    const oci = 'application/vnd.oci.image.manifest.v1+json';
    const reg = await registry(
      new Map([
        ['multi', { bytes: index, mediaType: 'application/vnd.oci.image.index.v1+json' }],
        [sha(manifest), { bytes: manifest, mediaType: oci }],
      ]),
      blobs,
    );
    const viaIndex = await mirrorForeignImage({ store: client(), ref: parseImageRef(`${reg.host}/app:multi`, 'image', { foreign: true }), credentials: alice });
    assert.equal(viaIndex.digest, sha(manifest));
    const pinned = await mirrorForeignImage({ store: client(), ref: parseImageRef(`${reg.host}/app@${sha(manifest)}`, 'image', { foreign: true }), credentials: alice });
    assert.equal(pinned.digest, sha(manifest));
    assert.equal(pinned.bytes, 0, 'already copied');
  });

  it('refuses wrong credentials, a missing tag and a closed port, each a 400 naming the field', async () => {
    const { manifest, blobs } = image();
    const reg = await registry(new Map([['1', { bytes: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json' }]]), blobs);
    const fail = (ref: string, credentials = alice) => mirrorForeignImage({ store: client(), ref: parseImageRef(ref, 'image', { foreign: true }), credentials, field: '/image' });
    await assert.rejects(fail(`${reg.host}/app:1`, { username: 'alice', password: 'nope' }), (e: ShoalError) => {
      assert.equal(e.code, 'invalid');
      assert.equal(e.field, '/image');
      assert.match(e.message, /refused the credentials of "alice" \(HTTP 401\)/);
      assert.ok(!e.message.includes('nope'));
      return true;
    });
    await assert.rejects(fail(`${reg.host}/app:2`), (e: ShoalError) => e.field === '/image' && /has no tag "2"/.test(e.message));
    const closed = await new Promise<number>((r) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as AddressInfo;
        s.close(() => r(port));
      });
    });
    await assert.rejects(fail(`127.0.0.1:${closed}/app:1`), (e: ShoalError) => e.field === '/image' && /cannot reach the registry.*ECONNREFUSED/.test(e.message));
  });

  it('bounds what a hostile registry sends: a huge manifest, an index without this platform, a blob longer than declared', async () => {
    // Its own layer: the store has the other tests' layer already, and would not fetch it.
    const { manifest, blobs } = image({ layerSend: Buffer.alloc(4096, 1), salt: 'lying' });
    const huge = Buffer.alloc(5 * 1024 * 1024, 0x20);
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length, platform: { os: 'linux', architecture: 's390x' } }],
      }),
    );
    const reg = await registry(
      new Map([
        ['huge', { bytes: huge, mediaType: 'application/vnd.oci.image.manifest.v1+json' }],
        ['multi', { bytes: index, mediaType: 'application/vnd.oci.image.index.v1+json' }],
        ['lying', { bytes: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json' }],
      ]),
      blobs,
    );
    const fail = (tag: string) => mirrorForeignImage({ store: client(), ref: parseImageRef(`${reg.host}/app:${tag}`, 'image', { foreign: true }), credentials: alice });
    await assert.rejects(fail('huge'), (e: ShoalError) => e.code === 'invalid' && e.field === 'image' && /more than the 4194304 bytes allowed/.test(e.message));
    await assert.rejects(fail('multi'), (e: ShoalError) => e.field === 'image' && /no linux\/amd64 image in the index/.test(e.message));
    await assert.rejects(fail('lying'), (e: ShoalError) => e.field === 'image' && /more than the \d+ bytes declared/.test(e.message));
    // Nothing of the lying image reached the store.
    assert.equal(await client().getManifest(`mirror/${reg.host.replace(':', '-')}/app`, sha(manifest)), undefined);
  });

  it('cuts off a registry that stalls in the middle of a layer', async () => {
    const { manifest, blobs } = image({ salt: 'stall', stall: true });
    const reg = await registry(new Map([['1', { bytes: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json' }]]), blobs);
    await assert.rejects(
      mirrorForeignImage({ store: client(), ref: parseImageRef(`${reg.host}/app:1`, 'image', { foreign: true }), credentials: alice, blobTimeoutMs: 300 }),
      (e: ShoalError) => e.code === 'invalid' && e.field === 'image',
    );
  });

  it('is refused anywhere but in a service description', () => {
    assert.throws(() => parseImageRef('127.0.0.1:5000/app:1'), /names another registry \(127\.0\.0\.1:5000\)/);
    const ref = parseImageRef('Registry.Example.com/team/app:2', 'image', { foreign: true });
    assert.deepEqual(ref, { registry: 'registry.example.com', repository: 'team/app', tag: '2', digest: undefined });
    assert.equal(parseImageRef('localhost/app', 'image', { foreign: true }).registry, 'localhost');
    assert.equal(parseImageRef('team/app:1').registry, undefined, 'a first component without . or : is a repository');
  });

  it('keeps credentials in a 0600 containers-auth.json, other entries untouched', async () => {
    const file = join(dir, 'auth', 'registry-auth.json');
    await saveLogin(file, 'a.example:5000', alice);
    await saveLogin(file, 'b.example', { username: 'bob', password: 'pw:with:colons' });
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.deepEqual(await credentialsFor(file, 'b.example'), { username: 'bob', password: 'pw:with:colons' });
    assert.deepEqual(await listLogins(file), [
      { host: 'a.example:5000', username: 'alice' },
      { host: 'b.example', username: 'bob' },
    ]);
    const raw = JSON.parse(await readFile(file, 'utf8'));
    assert.equal(raw.auths['a.example:5000'].auth, Buffer.from('alice:secret').toString('base64'), 'the format skopeo and podman read');
    assert.equal(await removeLogin(file, 'a.example:5000'), true);
    assert.equal(await removeLogin(file, 'a.example:5000'), false);
    assert.equal(await credentialsFor(file, 'a.example:5000'), undefined);
  });

  it('a login scoped to a namespace lends its credentials only to repositories under it; the most specific wins', async () => {
    const file = join(dir, 'auth-scoped', 'registry-auth.json');
    await saveLogin(file, 'c.example/team', alice);
    await saveLogin(file, 'c.example/team/special', { username: 'carol', password: 'x' });
    assert.equal((await credentialsFor(file, 'c.example', 'team/app'))?.username, 'alice');
    assert.equal((await credentialsFor(file, 'c.example', 'team/special/app'))?.username, 'carol');
    assert.equal(await credentialsFor(file, 'c.example', 'other/app'), undefined, "another namespace does not get the team's login");
    assert.equal(await credentialsFor(file, 'c.example', 'teammate/app'), undefined, 'a prefix match is on whole path components');
    assert.equal(await credentialsFor(file, 'c.example'), undefined);
    await saveLogin(file, 'c.example', { username: 'everyone', password: 'y' });
    assert.equal((await credentialsFor(file, 'c.example', 'other/app'))?.username, 'everyone', 'a whole-host login covers the rest');
    assert.equal((await credentialsFor(file, 'c.example', 'team/app'))?.username, 'alice');
  });

  it('needs no header for a registry that asks for none', async () => {
    const open = createServer((_req, res) => res.end('{}'));
    servers.push(open);
    await new Promise<void>((r) => open.listen(0, '127.0.0.1', r));
    assert.equal(await authorizeRegistry({ host: `127.0.0.1:${(open.address() as AddressInfo).port}`, repository: 'x', credentials: undefined }), undefined);
  });
});
