// The SDK in a real container: echo and a service importing it are bundled into small
// overlays on the node template, deployed by a host with runc, and called through the
// host's forwarder; the relay reaches echo through the import socket the host put
// beside it. Needs root and runc (in CI their absence fails the run).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createRegistryClient } from '../../src/image/index.ts';
import { buildServiceImage } from '../../src/image/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import type { DeploymentResult, HostEvent } from '../../src/protocol/deployment.ts';
import { buildEchoImage } from '../../examples/echo/build.ts';
import { runcMissing, startEchoStore, startTestHost, TOKEN, type HostFixture, type StoreFixture } from '../integration/host-fixture.ts';

const missing = await runcMissing();
if (missing && process.env.CI === 'true') throw new Error(`the SDK's container test needs root and runc in CI: ${missing}`);

const RELAY = fileURLToPath(new URL('./fixtures/relay-service.ts', import.meta.url));

describe('shoal/service in a runc container', { skip: missing }, () => {
  let fx: StoreFixture;
  let h: HostFixture;
  let echoRef: string;
  let relayRef: string;
  let echo: DeploymentResult;

  before(async () => {
    fx = await startEchoStore(); // the node template (and the plain echo image, unused here)
    const client = createRegistryClient({ baseUrl: fx.store.url });
    const template = `template://node/${process.versions.node.split('.')[0]}`;
    const e = await buildEchoImage(client, { template, tag: 'echo-sdk:1' });
    const r = await buildServiceImage({ client, entry: RELAY, template: parseImageRef(template), ref: parseImageRef('relay:1'), owner: { uid: 0, gid: 0 } });
    console.log(`echo overlay: ${e.layer.size} bytes compressed (${e.layer.uncompressedSize} unpacked, ${e.bundle.files.length} files) of a ${e.imageSize}-byte image`);
    console.log(`relay overlay: ${r.layer.size} bytes compressed`);
    assert.ok(e.layer.size < 200 * 1024, `echo overlay is ${e.layer.size} bytes`);
    echoRef = e.reference;
    relayRef = r.reference;
    h = await startTestHost(fx);
  });
  after(async () => {
    await h?.close();
    await fx?.close();
  });

  test('the bundled echo starts, answers Echo, and refuses bad input naming the field', async () => {
    const r = await h.deploy({ image: echoRef });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    echo = r.json as DeploymentResult;
    const ok = await h.call(echo.endpoint, 'Echo', { message: 'from a container' });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.json, { message: 'from a container' });
    const bad = await h.call(echo.endpoint, 'Echo', { message: 42 });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'invalid');
    assert.equal(bad.json.error.field, '/message');
    const inspect = await h.call(echo.endpoint, 'Inspect', {});
    assert.equal(inspect.status, 200);
    assert.equal(inspect.json.uid, 65534, 'runs as nobody');
    assert.deepEqual(inspect.json.interfaces, ['lo'], 'no network but loopback');
  });

  test('a service importing echo reaches it through the host import socket, typed', async () => {
    const r = await h.deploy({ image: relayRef, service: { name: 'relay', version: '1' }, imports: [{ name: 'echo', url: echo.endpoint.url, token: echo.endpoint.token }] });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    const relay = r.json as DeploymentResult;
    const reply = await h.call(relay.endpoint, 'Relay', { message: 'hi' });
    assert.equal(reply.status, 200, JSON.stringify(reply.json));
    assert.deepEqual(reply.json, { echoed: 'hi (relayed)', uid: 65534 });
    assert.equal((await h.api(`/v1/instances/${relay.endpoint.instance}`, { method: 'DELETE' })).status, 200);
  });

  test('stopping the instance drains it: SIGTERM, exit 0 well within the grace period', async () => {
    const id = echo.endpoint.instance;
    const ac = new AbortController();
    const res = await fetch(`${h.host.controlUrl}/v1/events?instance=${id}`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: ac.signal });
    const exited = (async () => {
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body!) {
        buf += decoder.decode(chunk as Uint8Array, { stream: true });
        for (const line of buf.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const e = JSON.parse(line.slice(6)) as HostEvent;
          if (e.instance === id && (e.type === 'exited' || e.type === 'crashed')) return e;
        }
      }
      throw new Error('the event stream ended');
    })();
    try {
      const t = performance.now();
      const del = await h.api(`/v1/instances/${id}`, { method: 'DELETE' });
      assert.equal(del.status, 200, del.text);
      assert.ok(performance.now() - t < 1900, `stopping took ${(performance.now() - t).toFixed(0)} ms: SIGTERM was not enough`);
      const e = await exited;
      assert.equal(e.type, 'exited');
      assert.equal(e.code, 0);
      assert.equal(e.signal, undefined);
    } finally {
      ac.abort();
    }
  });
});
