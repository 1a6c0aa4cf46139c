import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDataServer } from '../../src/host/data-server.ts';

test('the data server listens, advertises its URL, forwards (refusing what carries no token) and counts requests', async () => {
  const resolved: string[] = [];
  const data = await startDataServer({
    keys: [new Uint8Array(32).fill(5)],
    resolveInstance: (id) => void resolved.push(id),
    listen: { host: '127.0.0.1', port: 0 },
  });
  try {
    assert.match(data.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal((await fetch(`${data.url}/i/Echo`, { method: 'POST' })).status, 401);
    assert.equal((await fetch(`${data.url}/i/Echo`, { method: 'POST', headers: { authorization: 'Bearer v1.bad.token' } })).status, 401);
    assert.equal(data.load().requestsTotal, 2);
    assert.deepEqual(resolved, []);
  } finally {
    await data.close();
  }
  await assert.rejects(fetch(`${data.url}/i/Echo`));
});

test('a wildcard listen address advertises the given host', async () => {
  const data = await startDataServer({ keys: [new Uint8Array(32)], resolveInstance: () => undefined, listen: { host: '0.0.0.0', port: 0 }, advertiseHost: 'node-7.internal' });
  try {
    assert.match(data.url, /^http:\/\/node-7\.internal:\d+$/);
  } finally {
    await data.close();
  }
});
