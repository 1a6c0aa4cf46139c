// The dashboard's event stream under hostile readers: a cap on browsers following at once,
// and a reader that stops reading is cut off instead of growing the provider's memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { EventSummary } from '../../src/protocol/index.ts';
import { createEventFeed } from '../../src/dashboard/event-feed.ts';

async function feedServer(options: { maxClients?: number; maxBufferedBytes?: number; eventBytes: number }) {
  let next = 1;
  const big = 'x'.repeat(options.eventBytes);
  const feed = createEventFeed({
    pollMs: 5,
    heartbeatMs: 60_000,
    ...(options.maxClients === undefined ? {} : { maxClients: options.maxClients }),
    ...(options.maxBufferedBytes === undefined ? {} : { maxBufferedBytes: options.maxBufferedBytes }),
    // Every poll finds one new large event, as a busy registry would.
    listEvents: async (f) => (f.afterId === undefined ? [] : [{ id: next++, at: Date.now(), kind: 'deployed', service: big } as unknown as EventSummary]),
    log: { warn: () => undefined },
  });
  const server = createServer((req, res) => void feed.attach(req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    feed,
    port,
    close: async () => {
      feed.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const until = async (check: () => boolean, what: string, ms = 20_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('past the cap a browser gets a 503 naming the field, and a place frees when one leaves', async (t) => {
  const s = await feedServer({ maxClients: 2, eventBytes: 10 });
  t.after(s.close);
  const open = () =>
    new Promise<IncomingMessage>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: s.port, path: '/' }, resolve);
      req.on('error', reject);
      req.end();
    });
  const a = await open();
  const b = await open();
  a.resume();
  b.resume();
  assert.equal(a.statusCode, 200);
  await until(() => s.feed.clients() === 2, 'two followers');
  const c = await open();
  assert.equal(c.statusCode, 503);
  let body = '';
  for await (const chunk of c) body += chunk;
  assert.equal(JSON.parse(body).error.field, 'events');
  a.destroy();
  await until(() => s.feed.clients() === 1, 'the first to leave');
  const d = await open();
  assert.equal(d.statusCode, 200);
  d.destroy();
  b.destroy();
});

test('a reader that stops reading is cut off; memory held for it stays bounded', async (t) => {
  const s = await feedServer({ maxBufferedBytes: 256 * 1024, eventBytes: 128 * 1024 });
  t.after(s.close);
  // A raw socket that sends the request and then never reads a byte.
  const socket = connect(s.port, '127.0.0.1');
  t.after(() => socket.destroy());
  socket.pause();
  socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
  await until(() => s.feed.clients() === 1, 'the reader to attach');
  // Kernel buffers fill first, then the server's queue passes the bound and the reader is dropped.
  await until(() => s.feed.clients() === 0, 'the stalled reader to be cut off');
});
