// The template pool with a real runc host (issue 12, goal 3): a service's first deployment
// takes a container pre-created for its image's template, gets its own layer added and
// its own program, environment and working dir; the container is never used for another
// service; the root holds exactly the service's layers; closing the host leaves no
// container, mount or instance dir.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, buildNodeTemplate, createRegistryClient, startStore, type RunningStore } from '../../src/image/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { until } from '../fixtures/until.ts';
import { echoPlan, leftovers, startTestHost, type HostFixture, type StoreFixture } from './host-fixture.ts';

const skip = skipUnless(['root', 'runc', 'cc']);

// Reports what the service sees of its root and its process.
const VIEW_SERVER = `
import { createServer } from 'node:http';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
const view = () => {
  let written = false;
  try { writeFileSync('/app/data/written', 'x'); written = true; } catch {}
  let etcWritten = false;
  try { writeFileSync('/tmp/shoal-test', 'x'); etcWritten = true; } catch {}
  return {
    app: [...readdirSync('/app'), ...readdirSync('/app/data').map((f) => 'data/' + f)].sort(),
    top: readdirSync('/').sort(),
    service: process.env.SHOAL_SERVICE, instance: process.env.SHOAL_INSTANCE, extra: process.env.EXTRA ?? null,
    cwd: process.cwd(), argv: process.argv.slice(1), uid: process.getuid(),
    appOwner: statSync('/app/server.mjs').uid, dataOwner: statSync('/app/data/written').uid,
    written, etcWritten,
    appMounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\\n').filter((l) => l.split(' ')[4] === '/app').length,
  };
};
const server = createServer((req, res) => {
  const body = req.url === '/healthz' ? { ok: true } : view();
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
});
server.listen({ fd: 3 });
process.on('SIGTERM', () => process.exit(0));
`;

describe('the template pool (runc)', { skip }, () => {
  let dir: string;
  let store: RunningStore;
  let fx: StoreFixture;
  let h: HostFixture;
  const images: Record<string, string> = {};

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-tp-'));
    store = await startStore({ dataDir: join(dir, 'store') });
    const client = createRegistryClient({ baseUrl: store.url });
    const template = await buildNodeTemplate({ client });
    for (const name of ['a', 'b', 'c']) {
      const src = join(dir, `src-${name}`);
      await mkdir(join(src, 'app', 'data'), { recursive: true });
      await chmod(join(src, 'app', 'data'), 0o777); // the image's user (nobody) may write there
      await writeFile(join(src, 'app', 'server.mjs'), VIEW_SERVER);
      await writeFile(join(src, 'app', `marker-${name}`), name);
      const image = await buildImage({
        client,
        source: src,
        template: parseImageRef(template.name),
        ref: parseImageRef(`view-${name}:1`),
        owner: { uid: 0, gid: 0 },
        process: { cmd: ['/usr/local/bin/node', 'server.mjs', `--from-${name}`] },
      });
      images[name] = image.reference;
    }
    fx = { store, echoRef: images.a!, echoLayerBytes: 0, close: async () => {} };
    h = await startTestHost(fx, { warmPool: { perImage: 0, perTemplate: 1 } }, join(dir, 'host'));
  });

  after(async () => {
    await h?.close({ stopInstances: true });
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const templateEntries = async () => (await h.host.report()).warm?.filter((w) => w.service.name === 'template') ?? [];
  const deploy = async (service: string, image: string, env?: Record<string, string>) => {
    const r = await h.deploy(echoPlan(fx, { service: { name: service, version: '1' }, image, ...(env ? { env } : {}) }));
    assert.equal(r.status, 201, r.text);
    return r.json as { endpoint: any; instance: { id: string } };
  };

  it("a service's first deployment takes a template container and sees exactly its own layer, program and settings", async () => {
    const first = await deploy('svc-a', images.a!);
    assert.doesNotMatch(first.instance.id, /^pool-/, 'nothing was pooled before');
    await until('a template container is ready', async () => (await templateEntries()).length === 1, 60_000, 50);
    const [pooled] = await templateEntries();

    const b = await deploy('svc-b', images.b!, { EXTRA: 'for-b' });
    assert.equal(b.instance.id, pooled!.instance, 'the first deployment of svc-b took the template container');
    const view = (await h.call(b.endpoint, 'View', {})).json;
    assert.deepEqual(view.app, ['data', 'data/written', 'marker-b', 'server.mjs'], 'its own layer only, writable');
    assert.equal(view.service, 'svc-b');
    assert.equal(view.instance, b.instance.id);
    assert.equal(view.extra, 'for-b');
    assert.equal(view.cwd, '/app', "the image's working dir");
    assert.deepEqual(view.argv, ['/app/server.mjs', '--from-b'], "the image's program and arguments");
    assert.equal(view.uid, 65534, "the image's user (none: nobody)");
    assert.equal(view.etcWritten, true);
    assert.equal(view.appMounts, 1);

    // The same layout as the ordinary path's (svc-a was deployed without the pool).
    const viewA = (await h.call(first.endpoint, 'View', {})).json;
    assert.deepEqual(viewA.top, view.top, 'the same top-level entries');
    assert.deepEqual(viewA.app, ['data', 'data/written', 'marker-a', 'server.mjs']);
    assert.equal(viewA.uid, view.uid);
    assert.equal(view.appOwner, 0, "the layer's files keep their owner (id-mapped)");
    assert.equal(viewA.appOwner, 0);
    assert.equal(view.dataOwner, 65534, 'what the service writes is its own');
    assert.equal(viewA.dataOwner, 65534);
    assert.equal(viewA.appMounts, 0);
  });

  it('a template container used by one service is never used for another: the next one gets a fresh container', async () => {
    await until('a new template container is ready', async () => (await templateEntries()).length === 1, 60_000, 50);
    const [next] = await templateEntries();
    const c = await deploy('svc-c', images.c!);
    assert.equal(c.instance.id, next!.instance);
    const view = (await h.call(c.endpoint, 'View', {})).json;
    assert.deepEqual(view.app, ['data', 'data/written', 'marker-c', 'server.mjs'], 'nothing of svc-b (marker-b, its written file)');
    assert.equal(view.service, 'svc-c');
  });

  it('closing the host leaves no container, mount or instance dir, pooled ones included', async () => {
    await until('a template container is ready', async () => (await templateEntries()).length === 1, 60_000, 50);
    await h.close({ stopInstances: true });
    const left = await leftovers(h.dataDir, []);
    assert.deepEqual(left.containers, []);
    assert.deepEqual(left.mounts, []);
    assert.deepEqual(left.instanceDirs, []);
  });
});
