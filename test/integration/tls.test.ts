// Issue 9, item 3: beyond one machine, over TLS. A CA made here (openssl) signs one
// certificate for 127.0.0.1 and 127.0.0.2; the store and the provider serve HTTPS on
// 127.0.0.1, a host serves its control API and data plane over HTTPS on 127.0.0.2 (a
// second loopback address: another machine as far as the URLs go). The host joins over
// TLS, pulls its image from the store over TLS, and a message goes consumer → provider →
// host → instance over TLS. A client without the CA is refused by every listener; a
// non-loopback address without TLS is refused (library and CLI), with the flag named.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Agent, fetch } from 'undici';
import { readTlsIdentity, trustCaFile, type TlsIdentity } from '../../src/http/index.ts';
import { startHost, type Host } from '../../src/host/index.ts';
import { startStore, type RunningStore } from '../../src/image/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';
import { ECHO_TEST_SERVICE } from '../provider/fixtures/fake-host.ts';
import { FAST } from '../provider/fixtures/provider.ts';

const run = promisify(execFile);
const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));
const JOIN = 'join-token-for-tls-tests';
const HOST_TOKEN = 'host-token-for-tls-tests';

function opensslMissing(): string | false {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return false;
  } catch {
    if (process.env.CI === 'true') throw new Error('CI=true but openssl is not installed: the TLS tests make their CA with it');
    return 'needs openssl on PATH (the test makes its CA with it)';
  }
}

/** A CA and a certificate it signs for 127.0.0.1 and 127.0.0.2; the paths of the PEM files. */
async function makeCa(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const p = (name: string) => join(dir, name);
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=shoal test CA', '-keyout', p('ca.key'), '-out', p('ca.pem')]);
  await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=shoal test', '-keyout', p('tls.key'), '-out', p('tls.csr')]);
  await writeFile(p('ext.cnf'), 'subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await run('openssl', ['x509', '-req', '-in', p('tls.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', p('ext.cnf'), '-out', p('tls.pem')]);
  return { ca: p('ca.pem'), cert: p('tls.pem'), key: p('tls.key') };
}

describe('provider, store and a host on another address, over TLS', { skip: opensslMissing() }, () => {
  let dir: string;
  let files: { ca: string; cert: string; key: string };
  let tls: TlsIdentity;
  let store: RunningStore;
  let provider: Provider;
  let host: Host;
  let admin: string;
  let hostDir: string | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-tls-'));
    files = await makeCa(dir);
    tls = readTlsIdentity({ certFile: files.cert, keyFile: files.key })!;
    // This process's clients (the provider's links, the host's pulls, the test's fetch) trust the CA.
    trustCaFile(files.ca);
    store = await startStore({ dataDir: await echoStoreDir(), host: '127.0.0.1', port: 0, tls });
    provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, tls, database: join(dir, 'shoal.db'), storeUrl: store.url, joinToken: JOIN, tuning: FAST });
    admin = (await createApiToken(provider.registry, { role: 'admin' })).secret;
    // Its own temp dir: the host opens it to traversal (0711) for process-driver instances running as nobody.
    hostDir = await mkdtemp(join(tmpdir(), 'shoal-tls-h-'));
    host = await startHost({
      dataDir: hostDir,
      listen: { host: '127.0.0.2', port: 0 },
      tls,
      token: HOST_TOKEN,
      capacity: { memoryMb: 2048, cpuMillis: 4000, instances: 4 },
      driver: 'process',
    });
  });

  after(async () => {
    await provider?.close();
    await host?.close({ stopInstances: true });
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
    if (hostDir) await rm(hostDir, { recursive: true, force: true });
  });

  it('every listener advertises https; the host registers over TLS and a message reaches its instance over TLS', async () => {
    assert.match(store.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.match(provider.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.match(host.controlUrl, /^https:\/\/127\.0\.0\.2:\d+$/);
    assert.match(host.dataUrl, /^https:\/\/127\.0\.0\.2:\d+$/);

    const joined = await fetch(`${provider.url}/api/v1/hosts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${JOIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ controlUrl: host.controlUrl, token: HOST_TOKEN }),
    });
    assert.equal(joined.status, 201, await joined.clone().text());
    const registered = await fetch(`${provider.url}/api/v1/services`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...ECHO_TEST_SERVICE, access: 'public' }),
    });
    assert.ok(registered.ok, await registered.clone().text());

    const reply = await fetch(`${provider.url}/s/echo/Echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ message: 'over tls' }) });
    const text = await reply.text();
    assert.equal(reply.status, 200, text);
    assert.deepEqual(JSON.parse(text), { message: 'over tls' });
    const [ep] = provider.table.endpoints('echo');
    assert.ok(ep);
    assert.equal(ep.hostname, '127.0.0.2');
    assert.match(ep.token, /^v1\./);
  });

  it('a client without the CA is refused by the provider, the store and both planes of the host', async () => {
    const untrusting = new Agent(); // the system roots only
    t: for (const url of [`${provider.url}/healthz`, `${store.url}/v2/`, `${host.controlUrl}/healthz`, `${host.dataUrl}/i/Echo`]) {
      try {
        await fetch(url, { dispatcher: untrusting });
      } catch (e) {
        const code = String((e as { cause?: { code?: string } }).cause?.code);
        assert.match(code, /CERT|SIGNATURE|ISSUER/, `${url}: ${code}`);
        continue t;
      }
      assert.fail(`${url} answered a client that does not trust its CA`);
    }
    await untrusting.close();
    // Plain HTTP to a TLS port gets no HTTP reply.
    await assert.rejects(fetch(provider.url.replace('https:', 'http:') + '/healthz'));
  });
});

describe('a non-loopback address without TLS is refused', () => {
  it('by each role, naming the flags to give', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-tls-refuse-'));
    try {
      const refused = (e: unknown) => (e as { code?: string; field?: string }).code === 'invalid' && (e as { field?: string }).field === 'listen' && /not loopback.*--tls-cert and --tls-key, or --insecure/.test((e as Error).message);
      await assert.rejects(startProvider({ listen: { host: '0.0.0.0', port: 0 }, database: join(dir, 'p.db'), storeUrl: 'http://127.0.0.1:1', joinToken: JOIN }), refused);
      await assert.rejects(startStore({ dataDir: join(dir, 's'), host: '0.0.0.0', port: 0 }), refused);
      await assert.rejects(
        startHost({ dataDir: join(dir, 'h'), listen: { host: '127.0.0.1', port: 0 }, dataListen: { host: '0.0.0.0', port: 0 }, token: HOST_TOKEN, capacity: { memoryMb: 256, cpuMillis: 1000, instances: 1 }, driver: 'process' }),
        refused,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('by the CLI, with exit code 2 and the reason on stderr, before listening', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-tls-cli-'));
    try {
      for (const args of [
        ['provider', '--listen', '0.0.0.0:0', '--store', 'http://127.0.0.1:1', '--db', join(dir, 'p.db'), '--data', dir],
        ['store', '--listen', '0.0.0.0:0', '--data', join(dir, 's')],
        ['host', '--listen', '0.0.0.0:0', '--data-listen', '127.0.0.1:0', '--token', HOST_TOKEN, '--data', join(dir, 'h'), '--driver', 'process'],
      ]) {
        const r = await run(process.execPath, [SHOAL, ...args]).then(
          () => ({ code: 0, stderr: '' }),
          (e: { code: number; stderr: string }) => e,
        );
        assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
        assert.match(r.stderr, /would listen on 0\.0\.0\.0, which is not loopback, over plain HTTP: give --tls-cert and --tls-key, or --insecure/);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
