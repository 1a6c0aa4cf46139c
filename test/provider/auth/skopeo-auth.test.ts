// skopeo against a store that checks tokens (what `shoal store` runs): pushes need the
// token, sent as basic credentials (--dest-creds, through the Bearer challenge's token
// endpoint) or as a bearer token (--dest-registry-token); anonymous pulls work until they
// are turned off; pushes land in the store's audit file.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { startStore, type RunningStore } from '../../../src/image/store-server.ts';
import { createAuthGate, createFileAuditSink, createStaticVerifier, mintToken } from '../../../src/provider/auth/index.ts';
import { digestOf } from '../../../src/protocol/digest.ts';
import { MediaType } from '../../../src/protocol/oci.ts';
import { makeConfig, makeLayer, makeManifest } from '../../image/store-fixtures.ts';

const run = promisify(execFile);
const missing = await run('skopeo', ['--version']).then(
  () => false,
  () => true,
);
if (missing && process.env.CI === 'true') test('skopeo is installed (required in CI)', () => assert.fail('skopeo is not installed (apt-get install skopeo)'));

describe('skopeo against a store that checks tokens', { skip: missing ? 'skopeo is not installed (apt-get install skopeo)' : false }, () => {
  let root: string;
  const stores: RunningStore[] = [];
  const token = mintToken().secret;
  const audit = () => join(root, 'audit.jsonl');

  async function start(anonymousPull: boolean): Promise<string> {
    const gate = createAuthGate({
      verifier: createStaticVerifier([{ secret: token, role: 'admin' }]),
      anonymousPull,
      audit: createFileAuditSink(audit()),
      log: { warn: (o, m) => assert.fail(`${m}: ${JSON.stringify(o)}`) },
    });
    const s = await startStore({ dataDir: join(root, `data-${stores.length}`), gate });
    stores.push(s);
    return new URL(s.url).host;
  }

  async function skopeo(...args: string[]): Promise<{ ok: boolean; out: string }> {
    const env = { ...process.env, HOME: join(root, 'home'), TMPDIR: join(root, 'tmp') };
    try {
      return { ok: true, out: (await run('skopeo', ['--insecure-policy', ...args], { env, timeout: 120_000 })).stdout };
    } catch (e) {
      return { ok: false, out: (e as { stderr?: string }).stderr ?? String(e) };
    }
  }

  let src: string;
  let manifest: Buffer;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'shoal-skopeo-auth-'));
    await mkdir(join(root, 'home'));
    await mkdir(join(root, 'tmp'));
    const l = await makeLayer({ 'etc/hello.txt': 'hello\n' });
    const config = makeConfig([l.diffId]);
    manifest = makeManifest(config, [l]);
    src = join(root, 'src');
    await mkdir(join(src, 'blobs', 'sha256'), { recursive: true });
    for (const b of [l.gz, config, manifest]) await writeFile(join(src, 'blobs', 'sha256', digestOf(b).slice(7)), b);
    await writeFile(join(src, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const ref = { mediaType: MediaType.ociManifest, digest: digestOf(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 't' } };
    await writeFile(join(src, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [ref] }));
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await rm(root, { recursive: true, force: true });
  });

  test('push needs the token (basic or bearer); pulls are anonymous by default; pushes are audited', async () => {
    const host = await start(true);
    const refused = await skopeo('copy', '--dest-tls-verify=false', `oci:${src}:t`, `docker://${host}/demo/app:1`);
    assert.equal(refused.ok, false, 'a push without credentials is refused');
    assert.match(refused.out, /401|unauthorized|authentication required/i);
    assert.equal(await stores[0]!.store.getManifest('demo/app', '1'), undefined);
    const wrong = await skopeo('copy', '--dest-tls-verify=false', '--dest-creds', `shoal:${mintToken().secret}`, `oci:${src}:t`, `docker://${host}/demo/app:1`);
    assert.equal(wrong.ok, false, 'a token the store does not know is refused');

    const basic = await skopeo('copy', '--dest-tls-verify=false', '--dest-creds', `shoal:${token}`, `oci:${src}:t`, `docker://${host}/demo/app:1`);
    assert.equal(basic.ok, true, basic.out);
    const bearer = await skopeo('copy', '--dest-tls-verify=false', '--dest-registry-token', token, `oci:${src}:t`, `docker://${host}/demo/app:2`);
    assert.equal(bearer.ok, true, bearer.out);
    for (const tag of ['1', '2']) assert.equal((await stores[0]!.store.getManifest('demo/app', tag))?.digest, digestOf(manifest));

    const pulled = await skopeo('copy', '--src-tls-verify=false', `docker://${host}/demo/app:1`, `oci:${join(root, 'dst')}:t`);
    assert.equal(pulled.ok, true, pulled.out);

    const lines = (await readFile(audit(), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { method: string; route: string; status: number; tokenId?: string });
    assert.ok(lines.some((e) => e.method === 'PUT' && e.route === '/v2/<name>/manifests' && e.status === 201 && e.tokenId === token.split('_')[1]));
    assert.ok(lines.some((e) => e.status === 401 && e.tokenId === undefined), 'the refused push is there too');
    assert.equal(JSON.stringify(lines).includes(token), false);
  });

  test('with anonymous pulls off, a pull needs the token too', async () => {
    const host = await start(false);
    assert.equal((await skopeo('copy', '--dest-tls-verify=false', '--dest-creds', `shoal:${token}`, `oci:${src}:t`, `docker://${host}/demo/app:1`)).ok, true);
    const anon = await skopeo('inspect', '--raw', '--tls-verify=false', `docker://${host}/demo/app:1`);
    assert.equal(anon.ok, false);
    const withCreds = await skopeo('inspect', '--raw', '--tls-verify=false', '--creds', `shoal:${token}`, `docker://${host}/demo/app:1`);
    assert.equal(withCreds.ok, true, withCreds.out);
    assert.equal(digestOf(Buffer.from(withCreds.out)), digestOf(manifest));
  });
});
