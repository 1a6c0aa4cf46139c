// Bring your own image: a container that knows nothing about Shoal (plain Node, listening
// on TCP $PORT) is pushed with skopeo to Debian's docker-registry, started here on
// loopback with htpasswd basic auth; `shoal registry login` gives the provider the
// credentials; the service is registered with that registry's reference and answers
// through the provider, from runc with no network but its own loopback. The refusals
// (no login, wrong password, unreachable registry, missing tag) are clear 400s naming
// the field, and the password shows up in no reply, audit entry or log.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startHost, type Host } from '../../src/host/index.ts';
import { buildImage, createBlobStore, createImageStore, createRegistryClient, createStoreApp, layerVetter, startStore, type RunningStore } from '../../src/image/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { parseImageRef } from '../../src/protocol/index.ts';
import { missing } from '../host/fixtures/requirements.ts';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';
import { freePort } from '../fixtures/free-port.ts';

const run = promisify(execFile);
const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));
const USER = 'alice';
const PASSWORD = 'pw-' + Math.random().toString(36).slice(2) + '-secret';

const onPath = (binary: string): boolean => spawnSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' }).status === 0;

const skip = ((): string | false => {
  const reasons = [missing(['root', 'runc', 'cc'])].filter((r): r is string => r !== undefined);
  for (const b of ['docker-registry', 'skopeo', 'htpasswd']) if (!onPath(b)) reasons.push(`needs ${b} on PATH (scripts/setup-system.sh)`);
  if (reasons.length === 0) return false;
  if (process.env.CI === 'true') throw new Error(`CI=true but this machine cannot run these tests: ${reasons.join(', ')}`);
  console.log(`# skipped: ${reasons.join(', ')}`);
  return reasons.join(', ');
})();

// The program: nothing of Shoal, only $PORT. /Reach tries to connect out of the instance.
const SERVER = `
const http = require('node:http');
const net = require('node:net');
const port = Number(process.env.PORT);
http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const reply = (status, obj) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(obj)); };
    if (req.method === 'GET' && req.url === '/ready') return reply(200, { ok: true });
    if (req.url === '/Echo') return reply(200, { echoed: JSON.parse(body || '{}'), port: process.env.PORT, listenFds: process.env.LISTEN_FDS ?? null });
    if (req.url === '/Reach') {
      const { host, port: p } = JSON.parse(body);
      const s = net.connect({ host, port: p, timeout: 2000 });
      s.on('connect', () => { s.destroy(); reply(200, { reached: true }); });
      s.on('timeout', () => { s.destroy(); reply(200, { reached: false, error: 'timeout' }); });
      s.on('error', (e) => reply(200, { reached: false, error: e.code || e.message }));
      return;
    }
    reply(404, { error: 'no such path ' + req.url });
  });
}).listen(port, '127.0.0.1');
`;

interface Registry {
  host: string;
  child: ChildProcess;
  logs: () => string;
}

async function startRegistry(dir: string): Promise<Registry> {
  const port = await freePort();
  await mkdir(join(dir, 'storage'), { recursive: true });
  const htpasswd = join(dir, 'htpasswd');
  await run('htpasswd', ['-Bbc', htpasswd, USER, PASSWORD]);
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'storage')}`,
      'auth:',
      '  htpasswd:',
      '    realm: byo-test',
      `    path: ${htpasswd}`,
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const deadline = Date.now() + 15_000;
  for (;;) {
    const up = await fetch(`http://127.0.0.1:${port}/v2/`).then(
      (r) => r.status === 401,
      () => false,
    );
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`docker-registry did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { host: `127.0.0.1:${port}`, child, logs: () => stderr };
}

describe('bring your own image: another registry, the $PORT contract, runc', { skip, timeout: 600_000 }, () => {
  let dir: string;
  let registry: Registry;
  let scratch: RunningStore | undefined;
  let template: RunningStore | undefined;
  let provider: Provider;
  let host: Host;
  let admin: string;
  let closedPort: number;
  const logLines: string[] = [];

  const shoal = (args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const env = { ...process.env, SHOAL_URL: provider.url, SHOAL_TOKEN: admin };
      const child = execFile(process.execPath, [SHOAL, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
      );
      child.stdin!.end(stdin ?? '');
    });
  const api = (method: string, path: string, body?: unknown) =>
    fetch(`${provider.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    }).then(async (r) => ({ status: r.status, text: await r.text() }));
  const service = (image: string) => ({
    name: 'web',
    version: '1',
    image,
    listen: { port: 8080 },
    readiness: { path: '/ready' },
    operations: {
      Echo: { input: { type: 'object' }, output: { type: 'object' } },
      Reach: { input: { type: 'object', properties: { host: { type: 'string' }, port: { type: 'integer' } }, required: ['host', 'port'] }, output: { type: 'object' } },
    },
    resources: { memoryMb: 128, cpuMillis: 500, pids: 64 },
    driver: 'runc',
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-byo-'));
    registry = await startRegistry(join(dir, 'registry'));
    // The image: Node on the node template, built in a scratch store and copied out by
    // skopeo, so the registry holds an ordinary OCI image.
    template = await startStore({ dataDir: await echoStoreDir() });
    scratch = await startStore({ dataDir: join(dir, 'scratch') });
    const major = process.versions.node.split('.')[0];
    const hostOf = (u: string) => new URL(u).host;
    await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${hostOf(template.url)}/templates/node:${major}`, `docker://${hostOf(scratch.url)}/templates/node:${major}`]);
    const app = join(dir, 'app');
    await mkdir(join(app, 'srv'), { recursive: true });
    await writeFile(join(app, 'srv/server.js'), SERVER);
    await buildImage({
      client: createRegistryClient({ baseUrl: scratch.url }),
      source: app,
      template: parseImageRef(`template://node/${major}`),
      ref: parseImageRef('web:1'),
      owner: { uid: 0, gid: 0 },
      process: { cmd: ['/usr/local/bin/node', '/srv/server.js'], workdir: '/srv' },
    });
    await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', `${USER}:${PASSWORD}`, `docker://${hostOf(scratch.url)}/web:1`, `docker://${registry.host}/ext/web:1`]);
    await scratch.close();
    scratch = undefined;
    await template.close();
    template = undefined;

    // The provider serves its own store (as `shoal up` does); one runc host.
    const storeDir = join(dir, 'store');
    const blobs = createBlobStore({ dir: storeDir });
    const imageStore = createImageStore({ dir: storeDir, blobs, vetLayer: layerVetter(blobs) });
    const logger = {
      info: (o: object, m?: string) => void logLines.push(JSON.stringify(o) + (m ?? '')),
      warn: (o: object, m?: string) => void logLines.push(JSON.stringify(o) + (m ?? '')),
      error: (o: object, m?: string) => void logLines.push(JSON.stringify(o) + (m ?? '')),
    };
    provider = await startProvider({
      listen: { host: '127.0.0.1', port: 0 },
      database: join(dir, 'provider.db'),
      store: createStoreApp({ store: imageStore, blobs }),
      registryAuthFile: join(dir, 'provider', 'registry-auth.json'),
      // The test's registry, and a closed port to show an unreachable one; every other private address stays refused.
      registryAllowPrivate: [registry.host, `127.0.0.1:${(closedPort = await freePort())}`],
      joinToken: 'join-token-for-tests',
      logger,
    });
    admin = (await createApiToken(provider.registry, { role: 'admin' })).secret;
    host = await startHost({
      dataDir: join(dir, 'host'),
      listen: { host: '127.0.0.1', port: 0 },
      token: 'host-token-for-tests',
      capacity: { memoryMb: 2048, cpuMillis: 4000, instances: 8 },
      driver: 'runc',
    });
    await provider.registerHost({ controlUrl: host.controlUrl, token: 'host-token-for-tests' });
  });

  after(async () => {
    await provider?.close();
    await host?.close({ stopInstances: true });
    await scratch?.close();
    await template?.close();
    if (registry) {
      registry.child.kill('SIGTERM');
      if (registry.child.exitCode === null) await new Promise((r) => registry.child.once('exit', r));
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses the image before a login: 400 naming /image', async () => {
    const r = await api('POST', '/api/v1/services', service(`${registry.host}/ext/web:1`));
    assert.equal(r.status, 400, r.text);
    const e = JSON.parse(r.text).error;
    assert.equal(e.field, '/image');
    assert.match(e.message, /needs credentials.*shoal registry login/);
  });

  it('refuses a wrong password at login, keeping nothing', async () => {
    const r = await shoal(['registry', 'login', registry.host, '--username', USER, '--password-stdin'], 'not-the-password\n');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /refused the credentials of "alice" \(HTTP 401\)/);
    await assert.rejects(stat(join(dir, 'provider', 'registry-auth.json')), { code: 'ENOENT' });
  });

  it('a login scoped to another namespace lends its credentials to nothing else on the registry', async () => {
    const r = await shoal(['registry', 'login', `${registry.host}/other`, '--username', USER, '--password-stdin'], `${PASSWORD}\n`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /logged in to 127\.0\.0\.1:\d+\/other as alice/);
    const reg = await api('POST', '/api/v1/services', service(`${registry.host}/ext/web:1`));
    assert.equal(reg.status, 400, reg.text);
    assert.match(JSON.parse(reg.text).error.message, /needs credentials/);
    const bad = await shoal(['registry', 'login', `${registry.host}/../etc`, '--username', USER, '--password-stdin'], `${PASSWORD}\n`);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /not a registry login scope/);
    const out = await shoal(['registry', 'logout', `${registry.host}/other`]);
    assert.equal(out.code, 0, out.stderr);
  });

  it('logs in with shoal registry login; the file is 0600 and the password is never shown', async () => {
    const r = await shoal(['registry', 'login', registry.host, '--username', USER, '--password-stdin'], `${PASSWORD}\n`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`logged in to ${registry.host.replace(/\./g, '\\.')} as alice`));
    const file = join(dir, 'provider', 'registry-auth.json');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const list = await shoal(['registry', 'list', '--json']);
    assert.deepEqual(JSON.parse(list.stdout).logins, [{ host: registry.host, username: USER }]);
    assert.ok(!list.stdout.includes(PASSWORD) && !r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD));
  });

  it('refuses an unreachable registry and a missing tag with 400s naming /image', async () => {
    const a = await api('POST', '/api/v1/services', service(`127.0.0.1:${closedPort}/ext/web:1`));
    assert.equal(a.status, 400, a.text);
    assert.equal(JSON.parse(a.text).error.field, '/image');
    assert.match(JSON.parse(a.text).error.message, /cannot reach the registry 127\.0\.0\.1:\d+.*ECONNREFUSED/);
    const b = await api('POST', '/api/v1/services', service(`${registry.host}/ext/web:nope`));
    assert.equal(b.status, 400, b.text);
    assert.equal(JSON.parse(b.text).error.field, '/image');
    assert.match(JSON.parse(b.text).error.message, /has no tag "nope" in ext\/web/);
  });

  it('refuses a private address the operator did not allow, before a byte reaches it (request forgery)', async (t) => {
    // A service on the provider's loopback that a deploy token must not be able to poke.
    let connections = 0;
    const target = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    t.after(() => new Promise<void>((r) => target.close(() => r())));
    const port = (target.address() as AddressInfo).port;
    for (const image of [`127.0.0.1:${port}/ext/web:1`, `localhost:${port}/ext/web:1`]) {
      const r = await api('POST', '/api/v1/services', service(image));
      assert.equal(r.status, 400, r.text);
      const e = JSON.parse(r.text).error;
      assert.equal(e.field, '/image');
      assert.match(e.message, /not a public address.*SHOAL_REGISTRY_ALLOW_PRIVATE/);
    }
    const login = await shoal(['registry', 'login', `127.0.0.1:${port}`, '--username', USER, '--password-stdin'], `${PASSWORD}\n`);
    assert.notEqual(login.code, 0);
    assert.match(login.stderr, /not a public address/);
    assert.equal(connections, 0, 'the private service never saw a connection');
  });

  it('registers the image (copied into the store, pinned by digest) and answers through the provider from $PORT', async (t) => {
    const t0 = performance.now();
    const reg = await api('POST', '/api/v1/services', service(`${registry.host}/ext/web:1`));
    const t1 = performance.now();
    assert.equal(reg.status, 201, reg.text);
    const image: string = JSON.parse(reg.text).service.description.image;
    assert.match(image, new RegExp(`^${registry.host.replace(/\./g, '\\.')}/ext/web:1@sha256:[0-9a-f]{64}$`));

    const call = await fetch(`${provider.url}/s/web/Echo`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ message: 'hello' }) });
    const body = (await call.json()) as { echoed: unknown; port: string; listenFds: unknown };
    assert.equal(call.status, 200, JSON.stringify(body));
    assert.deepEqual(body, { echoed: { message: 'hello' }, port: '8080', listenFds: null });
    // Figures for the reader, never asserted.
    t.diagnostic(`registration with the copy: ${Math.round(t1 - t0)} ms; first call (cold start on runc): ${Math.round(performance.now() - t1)} ms`);

    // The CLI path too.
    const viaCli = await shoal(['call', 'web', 'Echo', '{"message":"cli"}']);
    assert.equal(viaCli.code, 0, viaCli.stderr);
    assert.match(viaCli.stdout, /"cli"/);
  });

  it('the instance reaches nothing beyond its own loopback', async () => {
    const reach = async (hostName: string, port: number) => {
      const r = await fetch(`${provider.url}/s/web/Reach`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ host: hostName, port }) });
      assert.equal(r.status, 200);
      return (await r.json()) as { reached: boolean; error?: string };
    };
    // The registry listens on the host's 127.0.0.1: the instance's 127.0.0.1 is its own.
    const registryPort = Number(registry.host.split(':')[1]);
    assert.deepEqual(await reach('127.0.0.1', registryPort), { reached: false, error: 'ECONNREFUSED' });
    // Its own port answers (the loopback it has).
    assert.equal((await reach('127.0.0.1', 8080)).reached, true);
    // Any address of the host's other interfaces is unreachable.
    const external = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal);
    if (external) {
      const r = await reach(external.address, registryPort);
      assert.equal(r.reached, false);
      assert.match(r.error ?? '', /ENETUNREACH|EHOSTUNREACH|timeout/);
    }
  });

  it('keeps the password out of the audit trail and the logs', async () => {
    const audit = await api('GET', '/api/v1/audit');
    assert.equal(audit.status, 200);
    assert.match(audit.text, /registry-logins/);
    assert.ok(!audit.text.includes(PASSWORD));
    assert.ok(!logLines.join('\n').includes(PASSWORD));
    assert.ok(!(await readFile(join(dir, 'provider', 'registry-auth.json'), 'utf8')).includes(PASSWORD)); // base64, as the format has it
  });
});
