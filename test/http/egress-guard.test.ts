// The egress guard: connections the provider makes on a network caller's behalf reach only
// public addresses, or the private registries the operator names — judged on the address
// dialled, so redirects and DNS answers cannot steer around it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fetch } from 'undici';
import { createEgressDispatcher, isPublicAddress, parseAllowList } from '../../src/http/index.ts';

test('public and non-public addresses', () => {
  const table: Array<[string, boolean]> = [
    ['8.8.8.8', true],
    ['93.184.216.34', true],
    ['2606:4700::1111', true],
    ['127.0.0.1', false],
    ['127.9.9.9', false],
    ['10.1.2.3', false],
    ['172.16.0.1', false],
    ['172.31.255.255', false],
    ['172.32.0.1', true],
    ['192.168.1.1', false],
    ['169.254.169.254', false], // cloud metadata
    ['100.64.0.1', false],
    ['0.0.0.0', false],
    ['224.0.0.1', false],
    ['255.255.255.255', false],
    ['::1', false],
    ['::', false],
    ['fe80::1', false],
    ['fd00::1', false],
    ['::ffff:127.0.0.1', false],
    ['::ffff:8.8.8.8', true],
    ['not an address', false],
  ];
  for (const [address, expected] of table) assert.equal(isPublicAddress(address), expected, address);
  assert.deepEqual(parseAllowList(' 127.0.0.1:5000, Registry.Internal ,,'), ['127.0.0.1:5000', 'registry.internal']);
  assert.deepEqual(parseAllowList(undefined), []);
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { port, hits, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const refusal = (e: unknown): boolean => {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code === 'ESHOALEGRESS' && /not a public address/.test(cause.message ?? '');
};

test('a private address is refused unless allowed; a redirect or a name cannot reach one', async (t) => {
  const inner = await serve((_req, res) => res.end('secret'));
  t.after(inner.close);
  const outer = await serve((_req, res) => {
    res.writeHead(302, { location: `http://127.0.0.1:${inner.port}/admin` });
    res.end();
  });
  t.after(outer.close);

  const none = createEgressDispatcher();
  t.after(() => none.close());
  await assert.rejects(fetch(`http://127.0.0.1:${inner.port}/`, { dispatcher: none }), refusal, 'an IP literal');
  await assert.rejects(fetch(`http://localhost:${inner.port}/`, { dispatcher: none }), refusal, 'a name that resolves to loopback');
  await assert.rejects(fetch(`http://[::1]:${inner.port}/`, { dispatcher: none }), refusal, 'IPv6 loopback');
  assert.deepEqual(inner.hits, [], 'nothing reached the private service');

  // The operator allows the outer registry only: its redirect to another private port is refused.
  const outerOnly = createEgressDispatcher({ allow: [`127.0.0.1:${outer.port}`] });
  t.after(() => outerOnly.close());
  await assert.rejects(fetch(`http://127.0.0.1:${outer.port}/v2/`, { dispatcher: outerOnly }), refusal);
  assert.deepEqual(outer.hits, ['/v2/']);
  assert.deepEqual(inner.hits, [], 'the redirect did not reach it');

  const both = createEgressDispatcher({ allow: [`127.0.0.1:${outer.port}`, '127.0.0.1'] });
  t.after(() => both.close());
  const r = await fetch(`http://127.0.0.1:${outer.port}/v2/`, { dispatcher: both });
  assert.equal(await r.text(), 'secret', 'a bare host allows every port of it');
  assert.deepEqual(inner.hits, ['/admin']);
});
